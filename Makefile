# Tessera: one Makefile for setup, running, tests and benchmarks.
# `make up` on a fresh machine sets everything up and starts a local cluster;
# `make test` runs the tests (CI runs it through .ci/run).

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
STAMP := $(VENV)/.tessera-installed
# docker-compose 1.29, the strictest checker of deploy/compose (tests/test_deploy_manifests.py), in a
# venv of its own: it pins PyYAML<6, which the project cannot share, and PyYAML 5.4 builds only with Cython<3.
COMPOSE_V1 := $(VENV)/compose/bin/docker-compose

.PHONY: setup up test test-slow protos check-protos bench clean-venv model

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$(ENGINE_EXTRA),dev]"
	# PyPI's torchvision/torchaudio/torchcodec come along with vLLM but do not
	# match the torch it runs on ("operator torchvision::nms does not exist"),
	# and nothing here needs them.
	$(PY) -m pip uninstall --quiet -y torchvision torchaudio torchcodec || true
	touch $(STAMP)

setup: $(STAMP)

$(COMPOSE_V1):
	$(PYTHON) -m venv $(VENV)/compose
	$(VENV)/compose/bin/pip install --quiet "cython<3" wheel setuptools
	$(VENV)/compose/bin/pip install --quiet --no-build-isolation "PyYAML==5.4.1"
	$(VENV)/compose/bin/pip install --quiet docker-compose==1.29.2

model: setup
	$(BIN)/tessera prepare-model $(MODEL)

up: setup
	$(BIN)/tessera up --model $(MODEL) --workers $(WORKERS) --port $(PORT)

protos: setup
	$(PY) -m tessera.runtime.protogen

check-protos: setup
	$(PY) -m tessera.runtime.protogen --check

test: setup check-protos $(COMPOSE_V1)
	$(BIN)/pytest -q

# Tests that need the machine to themselves: real engines started under a load step (3-4 min).
test-slow: setup
	$(BIN)/pytest -q -m slow

bench: setup
	$(PY) benchmarks/router_overhead.py

clean-venv:
	rm -rf $(VENV)
