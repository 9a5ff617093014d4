"""Plots of autoscaled runs: load, instances by kind and role, cost rate and SLO attainment over time.

Takes the JSON summaries (autoscaling_report.summarize_autoscaled), so a benchmark can
redraw from its saved results. One column per run shares the time axis: the load on top,
each run's fleet (ready instances stacked by type, starting ones dashed), then every
run's cost rate and per-interval SLO attainment overlaid.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np


def plot_autoscaling(summaries: dict[str, dict[str, Any]], path: Path, title: str = "") -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(summaries)
    rows = 3 + len(names)
    fig, axes = plt.subplots(rows, 1, figsize=(13, 2.3 * rows + 1), sharex=True)
    first = summaries[names[0]]["timeseries"]
    t = np.array(first["t"])
    step = float(t[1] - t[0]) if len(t) > 1 else 1.0
    ax = axes[0]
    ax.step(
        t[: len(first["arrival_rps"])], first["arrival_rps"][: len(t)], where="post", color="black", label="arrivals"
    )
    for name in names:
        changes = summaries[name].get("fleet_changes") or []
        ticks = [c for c in changes if c.get("forecast_rps") is not None]
        if ticks:
            ax.plot(
                [c["t"] for c in ticks],
                [c["forecast_rps"] for c in ticks],
                ".",
                ms=3,
                label=f"{name}: planned-for rate, at fleet changes",
            )
    ax.set_ylabel(f"req/s ({step:g} s bins)")
    ax.set_title("load")
    ax.legend(loc="upper right", fontsize=7)

    labels = sorted({label for s in summaries.values() for label in s["timeseries"]["instances"]})
    colors = {label: plt.cm.tab20(i % 20) for i, label in enumerate(labels)}
    for ax, name in zip(axes[1 : 1 + len(names)], names):
        series = summaries[name]["timeseries"]
        ts = np.array(series["t"])  # runs end when their last request does: each its own axis
        present = [label for label in labels if label in series["instances"]]
        if present:
            ax.stackplot(
                ts,
                *[series["instances"][lb] for lb in present],
                step="post",
                labels=present,
                colors=[colors[lb] for lb in present],
                alpha=0.85,
            )
        if series["starting"]:
            ax.step(
                ts,
                np.sum([series["starting"][lb] for lb in series["starting"]], axis=0),
                where="post",
                color="grey",
                ls="--",
                lw=0.8,
                label="starting",
            )
        ax.set_ylabel("instances")
        s = summaries[name]
        ax.set_title(f"{name}: ${s['cost_usd']:.2f}, {s['slo_attainment']:.2%} within SLOs", fontsize=9)
        ax.legend(loc="upper left", fontsize=6, ncol=4)

    ax = axes[1 + len(names)]
    for name in names:
        series = summaries[name]["timeseries"]
        ax.step(series["t"], series["cost_per_hour"], where="post", label=name)
    ax.set_ylabel("$/h")
    ax.set_title("accelerator cost rate")
    ax.legend(loc="upper right", fontsize=7)

    ax = axes[2 + len(names)]
    for name in names:
        series = summaries[name]["timeseries"]
        att = [np.nan if v is None else v for v in series["slo_attainment"]]
        ax.step(series["t"][: len(att)], att[: len(series["t"])], where="post", label=name)
    ax.axhline(0.99, color="red", lw=0.8, ls=":", label="99%")
    ax.set_ylim(-0.02, 1.02)
    ax.set_ylabel("within SLOs")
    ax.set_title("share of the interval's requests within both SLO bounds")
    ax.set_xlabel("time (s)")
    ax.legend(loc="lower left", fontsize=7)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
