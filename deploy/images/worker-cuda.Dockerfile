# A Tessera worker on NVIDIA GPUs: vLLM's official image (vLLM, torch, CUDA) with Tessera added.
# Not built here (no registry, no GPU on this machine): hadolint-checked by tests/deploy.
#   DOCKER_BUILDKIT=1 docker build -f deploy/images/worker-cuda.Dockerfile -t tessera-worker-cuda .
# The tag matches the `gpu` extra's vllm==0.32.0.
ARG BASE_IMAGE=vllm/vllm-openai:v0.32.0
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

# Only Tessera's own wheel is built here; its dependencies install into the base's Python below.
FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tessera ./tessera
COPY services ./services
COPY kernels ./kernels
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${BASE_IMAGE}
# The base image already has vLLM: install Tessera into the same interpreter, without an extra.
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python3 -m pip install --no-cache-dir /dist/*.whl \
    && groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --create-home --home-dir /home/tessera tessera
ENV PYTHONUNBUFFERED=1 \
    TESSERA_MODEL_CACHE=/models \
    HF_HOME=/models/hf
USER 10001
WORKDIR /home/tessera
# The base's entrypoint is `vllm serve`; Tessera's worker is the command.
ENTRYPOINT []
CMD ["tessera", "worker", "--help"]
