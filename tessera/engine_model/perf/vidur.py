"""Map Vidur's measured operators (profiling/compute/<gpu>/<model>/mlp.csv) to ours.

Vidur times each operator of one layer in isolation, by num_tokens and TP
degree. Naming the model operator that corresponds to each Vidur column in one
place lets the calibration script and the tests compare like with like. Input
is one CSV row already parsed into a dict (no I/O here).
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import OpCost, Parallelism, dense_layer_ops, embedding_op, mlp_ops

# Vidur column (time_stats.<op>.median) -> our operator name
VIDUR_OPS: dict[str, str] = {
    "attn_pre_proj": "qkv_proj",
    "attn_post_proj": "o_proj",
    "mlp_up_proj": "mlp_up_gate",
    "mlp_act": "mlp_act",
    "mlp_down_proj": "mlp_down",
    "input_layernorm": "input_norm",
    "post_attention_layernorm": "post_attention_norm",
    "attn_rope": "rope",
    "add": "residual_add",
    "emb": "embedding",
}


def arch_from_vidur_row(row: dict[str, Any], name: str = "vidur") -> ModelArch:
    """The architecture Vidur profiled, from the shape columns every row carries."""
    heads, hidden = int(row["n_head"]), int(row["n_embd"])
    return ModelArch(
        name=name,
        layers=1,
        hidden=hidden,
        heads=heads,
        kv_heads=int(row["n_kv_head"]),
        head_dim=hidden // heads,
        intermediate=int(row["n_expanded_embd"]),
        vocab=int(row["vocab_size"]),
        gated_mlp=str(row["use_gated_mlp"]).lower() == "true",
    )


def vidur_op_costs(row: dict[str, Any], arch: ModelArch) -> dict[str, OpCost]:
    """Vidur op name -> our OpCost (one execution) for the row's num_tokens and TP degree."""
    tokens = int(row["num_tokens"])
    par = Parallelism(tp=int(row["num_tensor_parallel_workers"]))
    ours = {op.name: replace(op, count=1) for op in dense_layer_ops(arch, tokens, par) + mlp_ops(arch, tokens, par)}
    ours["embedding"] = embedding_op(arch, tokens)
    return {vidur: ours[mine] for vidur, mine in VIDUR_OPS.items()}


def measured_seconds(row: dict[str, Any], vidur_op: str) -> float:
    """The median measured time of `vidur_op` in seconds (Vidur stores ms)."""
    return float(row[f"time_stats.{vidur_op}.median"]) * 1e-3
