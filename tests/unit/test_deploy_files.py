"""The deployment files, checked without a Docker engine (README "Deploying").

* ``docker/compose.yaml`` through ``docker-compose config`` (Debian's ``docker-compose``
  package parses and interpolates compose files with no engine; ``.ci/run`` installs it, and
  without it these tests fail rather than skip): it parses with ``docker/.env.example``,
  refuses to start without the secrets, names the services the README lists, pins every
  image, gives the workers no fixed host port, starts them after the migration job, hands
  them settings the service's own parser accepts;
* ``docker/prometheus/prometheus.yml`` finds every worker by DNS;
* ``docker/Dockerfile`` as text: stages, non-root user, health check (compiled, and run
  against a local HTTP server), entrypoint;
* ``.dockerignore``, and what the runtime image gets: a wheel built from the build context
  as Docker sees it holds the service and no dev tooling or tests.
"""

from __future__ import annotations

import fnmatch
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import tomllib
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from orchestrator_app.config import ALL_SERVICES, load_settings
from orchestrator_app.dev.procs import free_port
from orchestrator_app.dev.stack import KAFKA_VERSION

ROOT = Path(__file__).resolve().parents[2]
DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"
ENV_EXAMPLE = DOCKER / ".env.example"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
DOCKERIGNORE = ROOT / ".dockerignore"
README = ROOT / "README.md"

WORKER = "orchestrator"
MIGRATE = "migrate"
#: The settings every installation must choose (docker/.env.example).
SECRETS = {"API_TOKEN", "POSTGRES_PASSWORD", "GRAFANA_ADMIN_PASSWORD"}
#: The variables of those settings, removed from the environment of docker-compose.
COMPOSE_VARIABLES = (*SECRETS, "API_READ_TOKEN", "GRAFANA_ADMIN_USER")


# ---------------------------------------------------------------------------------------
# docker-compose config


def docker_compose() -> str:
    found = shutil.which("docker-compose")
    if found is None:
        pytest.fail("`docker-compose` not found: apt-get install docker-compose (Debian's "
                    "package parses compose files without a Docker engine; .ci/run "
                    "installs it)", pytrace=False)
    return found


def run_compose_config(env_file: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in COMPOSE_VARIABLES}
    return subprocess.run(
        [docker_compose(), "-f", str(COMPOSE), "--env-file", str(env_file), "config"],
        capture_output=True, text=True, timeout=60, env=env, cwd=ROOT)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    result = run_compose_config(ENV_EXAMPLE)
    assert result.returncode == 0, result.stderr
    config: dict[str, Any] = yaml.safe_load(result.stdout)
    return config


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found: dict[str, dict[str, Any]] = compose["services"]
    return found


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):  # KEY=value items
        env = dict(item.split("=", 1) for item in env)
    return {key: "" if value is None else str(value) for key, value in env.items()}


def example_env() -> dict[str, str]:
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def test_compose_parses_with_the_example_env(compose: dict[str, Any]) -> None:
    assert compose["services"]


def test_compose_refuses_to_run_without_the_secrets(tmp_path: Path) -> None:
    empty = tmp_path / "empty.env"
    empty.write_text("")
    result = run_compose_config(empty)
    assert result.returncode != 0
    assert "docker/.env" in result.stderr
    assert any(name in result.stderr for name in SECRETS), result.stderr


def test_env_example_holds_every_setting_compose_asks_for() -> None:
    text = COMPOSE.read_text()
    used = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", text))
    required = set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*):\?", text))
    assert required == SECRETS
    assert used == set(example_env())
    for name in SECRETS:
        assert "change-me" in example_env()[name], name


def readme_section(title: str) -> str:
    text = README.read_text()
    match = re.search(rf"^## {re.escape(title)}\n(.*?)(?=^## )", text, re.S | re.M)
    assert match, f"README has no '## {title}' section"
    return match.group(1)


def test_every_service_the_readme_names_exists(services: dict[str, dict[str, Any]]) -> None:
    section = readme_section("Deploying")
    named = set(re.findall(r"^\| `([a-z-]+)` \|", section, re.M))
    assert named == set(services), "README's Deploying table vs docker/compose.yaml"


def test_every_image_is_pinned(services: dict[str, dict[str, Any]]) -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    for name, service in services.items():
        image = service.get("image")
        assert image, f"{name}: no image name"
        repository, _, tag = image.rpartition(":")
        assert repository and "/" not in tag, f"{name}: {image} has no tag"
        assert tag != "latest" and re.match(r"v?\d+(\.\d+)+", tag), f"{name}: {image}"
        if "build" in service:  # our own images carry the project's version
            assert tag == version, f"{name}: {image}, project version {version}"


