"""Routing policies side by side in the simulator: same workloads, same fleets, same loads.

Policies: round_robin, least_loaded, power_of_two, cache_aware (SGLang /
vllm-router), llmd (llm-d's default profile), dynamo (Dynamo's KV cost) and
tessera. Workloads: synthetic shared prefix (32 groups x 32 prompts, 2048-token
system prompt, 256-token question, 256 output), multi-turn chat sessions, and
mooncake_synthetic.jsonl. Fleets: 8 x H100, 4 x H100 + 4 x A100, 4 x MI300X +
4 x H100, serving Llama-3.1-8B. Loads: 50, 70 and 90% of the fleet's capacity,
where capacity is the highest throughput any of least_loaded, cache_aware and
tessera reaches with every request queued at once (the fleet's saturation
point with good routing: 90% is a heavy load for every policy).

Reports p50/p90 TTFT and TPOT, throughput, goodput (TTFT <= 2 s and TPOT <= 100 ms
per request), and prefix-cache hit rate against the infinite-cache bound (every
block seen before, by anyone, is a hit).

    .venv/bin/python benchmarks/routing_policies.py [--quick]

Writes benchmarks/results/routing_policies.json and .png.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import OrderedDict
from pathlib import Path

import yaml

from tessera.engine_model.build import build_instances, resolve_arch
from tessera.engine_model.instance import parse_cluster
from tessera.placement.block_hash import content_block_hashes
from tessera.placement.pipeline import PROFILES_DIR, build_pipeline
from tessera.placement.prefix_index import CANONICAL_BLOCK_TOKENS
from tessera.sim import workloads as wl
from tessera.sim.report import parse_slo, summarize_sim
from tessera.sim.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]

POLICIES = ("round_robin", "least_loaded", "power_of_two", "cache_aware", "llmd", "dynamo", "tessera")
FLEETS = {"8xH100": "h100:8", "4xH100+4xA100": "h100:4,a100:4", "4xMI300X+4xH100": "mi300x:4,h100:4"}
LOADS = (0.5, 0.7, 0.9)
CAPACITY_POLICIES = ("least_loaded", "cache_aware", "tessera")
SPAN_S = 60.0
# Read once: a long run must not pick up a profile edited halfway through it.
PROFILES = {p: yaml.safe_load((PROFILES_DIR / f"{p}.yaml").read_text()) for p in POLICIES}
SLO = "ttft_p90=2000,tpot_p90=100"
TRACE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_synthetic.jsonl"


def workload(name: str, load_rate: float | None, quick: bool) -> list[wl.SimRequest]:
    """The workload at `load_rate` requests per second; None: the base set, everything at once.

    At a given rate the synthetic workloads are long enough for about SPAN_S seconds of
    arrivals, so the figures describe a steady load, not a ramp and its tail.
    """
    fast = 1e6
    span = SPAN_S / (4 if quick else 1)
    if name == "shared_prefix":
        per_group = 32 if load_rate is None else max(32, round(load_rate * span / 32))
        return wl.shared_prefix(32, per_group // (2 if quick else 1), 2048, 256, 256, rate=load_rate or fast, seed=1)
    if name == "multi_turn":
        # turns come 5 per session; sessions start at rate / 5 per second
        sessions = 192 if load_rate is None else max(64, round(load_rate / 5 * span))
        return wl.multi_turn(
            sessions // (2 if quick else 1), 5, 1024, 256, 256, think_time_s=5.0, rate=(load_rate or fast) / 5, seed=1
        )
    reqs = wl.mooncake_jsonl(TRACE)
    if quick:
        reqs = wl.limit(reqs, max_requests=1000)
    natural = len(reqs) / max(1e-9, reqs[-1].arrival_s)
    return wl.rescale(reqs, time_scale=(natural / load_rate) if load_rate else 1e-9)


def infinite_cache_hit_rate(reqs: list[wl.SimRequest]) -> float:
    """Share of prompt tokens an infinite shared cache would serve, in arrival order.

    Multi-turn turns arrive after their predecessor; arrival order of the heads plus
    each session's turns in sequence gives the same bound here (sessions share only
    the system prompt).
    """
    return hit_rate(cache_hits(reqs))


def flat_requests(reqs: list) -> list:
    """Every request, turns of a session included, in the order the infinite cache sees them."""
    out = []
    for r in reqs:
        t = r
        while t is not None:
            out.append(t)
            t = t.next_turn
    return out


def cache_hits(reqs: list, capacity_tokens: int | None = None) -> list[tuple[int, int]]:
    """(prompt tokens, tokens the cache holds) per request, in arrival order, for one shared cache:
    infinite (capacity None: every block seen before, by anyone), or `capacity_tokens` big with
    least-recently-used eviction, as vLLM evicts (the fleet's KV caches pooled, with no block
    held twice: what perfect cache-affine routing could at best make of them)."""
    cache: OrderedDict[int, None] = OrderedDict()
    limit = None if capacity_tokens is None else capacity_tokens // CANONICAL_BLOCK_TOKENS
    out = []
    for r in flat_requests(reqs):
        canon = (
            content_block_hashes(
                r.content_ids, r.content_block_tokens, r.prompt_tokens + r.output_tokens, CANONICAL_BLOCK_TOKENS
            )
            if r.content_ids
            else []
        )
        n = 0
        for h in canon[: (r.prompt_tokens - 1) // CANONICAL_BLOCK_TOKENS]:
            if h not in cache:
                break
            n += 1
        out.append((r.prompt_tokens, n * CANONICAL_BLOCK_TOKENS))
        for h in canon[: (r.prompt_tokens + r.output_tokens) // CANONICAL_BLOCK_TOKENS]:
            cache[h] = None
            cache.move_to_end(h)
        while limit is not None and len(cache) > limit:
            cache.popitem(last=False)
    return out


def hit_rate(hits: list[tuple[int, int]]) -> float:
    return sum(c for _, c in hits) / max(1, sum(p for p, _ in hits))


def simulate(reqs: list[wl.SimRequest], cluster: str, policy: str) -> dict:
    arch = resolve_arch("llama3-8b")
    instances = build_instances(arch, parse_cluster(cluster, arch))
    result = Simulator(arch, arch.name, instances, build_pipeline(PROFILES[policy], seed=0), sample_interval_s=0).run(
        reqs
    )
    s = summarize_sim(result, parse_slo(SLO), details=False)
    keys = (
        "p50_ttft_ms",
        "p90_ttft_ms",
        "p99_ttft_ms",
        "p50_tpot_ms",
        "p90_tpot_ms",
        "request_throughput",
        "request_goodput",
        "output_throughput",
        "prefix_cache_hit_rate",
        "slo_attainment",
        "completed",
        "failed",
        "preemptions",
        "duration",
        "utilization",
    )
    return {k: s[k] for k in keys}


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cases = data["cases"]
    workloads = list(dict.fromkeys(c["workload"] for c in cases))
    fleets = list(dict.fromkeys(c["fleet"] for c in cases))
    fig, axes = plt.subplots(
        len(workloads), len(fleets), figsize=(5.2 * len(fleets), 3.6 * len(workloads)), squeeze=False
    )
    for i, wname in enumerate(workloads):
        for j, fleet in enumerate(fleets):
            ax = axes[i][j]
            for policy in POLICIES:
                pts = [
                    (c["load"], c["results"][policy]["p90_ttft_ms"])
                    for c in cases
                    if c["workload"] == wname and c["fleet"] == fleet
                ]
                if pts:
                    ax.plot(*zip(*pts), "o-", label=policy, lw=2.5 if policy == "tessera" else 1.2)
            ax.set_yscale("log")
            ax.set_title(f"{wname}, {fleet}", fontsize=10)
            ax.set_xlabel("load (fraction of capacity)")
            ax.set_ylabel("p90 TTFT (ms)")
            ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("Routing policies in tessera sim (Llama-3.1-8B): p90 TTFT by load")
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller workloads, one fleet (a smoke run)")
    p.add_argument("--workloads", default="shared_prefix,multi_turn,mooncake")
    p.add_argument("--fleets", default=",".join(FLEETS))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "routing_policies"))
    p.add_argument(
        "--only",
        default="",
        help="rerun just these policies (comma-separated) on the cases and rates of the existing --out "
        "JSON, keeping the others' figures: for a change to one profile",
    )
    args = p.parse_args()
    if args.only:
        return rerun(args.only.split(","), Path(args.out), args.quick)
    fleets = [f for f in args.fleets.split(",") if f]
    if args.quick:
        fleets = fleets[:1]
    cases = []
    started = time.monotonic()
    for wname in args.workloads.split(","):
        for fleet in fleets:
            cluster = FLEETS[fleet]
            everything = workload(wname, None, args.quick)
            saturated = {q: simulate(everything, cluster, q)["request_throughput"] for q in CAPACITY_POLICIES}
            capacity = max(saturated.values())
            print(
                f"{wname} on {fleet}: capacity {capacity:.2f} req/s (best of "
                + ", ".join(f"{q} {v:.1f}" for q, v in saturated.items())
                + " with all queued at once)",
                flush=True,
            )
            for load in LOADS:
                reqs = workload(wname, load * capacity, args.quick)
                bound = infinite_cache_hit_rate(reqs)
                results = {}
                for policy in POLICIES:
                    results[policy] = simulate(reqs, cluster, policy)
                    r = results[policy]
                    print(
                        f"  load {load:.0%} {policy:<13} "
                        f"TTFT p50/p90 {r['p50_ttft_ms']:8.0f} {r['p90_ttft_ms']:8.0f} ms  "
                        f"TPOT p50/p90 {r['p50_tpot_ms']:5.1f} {r['p90_tpot_ms']:5.1f} ms  "
                        f"{r['request_throughput']:6.2f} req/s  goodput {r['request_goodput']:6.2f}  "
                        f"hit {r['prefix_cache_hit_rate']:5.1%}  [{time.monotonic() - started:5.0f} s]",
                        flush=True,
                    )
                others = min(results[q]["p90_ttft_ms"] for q in POLICIES if q != "tessera")
                best_other = min((q for q in POLICIES if q != "tessera"), key=lambda q: results[q]["p90_ttft_ms"])
                gain = others / max(1e-9, results["tessera"]["p90_ttft_ms"])
                print(
                    f"  -> tessera p90 TTFT {gain:.2f}x better than the best other ({best_other}); "
                    f"infinite-cache hit rate {bound:.1%}",
                    flush=True,
                )
                cases.append(
                    {
                        "workload": wname,
                        "fleet": fleet,
                        "cluster": cluster,
                        "load": load,
                        "rate": load * capacity,
                        "capacity_req_s": capacity,
                        "infinite_cache_hit_rate": bound,
                        "best_other": best_other,
                        "tessera_p90_ttft_gain": gain,
                        "results": results,
                    }
                )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    data = {"slo": SLO, "policies": POLICIES, "cases": cases}
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    plot(data, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


def rerun(policies: list[str], out: Path, quick: bool) -> int:
    """Re-simulate `policies` on the saved cases (same loads in req/s), and recompute the comparisons."""
    data = json.loads(out.with_suffix(".json").read_text())
    started = time.monotonic()
    for case in data["cases"]:
        reqs = workload(case["workload"], case["rate"], quick)
        for policy in policies:
            case["results"][policy] = r = simulate(reqs, case["cluster"], policy)
            print(
                f"{case['workload']} {case['fleet']} load {case['load']:.0%} {policy}: TTFT p90 "
                f"{r['p90_ttft_ms']:.0f} ms, TPOT p90 {r['p90_tpot_ms']:.1f} ms, goodput {r['request_goodput']:.2f} "
                f"[{time.monotonic() - started:.0f} s]",
                flush=True,
            )
        others = [q for q in POLICIES if q != "tessera"]
        case["best_other"] = min(others, key=lambda q: case["results"][q]["p90_ttft_ms"])
        case["tessera_p90_ttft_gain"] = case["results"][case["best_other"]]["p90_ttft_ms"] / max(
            1e-9, case["results"]["tessera"]["p90_ttft_ms"]
        )
    out.with_suffix(".json").write_text(json.dumps(data, indent=1))
    plot(data, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
