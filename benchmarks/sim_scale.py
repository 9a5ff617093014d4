"""How fast `tessera sim` runs: wall time against cluster size and request count.

The headline: one hour of azure2023_code.csv through a 64-accelerator
heterogeneous cluster (32 H100 + 32 A100 serving Llama-3.1-8B). Then two
sweeps: the same trace on 16..512 accelerators, and 1/4 to 8 times its
requests (the trace replayed with --rate-scale on the same 64 accelerators)
to show wall time grows no faster than linearly in requests.

Run it on one core for the figure the issue asks for:
    taskset -c 0 .venv/bin/python benchmarks/sim_scale.py
Writes benchmarks/results/sim_scale.json and .png.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from tessera.engine_model.build import build_instances, resolve_arch
from tessera.engine_model.instance import parse_cluster
from tessera.placement.pipeline import load_profile
from tessera.sim import workloads as wl
from tessera.sim.report import summarize_sim
from tessera.sim.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]

TRACE = ROOT.parent / "shared" / "data" / "traces" / "azure2023_code.csv"


def run_once(
    requests: list[wl.SimRequest], cluster: str, model: str = "llama3-8b", policy: str = "least_loaded"
) -> dict:
    arch = resolve_arch(model)
    instances = build_instances(arch, parse_cluster(cluster, arch))
    t0 = time.process_time()
    w0 = time.perf_counter()
    result = Simulator(arch, arch.name, instances, load_profile(policy, seed=0), sample_interval_s=5.0).run(requests)
    wall = time.perf_counter() - w0
    cpu = time.process_time() - t0
    s = summarize_sim(result, details=False)
    return {
        "cluster": cluster,
        "accelerators": sum(sp.devices for sp, _, _ in instances),
        "instances": len(instances),
        "requests": len(requests),
        "virtual_s": result.duration_s,
        "wall_s": wall,
        "cpu_s": cpu,
        "events": result.events,
        "engine_steps": s["engine_steps"],
        "completed": s["completed"],
        "p50_ttft_ms": s["p50_ttft_ms"],
        "p90_ttft_ms": s["p90_ttft_ms"],
        "p50_tpot_ms": s["p50_tpot_ms"],
    }


def show(row: dict) -> None:
    print(
        f"  {row['cluster']:<22} {row['accelerators']:>4} accel {row['requests']:>6} req "
        f"{row['virtual_s']:>6.0f} s virtual -> {row['wall_s']:6.2f} s wall ({row['cpu_s']:.2f} s CPU), "
        f"{row['events']} events, {row['engine_steps']} steps, TTFT p50 {row['p50_ttft_ms']:.0f} ms",
        flush=True,
    )


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    ax = axes[0]
    rows = data["cluster_sweep"]
    ax.plot([r["accelerators"] for r in rows], [r["wall_s"] for r in rows], "o-")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("accelerators (half H100, half A100)")
    ax.set_ylabel("wall time (s, one core)")
    ax.set_title("1 h of azure2023_code.csv: wall time vs cluster size")
    ax.grid(alpha=0.3)
    ax = axes[1]
    rows = data["request_sweep"]
    x = [r["requests"] for r in rows]
    ax.plot(x, [r["wall_s"] for r in rows], "o-", label="measured")
    k = rows[0]["wall_s"] / rows[0]["requests"]
    ax.plot(x, [k * n for n in x], "--", color="grey", label="linear from the smallest run")
    ax.set_xlabel("requests (rate-scaled trace, 64 accelerators)")
    ax.set_ylabel("wall time (s, one core)")
    ax.set_title("wall time vs request count")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.suptitle(f"tessera sim speed; headline: {data['headline']['wall_s']:.1f} s for 1 h on 64 accelerators")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trace", default=str(TRACE))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sim_scale"))
    args = p.parse_args()
    base = wl.azure_csv(args.trace)
    cores = sorted(os.sched_getaffinity(0))
    print(f"trace: {len(base)} requests over {base[-1].arrival_s:.0f} s; running on cores {cores}")
    print("headline: one hour through 64 accelerators")
    headline = run_once(base, "h100:32,a100:32")
    show(headline)
    print("cluster sweep (same trace):")
    cluster_sweep = []
    for n in (16, 64, 256, 512):
        row = run_once(base, f"h100:{n // 2},a100:{n // 2}")
        show(row)
        cluster_sweep.append(row)
    print("request sweep (trace rate-scaled, same 64 accelerators):")
    request_sweep = []
    for scale in (0.25, 0.5, 1.0, 2.0, 4.0, 8.0):
        row = run_once(wl.rescale(base, rate_scale=scale, seed=1), "h100:32,a100:32")
        row["rate_scale"] = scale
        show(row)
        request_sweep.append(row)
    per_req = [r["wall_s"] / r["requests"] * 1e6 for r in request_sweep]
    print("wall time per request (us): " + ", ".join(f"{v:.0f}" for v in per_req))
    data = {
        "trace": args.trace,
        "cores": cores,
        "headline": headline,
        "cluster_sweep": cluster_sweep,
        "request_sweep": request_sweep,
        "wall_us_per_request": per_req,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    plot(data, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
