"""Time of one engine step on one accelerator: a per-operator roofline.

Each operator takes max(FLOPs / (peak * compute efficiency),
bytes / (bandwidth * memory efficiency)) plus a per-kernel fixed cost; the step
adds tensor-parallel collectives over the scale-up link and a fixed per-step
framework overhead. This is the shared core of the scheduler's latency
predictions, the planner's capacity estimates and the simulator, so it is pure:
plain data in (architecture, batch, catalog row, efficiency factors), numbers out.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.comm import all_reduce_time, all_to_all_time
from tessera.engine_model.perf.efficiency import Efficiency, efficiency_for, efficiency_from_dict, efficiency_table
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import ATTENTION, GEMM, Batch, OpCost, Parallelism, step_ops

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
    """Collectives per step: two TP all-reduces of the hidden states per layer (after o_proj
    and after the MLP); under EP the MLP's all-reduce becomes a dispatch and a combine all-to-all."""
    t = batch.tokens
    if par.tp <= 1 or t == 0:
        return 0.0
    hidden_bytes = float(t * arch.hidden * arch.dtype_bytes)
    ar = all_reduce_time(hidden_bytes, par.tp, accel.scale_up_bytes_s, eff.link, eff.collective_latency_s)
    if arch.is_moe and par.ep > 1:
        routed_bytes = hidden_bytes * arch.top_k / par.ep
        a2a = all_to_all_time(routed_bytes, par.ep, accel.scale_up_bytes_s, eff.link, eff.collective_latency_s)
        return arch.layers * (ar + 2.0 * a2a)
    return arch.layers * 2.0 * ar


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
    for op in step_ops(arch, batch, par):
        t = op_time(op, accel, eff, arch.dtype_bytes)
        by_op[op.name] = by_op.get(op.name, 0.0) + t
        if op_bound(op, accel, eff, arch.dtype_bytes) == "memory":
            memory_bound += t
    compute = sum(by_op.values())
    comm = communication_time(arch, batch, accel, par, eff)
    total = compute + comm + eff.step_overhead_s
    return StepTime(total, compute, comm, eff.step_overhead_s, by_op, memory_bound)
