"""Fit the performance model's efficiency factors to Vidur's measured operator times.

Vidur (microsoft/vidur) profiled every operator of a Llama-2 layer on H100 and
A100 by num_tokens (1..4096) and TP degree (1..8); the tables are in
../shared/data/profiles/. For each accelerator this script fits the factors of
tessera.engine_model.perf.efficiency.Efficiency that Vidur's tables can pin down:

- GEMMs (QKV, o_proj, MLP up/gate, down): a saturating compute efficiency in the
  number of rows (max, half-rows, exponent), a memory efficiency, a per-kernel cost;
- memory-bound kernels (norms, activation, rope, residual add, embedding): a
  bandwidth efficiency and a fixed per-kernel cost each;

by least squares on log(predicted / measured) over both models and all TP
degrees. It then re-predicts every measurement with the real model code
(tessera.engine_model.perf.roofline.op_time) and reports absolute percentage errors per
operator, per num_tokens bucket, per TP degree and per model, plus a
cross-model check (fit on one model, predict the other). Attention, collectives
and per-step overhead are not in these tables and keep their defaults.

Writes benchmarks/results/perf_model_vidur_calibration.{json,png} and merges the
fitted factors into tessera/engine_model/perf/calibration.yaml (the h100-sxm and a100-80gb-sxm
entries; other accelerators' entries, such as `cpu`, are kept).

    python benchmarks/calibrate_vidur.py
"""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
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
from calibration_common import to_factors as _to_factors

from tessera.engine_model.catalog import accelerators
from tessera.engine_model.perf.efficiency import Efficiency, efficiency_from_dict
from tessera.engine_model.perf.operators import ACTIVATION, EMBEDDING, GEMM, NORM, RESIDUAL_ADD, ROPE, OpCost
from tessera.engine_model.perf.roofline import op_time
from tessera.engine_model.perf.vidur import VIDUR_OPS, arch_from_vidur_row, measured_seconds, vidur_op_costs

ROOT = Path(__file__).resolve().parent.parent

PROFILES = ROOT.parent / "shared" / "data" / "profiles"
RESULTS = ROOT / "benchmarks" / "results"
GPUS = {"h100": "h100-sxm", "a100": "a100-80gb-sxm"}
MODELS = ("Llama-2-7b-hf", "Llama-2-70b-hf")
TOKEN_BUCKETS = ((1, 16), (17, 64), (65, 256), (257, 1024), (1025, 4096))

# Fitted parameters: (Efficiency field, lower bound, upper bound, scale of the optimiser's variable).
# Scales keep the variables near 1 so least_squares steps sensibly (half_rows is fitted in log10).
FIT = (
    ("gemm_compute_max", 0.1, 1.0, 1.0),
    ("gemm_half_rows", 0.0, 4.0, "log10"),
    ("gemm_rows_exponent", 0.3, 4.0, 1.0),
    ("gemm_memory", 0.1, 1.0, 1.0),
    ("gemm_overhead_s", 0.0, 50.0, 1e-6),
    ("norm_memory", 0.01, 1.0, 1.0),
    ("norm_overhead_s", 0.0, 50.0, 1e-6),
    ("activation_memory", 0.01, 1.0, 1.0),
    ("activation_overhead_s", 0.0, 50.0, 1e-6),
    ("rope_memory", 0.01, 1.0, 1.0),
    ("rope_overhead_s", 0.0, 50.0, 1e-6),
    ("residual_add_memory", 0.01, 1.0, 1.0),
    ("residual_add_overhead_s", 0.0, 50.0, 1e-6),
    ("embedding_memory", 0.01, 1.0, 1.0),
    ("embedding_overhead_s", 0.0, 50.0, 1e-6),
)
MEMORY_KINDS = ("norm", "activation", "rope", "residual_add", "embedding")  # KIND_CODES 1..5
KIND_CODES = {GEMM: 0, NORM: 1, ACTIVATION: 2, ROPE: 3, RESIDUAL_ADD: 4, EMBEDDING: 5}


def read_rows(gpu: str, model: str) -> list[dict[str, str]]:
    with open(PROFILES / f"vidur_{gpu}_{model}_mlp.csv", newline="") as f:
        return list(csv.DictReader(f))


class Observations:
    """Every (operator, measurement) pair for one accelerator, as parallel arrays."""

    def __init__(self, gpu: str) -> None:
        self.ops: list[OpCost] = []
        vidur_op, model, tokens, tp, measured = [], [], [], [], []
        for m in MODELS:
            rows = read_rows(gpu, m)
            arch = arch_from_vidur_row(rows[0], m)
            for row in rows:
                costs = vidur_op_costs(row, arch)
                for name, op in costs.items():
                    self.ops.append(op)
                    vidur_op.append(name)
                    model.append(m)
                    tokens.append(int(row["num_tokens"]))
                    tp.append(int(row["num_tensor_parallel_workers"]))
                    measured.append(measured_seconds(row, name))
        self.vidur_op = np.array(vidur_op)
        self.model = np.array(model)
        self.tokens = np.array(tokens)
        self.tp = np.array(tp)
        self.measured = np.array(measured)
        self.kind = np.array([KIND_CODES[op.kind] for op in self.ops])
        self.flops = np.array([op.flops for op in self.ops])
        self.bytes = np.array([op.bytes for op in self.ops])
        self.rows = np.array([max(op.rows, 1e-9) for op in self.ops])


