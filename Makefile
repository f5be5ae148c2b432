# Taskmesh: `make up` runs it locally, `make test` runs every test. Both set up what they need,
# installing exactly what uv.lock says (`make lock` updates it after a change to pyproject.toml).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
UV     := $(BIN)/uv
# The uv that installs the lock is the one the lock names (bootstrapped with pip into the venv).
UV_VERSION := $(shell sed -n '/^name = "uv"$$/{n;s/^version = "\(.*\)"/\1/p;}' uv.lock)
# uv trusts the system's CA store (a TLS-intercepting proxy's CA may live only there).
export UV_NATIVE_TLS ?= 1
export UV_PROJECT_ENVIRONMENT := $(VENV)
SYNC := $(UV) sync --locked --extra cli
EXPORT := $(UV) export --frozen --no-dev --no-emit-project --no-header -q
SHELL := bash

.PHONY: up test test-fast fuzz lint format lock bench schema clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)

$(UV): | $(BIN)/python
	$(BIN)/python -m pip install -q --disable-pip-version-check "uv==$(UV_VERSION)"

$(VENV)/.installed: pyproject.toml uv.lock | $(UV)
	$(SYNC) --no-dev --inexact -q
	@touch $@

$(VENV)/.installed-dev: pyproject.toml uv.lock | $(UV)
	$(SYNC) --all-groups -q
	@touch $@

## up: install the lock into .venv and run nats-server + the four services locally (Ctrl-C stops)
up: $(VENV)/.installed
	$(BIN)/taskmesh up

## test: install the lock with test tools, fetch the test wheelhouse, run the whole suite (and name the 25 slowest tests)
test: $(VENV)/.installed-dev
	$(BIN)/python -m tests.wheelhouse
	$(BIN)/python -m pytest -q -p no:cacheprovider --durations=25

## test-fast: the unit tests (no Docker, compose or browser, nothing slow), under a minute
test-fast: $(VENV)/.installed-dev
	$(BIN)/python -m pytest -q -p no:cacheprovider -m 'not docker and not compose and not browser and not slow'

## fuzz: the end-to-end fuzz test at length (CI runs 300 specs; FUZZ_EXAMPLES=N to change)
FUZZ_EXAMPLES ?= 5000
fuzz: $(VENV)/.installed-dev
	TASKMESH_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) $(BIN)/python -m pytest -q -p no:cacheprovider -s tests/e2e/test_fuzz.py

## lint: ruff (lint + format check), mypy, and the lock agrees with pyproject.toml
lint: $(VENV)/.installed-dev
	$(UV) lock --check -q
	@$(EXPORT) | diff -q - <(grep -v '^#' deploy/requirements.lock) >/dev/null \
	  || { echo "deploy/requirements.lock is not an export of uv.lock: run make lock"; exit 1; }
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## format: apply ruff's formatting and safe fixes
format: $(VENV)/.installed-dev
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## lock: re-resolve uv.lock after a change to pyproject.toml, and export the service image's lock
lock: | $(UV)
	$(UV) lock
	{ echo "# The service image's packages: uv.lock without extras and groups (make lock writes it)."; \
	  $(EXPORT); } > deploy/requirements.lock

## schema: regenerate proto/schema/*.json (JSON Schema of every message)
schema: $(VENV)/.installed-dev
	$(BIN)/python -m proto.schema

## bench: run the benchmarks (see bench/README.md)
bench: $(VENV)/.installed-dev
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .taskmesh build *.egg-info
