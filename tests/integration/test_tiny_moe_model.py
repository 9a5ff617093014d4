"""The ``tiny-moe`` recipe: a random two-layer Qwen3-MoE with the tiny model's tokenizer.

It is the smallest model that takes vLLM's fused-MoE and expert-parallel
paths, so its shape matters: 8 experts, top-2, every layer sparse. It shares
the ``tiny`` tokenizer (same chat requests, same token ids) by construction.
"""

from __future__ import annotations

import json
from pathlib import Path

from tessera.runtime.models.prepare import ensure_model
from tessera.runtime.models.registry import resolve


def test_tiny_moe_is_a_sparse_qwen3_moe_sharing_the_tiny_tokenizer():
    spec = resolve("tiny-moe")
    assert spec.name == "tiny-qwen3-moe" and resolve("tiny-qwen3-moe") == spec
    moe, dense = Path(ensure_model(spec)), Path(ensure_model(resolve("tiny")))
    config = json.loads((moe / "config.json").read_text())
    assert config["architectures"] == ["Qwen3MoeForCausalLM"]
    assert config.get("num_experts", config.get("num_local_experts")) == 8
    assert config["num_experts_per_tok"] == 2
    assert config["decoder_sparse_step"] == 1 and config["mlp_only_layers"] == []
    assert config["num_hidden_layers"] == 2 and config["hidden_size"] == 128
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (moe / name).read_bytes() == (dense / name).read_bytes(), name