def to_factors(x: np.ndarray) -> dict[str, float]:
    return _to_factors(FIT, x)


def predict_vectorised(f: dict[str, float], obs: Observations, peak: float, bw: float) -> np.ndarray:
    """The same formula as roofline.op_time, vectorised for the optimiser (checked against it afterwards)."""
    ec = f["gemm_compute_max"] / (1.0 + (f["gemm_half_rows"] / obs.rows) ** f["gemm_rows_exponent"])
    gemm = obs.kind == 0
    tc = np.where(gemm, obs.flops / (peak * ec), 0.0)
    em = np.choose(obs.kind, [f["gemm_memory"]] + [f[f"{k}_memory"] for k in MEMORY_KINDS])
    overhead = np.choose(obs.kind, [f["gemm_overhead_s"]] + [f[f"{k}_overhead_s"] for k in MEMORY_KINDS])
    return np.maximum(tc, obs.bytes / (bw * em)) + overhead


def fit(obs: Observations, accel: accelerators.Accelerator, mask: np.ndarray | None = None) -> dict[str, float]:
    """Least squares on log error over the observations selected by `mask`."""
    mask = np.ones(len(obs.measured), bool) if mask is None else mask
    peak, bw = accel.peak_bf16_flops, accel.memory_bw_bytes_s
    y = obs.measured[mask]

    def residuals(factors: dict[str, float]) -> np.ndarray:
        return np.log(predict_vectorised(factors, obs, peak, bw)[mask] / y)

    return fit_factors(FIT, residuals)


def evaluate(obs: Observations, accel: accelerators.Accelerator, eff: Efficiency) -> tuple[np.ndarray, dict]:
    """Re-predict every measurement with the real model code and summarise the errors."""
    pred = np.array([op_time(op, accel, eff, 2) for op in obs.ops])
    ape = np.abs(pred / obs.measured - 1.0)
    report = {
        "overall": ape_summary(ape),
        "per_operator": {op: ape_summary(ape[obs.vidur_op == op]) for op in VIDUR_OPS},
        "per_num_tokens": {
            f"{lo}-{hi}": ape_summary(ape[(obs.tokens >= lo) & (obs.tokens <= hi)]) for lo, hi in TOKEN_BUCKETS
        },
        "per_tp": {str(tp): ape_summary(ape[obs.tp == tp]) for tp in sorted(set(obs.tp.tolist()))},
        "per_model": {m: ape_summary(ape[obs.model == m]) for m in MODELS},
    }
    # One whole layer (all operators but the embedding) per CSV row: errors partly cancel.
    layer = obs.vidur_op != "emb"
    n_ops = len(VIDUR_OPS) - 1
    layer_pred = pred[layer].reshape(-1, n_ops).sum(axis=1)
    layer_meas = obs.measured[layer].reshape(-1, n_ops).sum(axis=1)
    report["per_layer_sum"] = ape_summary(np.abs(layer_pred / layer_meas - 1.0))
    return pred, report


def cross_model(obs: Observations, accel: accelerators.Accelerator) -> dict[str, dict[str, float]]:
    """Fit on one model's rows only, report errors on the other model's rows (out of sample)."""
    out = {}
    for train, test in ((MODELS[0], MODELS[1]), (MODELS[1], MODELS[0])):
        factors = fit(obs, accel, obs.model == train)
        pred = predict_vectorised(factors, obs, accel.peak_bf16_flops, accel.memory_bw_bytes_s)
        sel = obs.model == test
        out[f"fit_{train}_predict_{test}"] = ape_summary(np.abs(pred[sel] / obs.measured[sel] - 1.0))
    return out


