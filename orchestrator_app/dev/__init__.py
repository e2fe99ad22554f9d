"""Dev tooling: the local server stack, ``make run``'s driver and the NATS simulator.

Nothing in the service (``orchestrator_app`` outside this package, ``agents``, ``tables``)
imports from here, and the runtime image leaves this package out (the wheel excludes it:
``pyproject.toml``; only the image's ``tools`` target adds it, for the simulator): it
installs Debian packages, runs ``useradd`` and starts servers, which a worker never should.
``tests/integration/test_topology.py`` keeps the first true, ``tests/unit/test_deploy_files.py``
the second.
"""
