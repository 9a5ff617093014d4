"""Plots of one simulation: latency distributions, and load, queue and utilization over time."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from tessera.sim.report import request_metrics_ms
from tessera.sim.simulator import SimResult


def plot_simulation(
    result: SimResult, path: Path, title: str = "", slo: dict[str, tuple[float, float]] | None = None
) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    slo = slo or {}
    done = [r for r in result.records if r.done and not r.error]
    metrics = [request_metrics_ms(r) for r in done]
    fig, axes = plt.subplots(2, 2, figsize=(13, 8.5))
    for ax, name in ((axes[0][0], "ttft"), (axes[0][1], "tpot")):
        values = np.sort([m[name] for m in metrics]) if metrics else np.array([])
        if len(values):
            ax.plot(values, np.linspace(0, 1, len(values)))
            for p in (50, 90, 99):
                ax.axvline(np.percentile(values, p), color="grey", lw=0.6, ls=":")
        if name in slo:
            pct, bound = slo[name]
            ax.axvline(bound, color="red", lw=1, label=f"SLO p{pct:g} <= {bound:g} ms")
            ax.legend(loc="lower right")
        ax.set_xscale("log" if len(values) and values[-1] > 20 * max(values[0], 1e-3) else "linear")
        ax.set_xlabel(f"{name.upper()} (ms)")
        ax.set_ylabel("fraction of requests")
        ax.set_title(f"{name.upper()} distribution ({len(values)} requests)")
        ax.grid(alpha=0.3)

    t = np.array([s.t for s in result.samples])
    ax = axes[1][0]
    if len(t):
        ax.plot(t, [s.running for s in result.samples], label="running")
        ax.plot(t, [s.waiting for s in result.samples], label="waiting (queued in engines)")
        arrivals = np.array([r.arrival_s for r in result.records])
        if len(arrivals):
            bins = np.arange(0, t[-1] + 10, 10)
            counts, edges = np.histogram(arrivals, bins=bins)
            ax2 = ax.twinx()
            ax2.step(edges[:-1], counts / 10.0, where="post", color="grey", alpha=0.6, label="arrivals (req/s)")
            ax2.set_ylabel("arrival rate (req/s, 10 s bins)")
    ax.set_xlabel("time (s)")
    ax.set_ylabel("requests")
    ax.set_title("load and queue over time")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)

    ax = axes[1][1]
    if len(t):
        kinds = sorted(result.samples[0].busy_by_kind) if result.samples else []
        window = max(1, len(t) // 200)
        for kind in kinds:
            busy = np.array([s.busy_by_kind.get(kind, 0.0) for s in result.samples])
            smooth = np.convolve(busy, np.ones(window) / window, mode="same")
            ax.plot(t, smooth, label=kind)
        ax.plot(t, [s.kv_usage for s in result.samples], color="black", ls="--", lw=0.8, label="KV cache usage (mean)")
    ax.set_ylim(0, 1.05)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("fraction of instances mid-step")
    ax.set_title("utilization by accelerator")
    ax.legend(loc="upper left", fontsize=8)
    ax.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
