# Taskmesh: `make up` runs it locally, `make test` runs every test. Both set up what they need.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: up test test-fast bench schema lint clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit("Python >= 3.11 is required" if sys.version_info < (3, 11) else 0)'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	@touch $@

$(VENV)/.installed-test: pyproject.toml $(VENV)/.installed
	$(BIN)/pip install -q -e '.[test]'
	@touch $@

## up: install into .venv and run nats-server + the four services locally (Ctrl-C stops)
up: $(VENV)/.installed
	$(BIN)/taskmesh up

## test: install test dependencies, fetch the test wheelhouse, run the whole suite
test: $(VENV)/.installed-test
	$(BIN)/python -m tests.wheelhouse
	$(BIN)/python -m pytest -q -p no:cacheprovider

## schema: regenerate proto/schema/*.json (JSON Schema of every message)
schema: $(VENV)/.installed
	$(BIN)/python -m proto.schema

## bench: run the benchmarks (see bench/README.md)
bench: $(VENV)/.installed-test
	$(BIN)/python -m bench

clean:
	rm -rf $(VENV) .taskmesh build *.egg-info