def test_kafka_is_the_version_the_tests_run(services: dict[str, dict[str, Any]]) -> None:
    assert services["kafka"]["image"] == f"apache/kafka:{KAFKA_VERSION}"
    env = env_of(services["kafka"])
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"  # KRaft combined mode
    assert env["KAFKA_ADVERTISED_LISTENERS"] == f"PLAINTEXT://{env_of(services[WORKER])['KAFKA_BROKERS']}"


def published_port(entry: str | dict[str, Any]) -> str:
    """The host port of a compose port entry ('' when Docker picks one)."""
    if isinstance(entry, dict):
        return str(entry.get("published") or "")
    parts = entry.split("/")[0].split(":")
    return parts[-2] if len(parts) >= 2 else ""


def test_workers_scale_no_fixed_host_port(services: dict[str, dict[str, Any]]) -> None:
    worker = services[WORKER]
    for entry in worker.get("ports", []):
        assert published_port(entry) == "", f"fixed host port {entry}: --scale would collide"
    assert "container_name" not in worker and "hostname" not in worker
    assert worker["deploy"]["replicas"] >= 2
    assert worker["build"]["target"] == "runtime"


def test_workers_start_after_the_migration_job(services: dict[str, dict[str, Any]]) -> None:
    worker, migrate = services[WORKER], services[MIGRATE]
    assert worker["depends_on"][MIGRATE]["condition"] == "service_completed_successfully"
    assert migrate["command"] == ["migrate"]
    assert migrate["image"] == worker["image"]
    assert migrate["depends_on"]["postgres"]["condition"] == "service_healthy"
    for server in ("kafka", "postgres", "redis", "nats"):
        assert worker["depends_on"][server]["condition"] == "service_healthy", server
        assert services[server].get("healthcheck"), server


def test_compose_settings_pass_the_services_own_validation(
    services: dict[str, dict[str, Any]],
) -> None:
    worker = env_of(services[WORKER])
    settings = load_settings(environ=worker, required=ALL_SERVICES)
    assert settings.api_tokens and settings.jaeger_endpoint
    # Single broker: one replica, said explicitly (a 3-broker cluster wants 3 and 2).
    assert worker["TOPIC_REPLICATION_FACTOR"] == "1"
    assert worker["TOPIC_MIN_INSYNC_REPLICAS"] == "1"
    load_settings(environ=env_of(services[MIGRATE]), required=("DATABASE_URL",))
    load_settings(environ=env_of(services["simulator"]), required=("NATS_URL",))
    assert services["simulator"]["build"]["target"] == "tools"


def test_workers_advertise_their_own_address(services: dict[str, dict[str, Any]]) -> None:
    """Faust's table routing forwards to WEB_HOST:PORT of the owner: in compose that is each
    replica's own IP (set by the entrypoint), then the image's entrypoint is exec'ed."""
    worker = services[WORKER]
    entrypoint = worker["entrypoint"]
    assert entrypoint[:2] == ["sh", "-c"]
    script = entrypoint[2].replace("$$", "$")
    assert re.search(r'export WEB_HOST="\$\(python -c .*gethostbyname', script), script
    assert script.rstrip().endswith('exec payment-orchestrator "$@"'), script
    assert worker["command"] == ["worker", "-l", "info"]
    assert "WEB_HOST" not in env_of(worker)


