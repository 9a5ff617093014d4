"""How many tokens of KV cache an instance can hold.

The planner sizes instances and the scheduler admits requests against this
number; it is what is left of device memory after the weights and a reserve
for activations, workspace and the CUDA/HIP context, divided by KV bytes per token.
"""

from __future__ import annotations

import math

from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import Parallelism, local_heads


def weight_bytes_per_device(arch: ModelArch, par: Parallelism) -> float:
    """Weights on one device: routed experts split over the `ep` devices (or `tp` ways without EP),
    everything else split `tp` ways and held whole by every DP and CP rank; norms ignored."""
    routed = arch.moe_layers * arch.num_experts * arch.mlp_matrices * arch.hidden * arch.expert_intermediate
    rest = arch.param_count() - routed
    expert_split = par.ep if par.ep > 1 else par.tp
    return (rest / par.tp + routed / expert_split) * arch.dtype_bytes


def kv_bytes_per_token_per_device(arch: ModelArch, par: Parallelism, kv_dtype_bytes: int | None = None) -> int:
    """KV bytes one token costs on the device holding it; KV heads are replicated when fewer than
    tp (MLA's latent on every TP rank). A DP rank holds its own sequences' tokens only."""
    nbytes = kv_dtype_bytes or arch.kv_element_bytes
    if arch.is_mla:
        return arch.layers * arch.latent_dim * nbytes
    _, kv = local_heads(arch, par.tp)
    return 2 * arch.layers * kv * arch.head_dim * nbytes


def kv_capacity_tokens(
    arch: ModelArch,
    accel: Accelerator,
    par: Parallelism | None = None,
    *,
    reserve_fraction: float = 0.10,
    kv_dtype_bytes: int | None = None,
) -> int:
    """Tokens of KV cache per instance; 0 when the weights do not fit.

    reserve_fraction: share of device memory kept for activations and workspace
    (vLLM's default gpu_memory_utilization of 0.9 leaves the same 10%).
    """
    par = par or Parallelism()
    if not 0.0 <= reserve_fraction < 1.0:
        raise ValueError("reserve_fraction must be in [0, 1)")
    free = accel.memory_bytes * (1.0 - reserve_fraction) - weight_bytes_per_device(arch, par)
    if free <= 0:
        return 0
    # each DP rank caches its own sequences; CP ranks shard one sequence's KV between them
    return math.floor(free / kv_bytes_per_token_per_device(arch, par, kv_dtype_bytes)) * par.ranks
