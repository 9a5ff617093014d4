"""How close an accelerator's kernels get to its datasheet peaks.

Peaks come from the catalog; real kernels reach a fraction of them that depends
on the kernel and, for GEMMs, on the number of rows (tokens). These factors are
the performance model's only free parameters, so they live in one small record
that benchmarks/calibrate_vidur.py fits against measurements and writes to
calibration.yaml. Parsing that file's content is here; reading it is the one
tiny function at the bottom, outside the model.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from importlib import resources
from typing import Any

import yaml

from tessera.engine_model.perf.operators import ACTIVATION, EMBEDDING, NORM, RESIDUAL_ADD, ROPE


@dataclass(frozen=True)
class Efficiency:
    """Fractions of peak (and fixed costs) per operator kind for one accelerator.

    Defaults are rounded from the H100/A100 fits against Vidur's tables, so an
    uncalibrated accelerator gets a plausible, not an optimistic, model.

    GEMM compute efficiency at M rows is a saturating (Hill) curve,
        gemm_compute_max / (1 + (gemm_half_rows / M) ** gemm_rows_exponent),
    because small-M GEMMs fill few tiles; at large M it tends to gemm_compute_max.
    """

    gemm_compute_max: float = 0.76
    gemm_half_rows: float = 130.0
    gemm_rows_exponent: float = 1.0
    gemm_memory: float = 0.88
    gemm_overhead_s: float = 6e-6
    # memory-bound kernels: achieved fraction of HBM bandwidth, and a fixed cost per kernel
    # (these small kernels differ: Vidur measures 4-6 us for an RMSNorm of one token,
    # 1-2 us for a residual add). residual_add_memory sits at its bound of 1.0: the
    # measured adds beat the 3-tensor byte count, presumably through L2 reuse.
    norm_memory: float = 0.41
    norm_overhead_s: float = 3e-6
    activation_memory: float = 0.54
    activation_overhead_s: float = 2.5e-6
    rope_memory: float = 0.51
    rope_overhead_s: float = 2.3e-6
    residual_add_memory: float = 1.0
    residual_add_overhead_s: float = 1.2e-6
    embedding_memory: float = 0.175
    embedding_overhead_s: float = 3.3e-6
    # attention (FlashAttention-class kernels); not in Vidur's MLP tables, so not calibrated
    attention_compute: float = 0.50
    attention_memory: float = 0.70
    # communication and framework
    link: float = 0.80  # fraction of scale-up bandwidth an all-reduce achieves
    collective_latency_s: float = 10e-6  # fixed cost per collective (launch + synchronisation)
    step_overhead_s: float = 1.5e-3  # scheduler, sampling, input preparation per engine step

    def gemm_compute(self, rows: float) -> float:
        """Fraction of peak FLOP/s a GEMM with `rows` rows reaches."""
        m = max(rows, 1e-9)
        return float(self.gemm_compute_max / (1.0 + (self.gemm_half_rows / m) ** self.gemm_rows_exponent))

    def memory_kernel(self, kind: str) -> tuple[float, float]:
        """(fraction of HBM bandwidth, fixed seconds) of a memory-bound kernel of `kind`."""
        table = {
            NORM: (self.norm_memory, self.norm_overhead_s),
            ACTIVATION: (self.activation_memory, self.activation_overhead_s),
            ROPE: (self.rope_memory, self.rope_overhead_s),
            RESIDUAL_ADD: (self.residual_add_memory, self.residual_add_overhead_s),
            EMBEDDING: (self.embedding_memory, self.embedding_overhead_s),
        }
        return table[kind]


def efficiency_from_dict(row: dict[str, Any] | None) -> Efficiency:
    """An Efficiency from one accelerator's entry of calibration.yaml; unknown keys are an error."""
    row = dict(row or {})
    known = {f.name for f in fields(Efficiency)}
    unknown = sorted(set(row) - known)
    if unknown:
        raise ValueError(f"unknown efficiency parameters {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    return Efficiency(**{k: float(v) for k, v in row.items()})


def efficiency_table(parsed: dict[str, Any]) -> dict[str, Efficiency]:
    """Accelerator name -> Efficiency from the parsed calibration file (its `accelerators:` map)."""
    return {name: efficiency_from_dict(row.get("factors")) for name, row in (parsed.get("accelerators") or {}).items()}


def efficiency_for(accelerator: str, table: dict[str, Efficiency]) -> Efficiency:
    """The calibrated factors for `accelerator`, or the defaults where it has none yet."""
    return table.get(accelerator, Efficiency())


def read_calibration_file() -> dict[str, Any]:
    """The parsed tessera/engine_model/perf/calibration.yaml (the only I/O in tessera.engine_model.perf)."""
    return yaml.safe_load(resources.files("tessera.engine_model.perf").joinpath("calibration.yaml").read_text()) or {}