def test_prometheus_finds_every_worker_by_dns(services: dict[str, dict[str, Any]]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    (job,) = config["scrape_configs"]
    assert "static_configs" not in job
    (sd,) = job["dns_sd_configs"]
    assert sd["names"] == [WORKER] and sd["type"] == "A"
    assert str(sd["port"]) == env_of(services[WORKER])["PORT"] == "8082"
    assert {"target_label": "service", "replacement": "orchestrator"} in job["relabel_configs"]
    mounts = [bind_mount(v) for v in services["prometheus"]["volumes"]]
    assert (str(DOCKER / "prometheus"), "/etc/prometheus") in mounts, mounts


def bind_mount(volume: str | dict[str, Any]) -> tuple[str, str]:
    """(source, target) of a volume entry: `config` of compose v1 writes them short, v2 long."""
    if isinstance(volume, dict):
        return str(volume.get("source")), str(volume.get("target"))
    source, target = volume.split(":")[:2]
    return source, target


def test_grafana_shows_the_prometheus_alerts(services: dict[str, dict[str, Any]]) -> None:
    source = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yml").read_text())
    (prometheus,) = source["datasources"]
    assert prometheus["jsonData"]["manageAlerts"] is True
    assert prometheus["url"] == "http://prometheus:9090"
    assert env_of(services["grafana"])["GF_SECURITY_ADMIN_PASSWORD"]


# ---------------------------------------------------------------------------------------
# Dockerfile


def dockerfile_stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions (keyword, arguments), continuation lines joined."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    stages: dict[str, list[tuple[str, str]]] = {}
    current: list[tuple[str, str]] | None = None
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?", args.strip(), re.I)
            assert match, line
            name = match.group(2) or f"stage{len(stages)}"
            current = stages[name] = [("FROM", match.group(1))]
        elif current is not None:
            current.append((keyword, args.strip()))
    return stages


def last(stage: list[tuple[str, str]], keyword: str) -> str:
    found = [args for kw, args in stage if kw == keyword]
    assert found, f"no {keyword}"
    return found[-1]


def healthcheck_argv() -> list[str]:
    args = last(dockerfile_stages()["runtime"], "HEALTHCHECK")
    _, _, command = args.partition("CMD ")
    argv: list[str] = json.loads(command)
    return argv


def test_dockerfile_stages_and_pinned_base() -> None:
    stages = dockerfile_stages()
    assert len(stages) >= 2
    assert {"build", "runtime", "tools"} <= set(stages)
    assert stages["tools"][0] == ("FROM", "runtime")
    # The last stage is what a build without --target makes: the runtime image, unchanged.
    assert list(stages.values())[-1] == [("FROM", "runtime")]
    defaults = dict(re.findall(r"^ARG (\w+)=(\S+)", DOCKERFILE.read_text(), re.M))
    for name, stage in stages.items():
        base = re.sub(r"\$\{(\w+)\}", lambda m: defaults[m.group(1)], stage[0][1])
        if base in stages:
            continue
        assert re.fullmatch(r"python:3\.11\.\d+-slim-bookworm", base), f"{name}: {base}"
    # The tools stage copies dev/ into the virtualenv of that Python (3.11).
    copy = last(stages["tools"], "COPY").split()
    assert copy == ["orchestrator_app/dev",
                    "/opt/venv/lib/python3.11/site-packages/orchestrator_app/dev"], copy


def test_runtime_stage_user_entrypoint_and_data_dir() -> None:
    runtime = dockerfile_stages()["runtime"]
    user = last(runtime, "USER").split(":")[0]
    assert user not in {"root", "0"} and user.isdigit(), f"USER {user}: a fixed non-root uid"
    assert json.loads(last(runtime, "ENTRYPOINT")) == ["payment-orchestrator"]
    assert json.loads(last(runtime, "CMD")) == ["worker", "-l", "info"]
    data_dir = re.search(r"DATA_DIR=(\S+)", last(runtime, "ENV"))
    assert data_dir, "DATA_DIR is not set"
    assert json.loads(last(runtime, "VOLUME")) == [data_dir.group(1)]
    assert any(kw == "RUN" and f"chown {user}:" in args and data_dir.group(1) in args
               for kw, args in runtime), "the data directory is not the worker's"
    # Runtime dependencies only: the wheel, installed without extras.
    build = " ".join(args for kw, args in dockerfile_stages()["build"] if kw == "RUN")
    assert "pip install /wheels/payment_orchestrator-" in build and "[" not in build
    assert "MIGRATIONS_DIR" in build and "discover()" in build


def test_healthcheck_is_python_that_hits_health() -> None:
    argv = healthcheck_argv()
    assert argv[:2] == ["python", "-c"]
    compile(argv[2], "<HEALTHCHECK>", "exec")
    assert "/health" in argv[2] and "urllib" in argv[2]


class _Health(http.server.BaseHTTPRequestHandler):
    status = 200
    paths: list[str] = []  # noqa: RUF012 - the test's record of requests

    def do_GET(self) -> None:
        _Health.paths.append(self.path)
        self.send_response(_Health.status)
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def health_server() -> Iterator[int]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Health)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_healthcheck_passes_on_200_and_fails_on_503_or_nothing(health_server: int) -> None:
    code = healthcheck_argv()[2]

    def check(port: int) -> int:
        return subprocess.run([sys.executable, "-c", code], env={"PORT": str(port)},
                              capture_output=True, timeout=30).returncode

    _Health.status, _Health.paths = 200, []
    assert check(health_server) == 0
    assert _Health.paths == ["/health"]
    _Health.status = 503
    assert check(health_server) != 0
    assert check(free_port()) != 0  # nothing listening


# ---------------------------------------------------------------------------------------
# .dockerignore and the runtime image's contents


def ignore_patterns() -> list[str]:
    patterns = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert not any(p.startswith("!") for p in patterns), "exceptions are not emulated here"
    return patterns


