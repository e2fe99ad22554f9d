"""The HTTP wing of a worker: every endpoint on Faust's web server.

* `routing` — the toolkit: JSON answers, errors, and forwarding a request to the replica
  that owns the payment's partition (503 with ``Retry-After`` while owners are unknown);
* `health` — ``GET /health`` and ``GET /ready``;
* `views` — ``GET /payments/{id}/state``, ``GET /payments`` (the listing), ``GET /metrics``;
* `commands` — ``POST /payments/{id}/refund|review|retry|process`` (the command API);
* `listing` — the listing's parameters, cursors and JSON items (pure).

Importing this package registers nothing: `orchestrator_app.topology` imports the modules
that register views. Imports flow one way — app, config, domain ← tables ← agents, web: this
package never imports `agents`, and `agents` never import it.
"""

from __future__ import annotations

__all__: list[str] = []
