# task-bridge. `make demo` and `make test` work on a fresh machine: each installs what it needs.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: install test lint check demo bench clean

$(STAMP): pyproject.toml scripts/ensure-postgres.sh
	./scripts/ensure-postgres.sh
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check task_bridge tests bench
	$(BIN)/ruff format --check task_bridge tests bench
	$(BIN)/mypy

# Exactly what CI runs (.ci/run).
check: lint test

demo: $(STAMP)
	$(BIN)/python -m task_bridge.demo

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache

bench: $(STAMP)
	$(BIN)/python -m bench.run
