# A Tessera worker on AMD Instinct GPUs: AMD's vLLM image (ROCm, torch, vLLM) with Tessera added.
# Not built here (no registry, no GPU on this machine): hadolint-checked by tests/deploy.
#   DOCKER_BUILDKIT=1 docker build -f deploy/images/worker-rocm.Dockerfile -t tessera-worker-rocm .
# AMD publishes dated tags only; pick the one whose vLLM matches the `gpu` extra where there is one.
ARG BASE_IMAGE=rocm/vllm:rocm7.0.0_vllm_0.11.2_20251210
ARG PYTHON_IMAGE=python:3.11.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY tessera ./tessera
COPY services ./services
COPY kernels ./kernels
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /dist .

FROM ${BASE_IMAGE}
RUN --mount=type=bind,from=build,source=/dist,target=/dist \
    python3 -m pip install --no-cache-dir /dist/*.whl \
    && groupadd --system --gid 10001 tessera \
    && useradd --system --uid 10001 --gid tessera --groups video --create-home --home-dir /home/tessera tessera
ENV PYTHONUNBUFFERED=1 \
    TESSERA_MODEL_CACHE=/models \
    HF_HOME=/models/hf
USER 10001
WORKDIR /home/tessera
ENTRYPOINT []
CMD ["tessera", "worker", "--help"]
