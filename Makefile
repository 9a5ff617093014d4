# Tessera: one Makefile for setup, running, tests and benchmarks.
# `make up` on a fresh machine installs what running needs (the control plane and the engine
# extra) and starts a local cluster; `make test` adds the test and lint tools (the dev extra) and
# runs the tests (CI runs it through .ci/run).

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# The worker engine: upstream vLLM where an NVIDIA or AMD GPU is visible,
# the CPU build of vLLM otherwise.
ENGINE_EXTRA ?= $(shell if command -v nvidia-smi >/dev/null 2>&1 || command -v rocm-smi >/dev/null 2>&1; then echo gpu; else echo cpu; fi)
MODEL ?= smollm2
WORKERS ?= 2
PORT ?= 8000
PROTO_SRC := $(wildcard protos/tessera/v1/*.proto)
# Two stamps: RUN_STAMP when the control plane and the engine extra are installed (make up),
# STAMP when the dev extra is too (make setup, and every target that tests, lints or benchmarks).
# A dev install touches both, so `make up` after `make test` installs nothing more.
RUN_STAMP := $(VENV)/.tessera-run-installed
STAMP := $(VENV)/.tessera-installed
# docker-compose 1.29, the strictest checker of deploy/compose (tests/deploy/), in a venv of its own,
# built only for the deploy tests: it pins PyYAML<6, which the project cannot share, and PyYAML 5.4
# builds only with Cython<3.
COMPOSE_V1 := $(VENV)/compose/bin/docker-compose

.PHONY: setup setup-run up lint test test-unit test-integration test-deploy test-slow protos check-protos bench clean-venv model prometheus

comma := ,
# install(EXTRAS): the editable install with those extras (comma-separated).
# PyPI's torchvision/torchaudio/torchcodec come along with vLLM but do not
# match the torch it runs on ("operator torchvision::nms does not exist"),
# and nothing here needs them.
define install
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# The distribution was called "tessera" before (an unrelated project's name on PyPI); its
	# editable install would claim the same files as tessera-inference's.
	$(PY) -m pip uninstall --quiet -y tessera 2>/dev/null || true
	$(PY) -m pip install --quiet -e ".[$(1)]"
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
endef

$(RUN_STAMP): pyproject.toml
	$(call install,$(ENGINE_EXTRA))
	touch $(RUN_STAMP)

$(STAMP): pyproject.toml
	$(call install,$(ENGINE_EXTRA)$(comma)dev)
	touch $(RUN_STAMP) $(STAMP)

# Everything: running, tests, lint, benchmarks (what it always was).
setup: $(STAMP)

# Only what running needs: the control plane and the engine extra.
setup-run: $(RUN_STAMP)

$(COMPOSE_V1):
	$(PYTHON) -m venv $(VENV)/compose
	$(VENV)/compose/bin/pip install --quiet "cython<3" wheel setuptools
	$(VENV)/compose/bin/pip install --quiet --no-build-isolation "PyYAML==5.4.1"
	$(VENV)/compose/bin/pip install --quiet docker-compose==1.29.2

# Prometheus and promtool, Debian's package, for the observability tests (deploy/observability/): installed
# when absent, without recommends (no node exporter); the tests run their own Prometheus, so the
# package's system service is stopped again.
prometheus:
	@if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus && \
		{ systemctl disable --now prometheus >/dev/null 2>&1 || true; }; \
	fi

model: setup-run
	$(BIN)/tessera prepare-model $(MODEL)

up: setup-run
	$(BIN)/tessera up --model $(MODEL) --workers $(WORKERS) --port $(PORT)

protos: setup
	$(PY) -m tessera.runtime.protogen

check-protos: setup
	$(PY) -m tessera.runtime.protogen --check

# Lint and types: ruff (lint and format), mypy (strict on the pure layers), and the layer contract
# (import-linter, [tool.importlinter] in pyproject.toml). `ruff format .` fixes what the check finds.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# Everything (what CI runs): lint, fresh stubs, then every test but the slow ones.
test: setup lint check-protos $(COMPOSE_V1) prometheus
	$(BIN)/pytest -q

# Pure code and in-process servers only: no processes, seconds.
test-unit: setup
	$(BIN)/pytest -q tests/unit

# Real etcd, services as processes, vLLM and sim workers (most of the suite's time).
test-integration: setup prometheus
	$(BIN)/pytest -q tests/integration

# The deployment files, checked by docker-compose 1.29 and kubectl/kubernetes-validate.
test-deploy: setup $(COMPOSE_V1) prometheus
	$(BIN)/pytest -q tests/deploy

# Tests that need the machine to themselves: real engines started under a load step (3-4 min).
test-slow: setup
	$(BIN)/pytest -q -m slow

bench: setup
	$(PY) benchmarks/router_overhead.py

clean-venv:
	rm -rf $(VENV)
