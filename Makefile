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

.PHONY: setup setup-run up lint test test-unit test-integration test-deploy test-slow protos check-protos check-buf node-client bench clean-venv model prometheus \
	docker-engine local-base wheels images compose-up compose-down

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
	# docker-compose 1.29 asks for docker>=5 and gets 7.x, whose kwargs_from_env() it calls with an
	# argument 7.0 removed (and requests>=2.32 drops the http+docker scheme docker 6 relies on):
	# the last versions it runs with, pinned.
	$(VENV)/compose/bin/pip install --quiet docker-compose==1.29.2 "docker==6.1.3" "requests==2.31.0" "urllib3<2"

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

# ---------------------------------------------------------------------------------------------
# Images and the compose deployment (deploy/images, deploy/compose). `make compose-up` starts the
# Docker engine when none answers (installing Debian's docker.io if needed), builds the control
# plane and the CPU worker images, prepares SmolLM2 on the host (make model) and brings up etcd,
# scheduler, router and autoscaler; the autoscaler then starts the worker. `make compose-down`
# removes it all, volumes included.
#
# Debian's docker CLI has BuildKit built in (newer static CLIs need the buildx plugin for it).
DOCKER ?= $(shell test -x /usr/bin/docker && echo /usr/bin/docker || echo docker)
# How `make` starts dockerd when none runs: these machines have no overlayfs for it, no bridge
# and no iptables; containers use the host network only.
DOCKERD_FLAGS ?= --storage-driver=vfs --bridge=none --iptables=false --ip6tables=false
# The images' base (a Python 3.11 Debian image): empty for the Dockerfiles' pinned official one.
# Where no registry answers, `make local-base` builds LOCAL_BASE from Debian's packages:
#   make local-base compose-up BASE_IMAGE=tessera-base:bookworm
BASE_IMAGE ?=
LOCAL_BASE := tessera-base:bookworm
WHEELS := build/wheels
# Outside build/wheels: the builds mount that folder, and its content is in their cache key.
WHEELS_STAMP := build/.wheels-downloaded
# Prepared built-in models, mounted into the workers at /models.
TESSERA_MODELS ?= $(or $(TESSERA_MODEL_CACHE),$(HOME)/.cache/tessera/models)
COMPOSE_DIR := deploy/compose
# Which compose drives it: docker-compose 1.29 (the deploy tests' own, or Debian's) or the v2 plugin
# (COMPOSE="docker compose"); both take host networking and depends_on conditions.
COMPOSE ?= $(abspath $(COMPOSE_V1))
COMPOSE_RUN = cd $(COMPOSE_DIR) && COMPOSE_HTTP_TIMEOUT=600 TESSERA_MODELS=$(TESSERA_MODELS) DOCKER_GID=$$(stat -c %g /var/run/docker.sock) $(COMPOSE)

docker-engine:
	@command -v dockerd >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io; }
	@if ! $(DOCKER) info >/dev/null 2>&1; then \
		mkdir -p build; echo "starting dockerd (log: build/dockerd.log)"; \
		nohup dockerd $(DOCKERD_FLAGS) > build/dockerd.log 2>&1 & \
		for i in $$(seq 60); do $(DOCKER) info >/dev/null 2>&1 && break; sleep 1; done; \
		$(DOCKER) info >/dev/null; \
	fi

# A Python 3.11 base from Debian's packages (debootstrap), for machines that reach no image registry.
local-base: docker-engine
	@if ! $(DOCKER) image inspect $(LOCAL_BASE) >/dev/null 2>&1; then \
		command -v debootstrap >/dev/null 2>&1 || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap; }; \
		rm -rf build/rootfs && mkdir -p build; \
		debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates bookworm build/rootfs > build/debootstrap.log; \
		tar -C build/rootfs -c . | $(DOCKER) import - $(LOCAL_BASE); \
		rm -rf build/rootfs; \
	fi

# The images install exactly what .venv has (pins from deploy/images/pins.py), from wheels
# downloaded here once: no dependency resolution in the build, no index needed there.
$(WHEELS_STAMP): pyproject.toml deploy/images/pins.py | $(STAMP)
	mkdir -p $(WHEELS)
	$(PY) deploy/images/pins.py tessera-inference cpu > $(WHEELS)/pins-cpu.txt
	$(PY) deploy/images/pins.py tessera-inference k8s > $(WHEELS)/pins-control-plane.txt
	$(PY) -m pip wheel --quiet --no-deps -w $(WHEELS) -r $(WHEELS)/pins-cpu.txt -r $(WHEELS)/pins-control-plane.txt "setuptools>=68"
	touch $@

wheels: $(WHEELS_STAMP)

# vfs (no overlayfs) keeps a full copy of the file system per build step: about 10 GB of build cache
# for these two images, and each rebuild would leave the previous images behind, dangling, 10 GB more
# per run. So: refuse to start without room (a full disk would fail every other test on the machine
# too), remove an image a rebuild replaced, and drop the build cache on vfs even when a build failed.
IMAGES_MIN_FREE_GB ?= 50
IMAGE_BUILDS := tessera=control-plane tessera-worker-cpu=worker-cpu

images: docker-engine $(WHEELS_STAMP)
	@root=$$($(DOCKER) info -f '{{.DockerRootDir}}'); driver=$$($(DOCKER) info -f '{{.Driver}}'); \
	free=$$(df -BG --output=avail "$$root" | tail -1 | tr -dc 0-9); \
	if [ "$$driver" = vfs ] && [ "$$free" -lt $(IMAGES_MIN_FREE_GB) ]; then \
		echo "images: $$free GB free under $$root; building on vfs needs about $(IMAGES_MIN_FREE_GB) GB (docker image prune frees old images)" >&2; \
		exit 1; \
	fi; \
	status=0; \
	for build in $(IMAGE_BUILDS); do \
		tag=$${build%%=*}; old=$$($(DOCKER) image inspect -f '{{.Id}}' $$tag 2>/dev/null || true); \
		echo "building $$tag from deploy/images/$${build#*=}.Dockerfile"; \
		DOCKER_BUILDKIT=1 $(DOCKER) build --network host $(if $(BASE_IMAGE),--build-arg BASE_IMAGE=$(BASE_IMAGE)) \
			-f deploy/images/$${build#*=}.Dockerfile -t $$tag . || { status=1; break; }; \
		new=$$($(DOCKER) image inspect -f '{{.Id}}' $$tag); \
		if [ -n "$$old" ] && [ "$$old" != "$$new" ]; then $(DOCKER) rmi "$$old" >/dev/null 2>&1 || true; fi; \
	done; \
	if [ "$$driver" = vfs ]; then $(DOCKER) builder prune -af >/dev/null; fi; \
	exit $$status

compose-up: images model $(COMPOSE_V1)
	# The workers (uid 10001) read the prepared models: prepare-model leaves its folders private.
	chmod -R a+rX $(TESSERA_MODELS)
	$(COMPOSE_RUN) up -d
	@echo "router: http://127.0.0.1:8000/v1 (the autoscaler starts the worker; it serves in about a minute)"

compose-down: $(COMPOSE_V1)
	@if $(DOCKER) info >/dev/null 2>&1; then $(COMPOSE_RUN) down --volumes --remove-orphans --timeout 30; fi

bench: setup
	$(PY) benchmarks/router_overhead.py

clean-venv:
	rm -rf $(VENV)
