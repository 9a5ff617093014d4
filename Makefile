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
# The TypeScript client (clients/node) and the Node tools the contract checks use (buf, from npm),
# installed from its package-lock.json.
NODE_CLIENT := clients/node
NODE_STAMP := $(NODE_CLIENT)/node_modules/.tessera-installed
BUF := $(NODE_CLIENT)/node_modules/.bin/buf
# What `buf breaking` compares protos/ with: the latest release tag (v*) once there is one, else the
# commit that first published the contract with buf.yaml and its language options (the first to add
# protos/buf.yaml). Found by path, not by hash, so it survives a rebase or squash on merge.
BUF_BASELINE ?= $(or $(shell git describe --tags --abbrev=0 --match 'v*' 2>/dev/null),$(shell git log --diff-filter=A --format=%H -- protos/buf.yaml 2>/dev/null | tail -n 1))
# Two stamps: RUN_STAMP when the control plane and the engine extra are installed (make up),
# STAMP when the dev extra is too (make setup, and every target that tests, lints or benchmarks).
# A dev install touches both, so `make up` after `make test` installs nothing more.
RUN_STAMP := $(VENV)/.tessera-run-installed
STAMP := $(VENV)/.tessera-installed
# docker-compose 1.29, the strictest checker of deploy/compose (tests/deploy/), in a venv of its own,
# built only for the deploy tests: it pins PyYAML<6, which the project cannot share, and PyYAML 5.4
# builds only with Cython<3.
COMPOSE_V1 := $(VENV)/compose/bin/docker-compose

.PHONY: setup setup-run up lint test test-unit test-integration test-deploy test-slow protos check-protos check-buf node-client bench clean-venv model prometheus

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

$(NODE_STAMP): $(NODE_CLIENT)/package.json $(NODE_CLIENT)/package-lock.json
	cd $(NODE_CLIENT) && npm ci --no-audit --no-fund --loglevel=error
	touch $@

# The TypeScript client and its tests, compiled to clients/node/dist (what the Node tests run).
node-client: $(NODE_STAMP)
	cd $(NODE_CLIENT) && npm run --silent build

# Every checked-in stub: Python (tessera/v1) and TypeScript (clients/node/src/gen).
protos: setup $(NODE_STAMP)
	$(PY) -m tessera.runtime.protogen
	cd $(NODE_CLIENT) && rm -rf src/gen && npm run --silent generate

check-protos: setup $(NODE_STAMP)
	$(PY) -m tessera.runtime.protogen --check
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		(cd $(NODE_CLIENT) && npm run --silent generate -- -o "$$tmp") && \
		diff -r "$$tmp/src/gen" $(NODE_CLIENT)/src/gen >/dev/null || \
		{ echo "stale TypeScript stubs in $(NODE_CLIENT)/src/gen; run make protos" >&2; exit 1; }
	@echo "TypeScript stubs are up to date"

# The contract: buf lint (protos/buf.yaml), then no breaking change since BUF_BASELINE.
check-buf: $(NODE_STAMP)
	$(BUF) lint protos
	@test -n "$(BUF_BASELINE)" || { echo "no baseline for buf breaking (no v* tag, no commit adding protos/buf.yaml)" >&2; exit 1; }
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
		git archive $(BUF_BASELINE) protos | tar -x -C "$$tmp" && \
		echo "buf breaking protos --against $(BUF_BASELINE)" && \
		$(BUF) breaking protos --against "$$tmp/protos"

# Lint and types: ruff (lint and format), mypy (strict on the pure layers), and the layer contract
# (import-linter, [tool.importlinter] in pyproject.toml). `ruff format .` fixes what the check finds.
lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports
	$(BIN)/mypy

# Everything (what CI runs): lint, fresh stubs, the contract, then every test but the slow ones
# (the Node client's among them: node-client builds it).
test: setup lint check-protos check-buf node-client $(COMPOSE_V1) prometheus
	$(BIN)/pytest -q

# Pure code and in-process servers only: no processes, seconds.
test-unit: setup
	$(BIN)/pytest -q tests/unit

# Real etcd, services as processes, vLLM and sim workers (most of the suite's time).
test-integration: setup prometheus node-client
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
