# A Tessera worker on Tenstorrent cards, as far as Tenstorrent's stack allows. What is missing:
# - vLLM for Tenstorrent is a fork (tenstorrent/vllm, dev branch) built against one tt-metal
#   commit; neither is a released wheel, so the base must be an image that already has both
#   (tt-inference-server builds them). Pass it as BASE_IMAGE; the default is tt-metal's published
#   release image, which has tt-metal but not the vLLM fork.
# - The fork follows an older vLLM than the `gpu` extra's 0.32.0; Tessera's worker uses vLLM's
#   AsyncLLM engine API, which the fork may not match. Not built or run here (no card, no registry).
#   DOCKER_BUILDKIT=1 docker build -f deploy/images/worker-tt.Dockerfile --build-arg BASE_IMAGE=<tt vLLM image> -t tessera-worker-tt .
ARG BASE_IMAGE=ghcr.io/tenstorrent/tt-metal/tt-metalium/ubuntu-22.04-amd64:v0.53.0-rc34-dev
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
    && useradd --system --uid 10001 --gid tessera --create-home --home-dir /home/tessera tessera
# The tt-metal backend of the fork (tessera/engine_model/catalog/vendors.yaml: tenstorrent).
ENV PYTHONUNBUFFERED=1 \
    VLLM_TARGET_DEVICE=tt \
    TESSERA_MODEL_CACHE=/models \
    HF_HOME=/models/hf
USER 10001
WORKDIR /home/tessera
ENTRYPOINT []
CMD ["tessera", "worker", "--help"]
