"""What the calibration scripts share: the fitted-parameter table, error summaries, and
merging one accelerator's fitted factors into tessera/engine_model/perf/calibration.yaml.

benchmarks/calibrate_vidur.py (H100/A100, from Vidur's operator tables) and
benchmarks/calibrate_cpu.py (this machine's `cpu` row, from real vLLM engine steps)
each own some accelerators' entries in calibration.yaml; each rewrites only its own
entries and keeps the others.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from scipy.optimize import least_squares

from tessera.engine_model.perf.efficiency import Efficiency

ROOT = Path(__file__).resolve().parent.parent
CALIBRATION = ROOT / "tessera" / "perf" / "calibration.yaml"
HEADER = (
    "# Performance-model efficiency factors fitted to measurements, one entry per accelerator.\n"
    "# Each entry names the script that wrote it (benchmarks/calibrate_vidur.py,\n"
    "# benchmarks/calibrate_cpu.py); rerun that script rather than editing by hand. The\n"
    "# scripts merge their entries into this file and leave the others alone.\n"
)

# A fitted parameter: (Efficiency field, lower bound, upper bound, scale of the optimiser's
# variable). Scales keep the variables near 1 so least_squares steps sensibly; "log10" fits
# the field's base-10 logarithm between the bounds.
FitParam = tuple[str, float, float, Any]


def to_factors(params: Sequence[FitParam], x: np.ndarray) -> dict[str, float]:
    """Optimiser variables -> Efficiency field values."""
    out = {}
    for (name, _, _, scale), v in zip(params, x):
        out[name] = float(10.0**v) if scale == "log10" else float(v * scale)
    return out


def fit_factors(
    params: Sequence[FitParam],
    residuals: Callable[[dict[str, float]], np.ndarray],
    start: Mapping[str, float] | None = None,
) -> dict[str, float]:
    """Bounded least squares over `params`, starting from `start` (name -> value; by default the
    Efficiency defaults). `residuals` maps fitted values (name -> value) to residuals."""
    start = asdict(Efficiency()) if start is None else start
    x0 = [np.log10(start[n]) if s == "log10" else start[n] / s for n, _, _, s in params]
    lb = np.array([lo for _, lo, _, _ in params], float)
    ub = np.array([hi for _, _, hi, _ in params], float)
    x0 = np.clip(x0, lb + 1e-6, ub - 1e-6)
    result = least_squares(lambda x: residuals(to_factors(params, x)), x0, bounds=(lb, ub), x_scale="jac")
    return to_factors(params, result.x)


def ape_summary(ape: np.ndarray) -> dict[str, float]:
    """Absolute percentage errors (as fractions) summarised."""
    if ape.size == 0:
        return {"mape": float("nan"), "median_ape": float("nan"), "p90_ape": float("nan"), "n": 0}
    return {
        "mape": float(np.mean(ape)),
        "median_ape": float(np.median(ape)),
        "p90_ape": float(np.percentile(ape, 90)),
        "n": int(ape.size),
    }


def utc_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def calibration_entry(factors: dict[str, float], summary: dict[str, float], **meta: Any) -> dict[str, Any]:
    """One accelerator's entry: where it came from, the factors, and its overall errors."""
    return {
        **meta,
        "factors": {k: float(f"{v:.6g}") for k, v in factors.items()},
        "median_ape": round(summary["median_ape"], 4),
        "mape": round(summary["mape"], 4),
    }


def merge_calibration(entries: dict[str, dict[str, Any]], path: Path = CALIBRATION) -> None:
    """Write `entries` (accelerator -> entry) into the calibration file, keeping every other
    accelerator's entry as it is (file order kept, new accelerators appended)."""
    doc = (yaml.safe_load(path.read_text()) or {}) if path.exists() else {}
    accelerators = dict(doc.get("accelerators") or {})
    # files written before entries carried their own provenance: push the file-level keys down
    legacy = {k: doc[k] for k in ("generated_by", "generated_at", "source", "note") if k in doc}
    for name, entry in accelerators.items():
        if legacy and name not in entries:
            accelerators[name] = {**legacy, **{k: v for k, v in entry.items() if k not in legacy}}
    accelerators.update(entries)
    path.write_text(HEADER + yaml.safe_dump({"accelerators": accelerators}, sort_keys=False, width=100))
