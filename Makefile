# aios — the two commands are `make run` and `make test`; both set everything up themselves.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.aios-installed
ROOTS := crds:operator:workflows:connectors:runner:edge-agent:cli:stack:console

.PHONY: run test unit crds lint obtained components images prepare down

# Virtual environment with the pinned Python dependencies (hack/constraints.txt). The
# editable install maps each package to its folder, so a new package re-runs it.
PACKAGES := $(shell find crds operator workflows connectors runner edge-agent cli stack console -name __init__.py 2>/dev/null)
$(STAMP): pyproject.toml hack/constraints.txt $(PACKAGES)
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c hack/constraints.txt -e '.[dev]'
	touch $@

# The real components, built from the registries into ~/.cache/aios (once per version). The
# build needs no Python of aios's, so it starts beside the virtual environment's install.
obtained:
	hack/obtain.sh all

components: obtained $(STAMP)
	$(BIN)/python -c 'from aios.stack.components import triton; triton()'
	$(BIN)/python -c 'from aios.stack.models import example_models; example_models()'

# The container images the real node runs (aios, aios-edge, tritonserver, coredns, pause),
# built here with buildah from Debian's packages and the registries (aios.stack.images), once
# per digest of their inputs, into ~/.cache/aios/images; it prints where they are.
images: $(STAMP)
	$(BIN)/python -m aios.stack.images

# Components, images and lint are independent: side by side, one downloads while another
# compiles (hack/obtain.sh builds a component both need once, the other waits for it).
prepare:
	$(MAKE) --jobs=3 --output-sync=target components images lint

# `make run WITH=kserve`: the site with an optional add-on (aiosctl up --with kserve).
run: prepare
	$(BIN)/aiosctl up $(addprefix --with ,$(WITH))

down: $(STAMP)
	$(BIN)/aiosctl down

# Two workers: the tests on the session's site in one, the unit tests and the tests that
# start a site of their own beside it in the other (tests/conftest.py).
test: prepare
	$(BIN)/python -m pytest --numprocesses=2

unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit

crds: $(STAMP)
	$(BIN)/python -m aios.api.generate

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	PYTHONPATH=$(ROOTS) $(BIN)/lint-imports
