"""Time of one engine step on one accelerator: a per-operator roofline.

Each operator takes max(FLOPs / (peak * compute efficiency),
bytes / (bandwidth * memory efficiency)) plus a per-kernel fixed cost; the step
adds tensor-parallel collectives over the scale-up link and a fixed per-step
framework overhead. This is the shared core of the scheduler's latency
predictions, the planner's capacity estimates and the simulator, so it is pure:
plain data in (architecture, batch, catalog row, efficiency factors), numbers out.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.comm import all_reduce_time, expert_all_to_all_time
from tessera.engine_model.perf.efficiency import Efficiency, efficiency_for, efficiency_from_dict, efficiency_table
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import (
    ATTENTION,
    GEMM,
    Batch,
    OpCost,
    Parallelism,
    attention_ops,
    expert_ops,
    rank_batches,
    rank_token_ops,
)

__all__ = [
    "StepTime",
    "op_time",
    "op_bound",
    "communication_time",
    "step_time",
    "efficiency_for",
    "efficiency_from_dict",
    "efficiency_table",
]


@dataclass(frozen=True)
class StepTime:
    """A step's predicted time and where it goes (seconds)."""

    total_s: float
    compute_s: float
    communication_s: float
    overhead_s: float
    by_op: dict[str, float] = field(default_factory=dict)
    memory_bound_s: float = 0.0  # share of compute_s spent in memory-bound operators

    @property
    def memory_bound_fraction(self) -> float:
        return self.memory_bound_s / self.compute_s if self.compute_s else 0.0


def _roofs(op: OpCost, accel: Accelerator, eff: Efficiency, dtype_bytes: int) -> tuple[float, float, float]:
    """One execution's (compute-limited time, memory-limited time, fixed kernel cost)."""
    peak, bw = accel.peak_flops(dtype_bytes), accel.memory_bw_bytes_s
    if op.kind == GEMM:
        return (op.flops / (peak * eff.gemm_compute(op.rows)), op.bytes / (bw * eff.gemm_memory), eff.gemm_overhead_s)
    if op.kind == ATTENTION:
        return (op.flops / (peak * eff.attention_compute), op.bytes / (bw * eff.attention_memory), eff.gemm_overhead_s)
    # norms, activations, rope, adds, embedding: their FLOPs are negligible next to the bytes
    fraction, overhead = eff.memory_kernel(op.kind)
    return 0.0, op.bytes / (bw * fraction), overhead


def op_time(op: OpCost, accel: Accelerator, eff: Efficiency, dtype_bytes: int = 2) -> float:
    """Seconds for all `op.count` executions of one operator on one device."""
    tc, tm, overhead = _roofs(op, accel, eff, dtype_bytes)
    return op.count * (max(tc, tm) + overhead)


def op_bound(op: OpCost, accel: Accelerator, eff: Efficiency, dtype_bytes: int = 2) -> str:
    """'compute' or 'memory': which roof limits the operator."""
    tc, tm, _ = _roofs(op, accel, eff, dtype_bytes)
    return "compute" if tc > tm else "memory"


def communication_time(arch: ModelArch, batch: Batch, accel: Accelerator, par: Parallelism, eff: Efficiency) -> float:
    """Collectives per step (`batch`: the whole instance's, or under DP its busiest rank's share x dp).

    Tensor parallelism: an all-reduce of the hidden states after attention and after each dense MLP
    over the scale-up link. Expert parallelism: each MoE layer's MLP all-reduce becomes a dispatch
    (hidden x top_k bytes per token, in the weights' dtype: DeepEP/MoRI send fp8 for fp8 models) and
    a combine (the same in the activations' dtype) over the EP group, priced per vendor topology
    and across nodes (comm.expert_all_to_all_time). Context parallelism: each rank gathers the other
    ranks' K/V of the prefill (an all-gather of the chunk's KV) over scale-up within a node, scale-out across.
    """
    t = batch.tokens
    if t == 0:
        return 0.0
    total = 0.0
    rank_tokens = math.ceil(t / par.dp)
    if par.tp > 1:
        hidden_bytes = float(math.ceil(rank_tokens / par.cp) * arch.hidden * arch.kv_element_bytes)
        ar = all_reduce_time(hidden_bytes, par.tp, accel.scale_up_bytes_s, eff.link, eff.collective_latency_s)
        mlp_reduces = arch.mlp_layers + (arch.moe_layers if par.ep == 1 else 0)
        total += ar * (arch.layers + mlp_reduces)
    if arch.is_moe and par.ep > 1:
        per_token = arch.hidden * arch.top_k
        dispatch = expert_all_to_all_time(
            rank_tokens * per_token * arch.dtype_bytes / par.tp, par.ep, accel, eff.link, eff.collective_latency_s
        )
        combine = expert_all_to_all_time(
            rank_tokens * per_token * arch.kv_element_bytes / par.tp, par.ep, accel, eff.link, eff.collective_latency_s
        )
        total += arch.moe_layers * (dispatch + combine)
    new = sum(n for n, _ in batch.prefill)
    if par.cp > 1 and new:
        kv = float(arch.kv_bytes_per_token()) / arch.layers * new / par.tp
        same_node = par.devices <= accel.devices_per_node
        link = accel.scale_up_bytes_s if same_node else accel.scale_out_bytes_s
        gather = eff.collective_latency_s + (par.cp - 1) / par.cp * kv / (link * eff.link)
        total += arch.layers * gather
    return total


def op_dtype_bytes(arch: ModelArch, op: OpCost) -> int:
    """The element size that picks an operator's peak: attention runs in the KV cache's dtype (bf16
    for an fp8 checkpoint such as DeepSeek V3's), everything else in the weights'."""
    return arch.kv_element_bytes if op.kind == ATTENTION else arch.dtype_bytes


def _rank_time(
    arch: ModelArch, rank: Batch, accel: Accelerator, par: Parallelism, eff: Efficiency
) -> tuple[float, list[OpCost]]:
    ops = [*rank_token_ops(arch, rank.tokens, rank.sequences, par), *attention_ops(arch, rank, par)]
    return sum(op_time(op, accel, eff, op_dtype_bytes(arch, op)) for op in ops), ops


def step_time(
    arch: ModelArch, batch: Batch, accel: Accelerator, par: Parallelism | None = None, eff: Efficiency | None = None
) -> StepTime:
    """Predicted wall time of one engine step that runs `batch` on one instance."""
    par = par or Parallelism()
    eff = eff or Efficiency()
    if batch.tokens == 0:
        return StepTime(0.0, 0.0, 0.0, 0.0)
    by_op: dict[str, float] = {}
    memory_bound = 0.0
    # under DP attention every rank waits for the slowest at each MoE layer's all-to-all
    ranks = [_rank_time(arch, r, accel, par, eff) for r in rank_batches(batch, par.dp) if r.tokens]
    _, slowest = max(ranks, key=lambda r: r[0])
    for op in [*slowest, *expert_ops(arch, batch.tokens, par)]:
        t = op_time(op, accel, eff, op_dtype_bytes(arch, op))
        by_op[op.name] = by_op.get(op.name, 0.0) + t
        if op_bound(op, accel, eff, op_dtype_bytes(arch, op)) == "memory":
            memory_bound += t
    compute = sum(by_op.values())
    comm = communication_time(arch, batch, accel, par, eff)
    total = compute + comm + eff.step_overhead_s
    return StepTime(total, compute, comm, eff.step_overhead_s, by_op, memory_bound)