def ignored(relpath: str, patterns: list[str]) -> bool:
    """Docker's rule, simply: a pattern matches the path or one of its parent directories
    (``**/`` at any depth)."""
    parts = relpath.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        for prefix in prefixes:
            if fnmatch.fnmatchcase(prefix, pattern):
                return True
            if pattern.startswith("**/") and fnmatch.fnmatchcase(
                    prefix.rsplit("/", 1)[-1], pattern[3:]):
                return True
    return False


@pytest.mark.parametrize(("path", "excluded"), [
    (".git/HEAD", True), (".venv/bin/python", True), (".stack/run-1/worker.log", True),
    ("tests/unit/test_config.py", True), ("benchmarks/bench.py", True),
    ("orchestrator_app/__pycache__/app.cpython-311.pyc", True),
    (".pytest_cache/v/cache/nodeids", True), (".mypy_cache/3.11/x.json", True),
    (".ruff_cache/content", True), (".hypothesis/examples/x", True),
    ("payment_orchestrator.egg-info/SOURCES.txt", True), ("build/lib/x.py", True),
    ("dist/x.whl", True), ("data/v1/tables/x", True), ("docker/.env", True), (".env", True),
    ("pyproject.toml", False), ("setup.cfg", False), ("README.md", False),
    ("orchestrator_app/app.py", False), ("orchestrator_app/web/dashboard.html", False),
    ("agents/saga.py", False), ("tables/payments.py", False),
    ("migrations/001_payment_orchestrator_schema.sql", False),
    # The tools target copies it; the runtime's wheel leaves it out (see below).
    ("orchestrator_app/dev/simulator.py", False),
])
def test_dockerignore(path: str, excluded: bool) -> None:
    assert ignored(path, ignore_patterns()) is excluded


def build_context(dest: Path) -> None:
    """Copy the working tree as `docker build` with the repository root as context sees it."""
    patterns = ignore_patterns()
    for directory, dirnames, filenames in os.walk(ROOT):
        rel = Path(directory).relative_to(ROOT).as_posix()
        rel = "" if rel == "." else rel + "/"
        dirnames[:] = [d for d in dirnames if not ignored(rel + d, patterns)]
        for filename in filenames:
            if not ignored(rel + filename, patterns):
                target = dest / (rel + filename)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(Path(directory) / filename, target)


@pytest.fixture(scope="module")
def runtime_wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    context = tmp_path_factory.mktemp("context")
    build_context(context)
    # Every COPY of the Dockerfile (other than from a stage) finds its source in the context.
    for stage in dockerfile_stages().values():
        for keyword, args in stage:
            if keyword == "COPY" and "--from=" not in args:
                sources = [a for a in args.split() if not a.startswith("--")][:-1]
                for source in sources:
                    assert (context / source).exists(), f"COPY {source}: not in the context"
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", str(out), "."],
        cwd=context, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    (wheel,) = out.glob("payment_orchestrator-*.whl")
    return wheel


def test_runtime_wheel_holds_the_service_and_no_dev_tooling(runtime_wheel: Path) -> None:
    names = zipfile.ZipFile(runtime_wheel).namelist()
    for required in ("orchestrator_app/app.py", "orchestrator_app/cli.py",
                     "orchestrator_app/schema.py", "orchestrator_app/web/dashboard.html",
                     "agents/saga.py", "tables/payments.py"):
        assert required in names, required
    assert any(n.startswith("agents/") for n in names)
    assert any(n.startswith("tables/") for n in names)
    assert not [n for n in names if n.startswith("orchestrator_app/dev/")]
    assert not [n for n in names if n.startswith(("tests/", "benchmarks/", "migrations/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert "payment-orchestrator = orchestrator_app.cli:main" in \
        zipfile.ZipFile(runtime_wheel).read(entry_points).decode()


def test_installed_wheel_finds_migrations_where_the_image_puts_them(
    runtime_wheel: Path, tmp_path: Path,
) -> None:
    """The build stage copies migrations/ to the MIGRATIONS_DIR of the installed package:
    site-packages/migrations. Do the same with the wheel unpacked (a pure wheel installs by
    unzipping) and check that the migration runner finds every file there."""
    site = tmp_path / "site-packages"
    zipfile.ZipFile(runtime_wheel).extractall(site)
    code = ("import shutil, sys; from orchestrator_app.schema import MIGRATIONS_DIR, discover;"
            "shutil.copytree(sys.argv[1], MIGRATIONS_DIR);"
            "print(MIGRATIONS_DIR); print(len(discover()))")
    result = subprocess.run(
        [sys.executable, "-c", code, str(ROOT / "migrations")], cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(site)}, capture_output=True, text=True,
        timeout=60)
    assert result.returncode == 0, result.stderr
    directory, count = result.stdout.split()
    assert Path(directory) == site / "migrations"
    assert int(count) == len(list((ROOT / "migrations").glob("*.sql"))) > 0
