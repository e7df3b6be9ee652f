# task-bridge. `make demo` and `make test` work on a fresh machine: each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test test-majors lint check chaos demo bench clean docs

$(STAMP): pyproject.toml scripts/ensure-postgres.sh
	./scripts/ensure-postgres.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

# The Postgres-facing tests on the other supported majors (14, 16, 17, 18; PG_MAJORS="16" for
# one), binaries fetched into .cache/postgres/ by scripts/fetch_postgres.py.
PG_MAJORS ?= 14 16 17 18
test-majors: $(STAMP)
	PY=$(BIN)/python ./scripts/test-majors.sh $(PG_MAJORS)

lint: $(STAMP)
	$(BIN)/ruff check task_bridge tests bench
	$(BIN)/ruff format --check task_bridge tests bench
	$(BIN)/mypy
	$(BIN)/lint-imports

# The chaos campaign: SECONDS (default 60) of kill -9s, Postgres restarts, outbox cuts and API
# faults with SEED (default 1), then per-task checks at the fake API; one summary line.
chaos: $(STAMP)
	$(BIN)/python -m tests.chaos

# Exactly what CI runs (.ci/run).
check: lint test test-majors chaos

# The generated reference: docs/configuration.md and schema/*.json, from the config models
# (tests/docs fails while they are stale).
docs: $(STAMP)
	$(BIN)/python -m task_bridge.docgen

demo: $(STAMP)
	$(BIN)/python -m task_bridge.demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

bench: $(STAMP)
	$(BIN)/python -m bench.run
