# ingestd — two commands matter: `make demo` and `make test` (see README.md).
SHELL := /bin/bash
VENV  := .venv
PY    := $(VENV)/bin/python

.PHONY: setup demo test lint unit bench clean

setup:                 ## Debian packages, TimescaleDB (built once, cached), .venv — idempotent
	@bash scripts/setup.sh

demo: setup            ## local PostgreSQL+TimescaleDB, Mosquitto, simulated well field, daemon, API
	@$(VENV)/bin/ingestd demo

test: setup            ## quality gates + the whole test suite (what CI runs)
	@bash scripts/test.sh

lint: setup
	@bash scripts/test.sh --lint-only

unit: setup
	@$(PY) -m pytest tests/unit -q

bench: setup           ## all benchmarks in quick mode; each prints one JSON line
	@for b in bench/*.py; do echo "== $$b"; $(PY) $$b --quick | tail -1; done

clean:
	rm -rf $(VENV) .demo .pytest_cache .mypy_cache .ruff_cache
