"""The served model names the shared test cluster runs (tests/integration/conftest.py starts it)."""

from __future__ import annotations

TINY = "tiny-llama"
SMOLLM2 = "SmolLM2-135M-Instruct"
TINY_PD = "tiny-pd"
# The shared cluster's workers by model: what tests that count workers expect.
CLUSTER_MODELS = (TINY, TINY, SMOLLM2, TINY_PD, TINY_PD)