def plot(all_obs: dict[str, Observations], preds: dict[str, np.ndarray], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ops = list(VIDUR_OPS)
    fig, axes = plt.subplots(2, 5, figsize=(20, 8.5))
    colours = {"h100": "tab:green", "a100": "tab:blue"}
    for ax, op in zip(axes.flat, ops):
        lo, hi = np.inf, 0.0
        for gpu, obs in all_obs.items():
            sel = obs.vidur_op == op
            meas, pred = obs.measured[sel] * 1e3, preds[gpu][sel] * 1e3
            ape = np.median(np.abs(pred / meas - 1)) * 100
            ax.scatter(meas, pred, s=3, alpha=0.35, color=colours[gpu], label=f"{gpu.upper()} (median APE {ape:.1f}%)")
            lo, hi = min(lo, meas.min(), pred.min()), max(hi, meas.max(), pred.max())
        ax.plot([lo, hi], [lo, hi], color="black", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"{op} → {VIDUR_OPS[op]}", fontsize=10)
        ax.set_xlabel("measured (ms)")
        ax.set_ylabel("model (ms)")
        ax.legend(fontsize=8, loc="upper left", markerscale=3)
    fig.suptitle("Tessera roofline model vs Vidur measurements (Llama-2-7B/70B, TP 1-8, 1-4096 tokens)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_table(reports: dict[str, dict]) -> None:
    gpus = list(reports)
    print(f"\n{'':<26}" + "".join(f"{g:>23}" for g in gpus))
    print(f"{'operator':<26}" + "".join(f"{'MAPE':>12}{'median':>11}" for _ in gpus))
    for op in VIDUR_OPS:
        cells = "".join(
            f"{reports[g]['per_operator'][op]['mape'] * 100:>11.1f}%"
            f"{reports[g]['per_operator'][op]['median_ape'] * 100:>10.1f}%"
            for g in gpus
        )
        print(f"{op:<26}{cells}")
    print(f"{'num_tokens':<26}")
    for bucket in reports[gpus[0]]["per_num_tokens"]:
        cells = "".join(
            f"{reports[g]['per_num_tokens'][bucket]['mape'] * 100:>11.1f}%"
            f"{reports[g]['per_num_tokens'][bucket]['median_ape'] * 100:>10.1f}%"
            for g in gpus
        )
        print(f"{'  ' + bucket:<26}{cells}")
    for key in ("overall", "per_layer_sum"):
        cells = "".join(
            f"{reports[g][key]['mape'] * 100:>11.1f}%{reports[g][key]['median_ape'] * 100:>10.1f}%" for g in gpus
        )
        print(f"{key:<26}{cells}")


def write_calibration(factors: dict[str, dict[str, float]], reports: dict[str, dict], path: Path) -> None:
    meta = {
        "generated_by": "benchmarks/calibrate_vidur.py",
        "generated_at": utc_now(),
        "source": "microsoft/vidur data/profiling/compute/<gpu>/meta-llama/Llama-2-{7b,70b}-hf/mlp.csv "
        "(commit 7d47513), median times",
        "note": "Only GEMM and memory-bound kernel factors are fitted; attention, link and step overhead "
        "keep the Efficiency defaults (not in Vidur's MLP tables).",
    }
    merge_calibration({GPUS[g]: calibration_entry(factors[g], reports[g]["overall"], **meta) for g in factors}, path)


def main() -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    all_obs, preds, reports, factors = {}, {}, {}, {}
    for gpu, name in GPUS.items():
        accel = accelerators.get(name)
        print(f"[{gpu}] reading Vidur tables ...", flush=True)
        obs = Observations(gpu)
        print(f"[{gpu}] {len(obs.measured)} operator measurements; fitting {len(FIT)} factors ...", flush=True)
        factors[gpu] = fit(obs, accel)
        eff = efficiency_from_dict(factors[gpu])
        pred, report = evaluate(obs, accel, eff)
        vec = predict_vectorised(factors[gpu], obs, accel.peak_bf16_flops, accel.memory_bw_bytes_s)
        assert np.allclose(vec, pred, rtol=1e-9), "vectorised fit formula drifted from roofline.op_time"
        print(f"[{gpu}] cross-model check ...", flush=True)
        report["cross_model"] = cross_model(obs, accel)
        report["factors"] = factors[gpu]
        report["efficiency"] = asdict(eff)
        print(
            f"[{gpu}] median APE {report['overall']['median_ape'] * 100:.1f}%, "
            f"MAPE {report['overall']['mape'] * 100:.1f}%; factors "
            + ", ".join(f"{k}={v:.4g}" for k, v in factors[gpu].items()),
            flush=True,
        )
        all_obs[gpu], preds[gpu], reports[GPUS[gpu]] = obs, pred, report

    print_table(reports)
    json_path = RESULTS / "perf_model_vidur_calibration.json"
    json_path.write_text(
        json.dumps(
            {
                "source": "microsoft/vidur profiling tables in ../shared/data/profiles (commit 7d47513)",
                "models": list(MODELS),
                "accelerators": reports,
            },
            indent=2,
        )
    )
    png_path = RESULTS / "perf_model_vidur_calibration.png"
    plot(all_obs, preds, png_path)
    write_calibration(factors, {g: reports[GPUS[g]] for g in GPUS}, CALIBRATION)
    print(f"\nwrote {json_path.relative_to(ROOT)}, {png_path.relative_to(ROOT)}, {CALIBRATION.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
