"""How low p90 TTFT can go in each routing case, whatever the router does (issue 4's 1.5x goal).

For every case of benchmarks/results/routing_policies.json, the same requests at the same rate,
and two floors from the performance model the simulator prices steps with:

- **idle floor** (a hard bound): each request's prompt, less what an infinite shared cache would
  already hold (every block seen before, by anyone, in arrival order), prefilled chunk by chunk on
  the fastest instance type of the fleet with nothing else running and no queue. No router can do
  better, and no engine with this performance model either.
- the same with the fleet's KV caches **pooled into one LRU cache** (their total size, no block
  held twice, least-recently-used eviction as vLLM's): what perfect cache-affine routing could at
  best keep where the workload's distinct prefixes overflow every cache (Mooncake's 22M distinct
  prompt tokens against 3.4M of KV on 8 x H100). Not a hard bound (eviction order could in
  principle be beaten), but vLLM evicts this way; its hit rate is the reachable counterpart of
  the infinite-cache bound;
- **loaded floor** (an estimate, not a bound): the same prompt beside the mean decode batch the
  fleet must carry at that load (Little's law on the measured output throughput and TPOT of the
  best policy, spread evenly over the instances), plus the rest of the step in progress when it
  arrives (an engine decoding that batch is never idle, and a request joins at the next step
  boundary): a uniformly drawn share of one such step per request.

A 1.5x gain over the best other policy needs p90 TTFT at most best/1.5; where that is below the
idle floor, no router meets the goal in that case; below the loaded floor, none is likely to.

    .venv/bin/python benchmarks/routing_floor.py      # ~1 min; writes results/routing_floor.json
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from routing_policies import cache_hits, hit_rate, workload

from tessera.engine_model.build import build_instances, resolve_arch
from tessera.engine_model.instance import parse_cluster

ROOT = Path(__file__).resolve().parents[1]

RESULTS = ROOT / "benchmarks" / "results"
GOAL = 1.5


def prefill_seconds(timer, chunk: int, prompt: int, cached: int, decodes: list[int]) -> float:
    """Chunked prefill of prompt - cached tokens (at least one: the first token's logits)."""
    done, total = min(cached, prompt - 1), 0.0
    while done < prompt:
        n = min(chunk, prompt - done)
        total += timer(prefill=[(n, done)], decode=decodes)
        done += n
    return total


def floors(hits: list[tuple[int, int]], kinds: dict, batch: int) -> tuple[float, float]:
    """(idle, loaded) p90 floors in ms for these per-request cache hits (see the module docstring)."""
    context = int(np.mean([p for p, _ in hits])) + 128
    residual = np.random.default_rng(0).uniform(size=len(hits))
    idle, loaded = [], []
    for (prompt, cached), u in zip(hits, residual):
        idle.append(min(prefill_seconds(t, c.max_num_batched_tokens, prompt, cached, []) for c, t in kinds.values()))
        loaded.append(
            min(
                prefill_seconds(t, c.max_num_batched_tokens, prompt, cached, [context] * batch)
                + u * t(decode=[context] * batch)
                for c, t in kinds.values()
            )
        )
    return float(np.percentile(idle, 90)) * 1e3, float(np.percentile(loaded, 90)) * 1e3


def case_floor(case: dict, arch) -> dict:
    reqs = workload(case["workload"], case["rate"], quick=False)
    built = build_instances(arch, parse_cluster(case["cluster"], arch))
    kinds = {spec.label: (cfg, timer) for spec, cfg, timer in built}
    pooled_kv = sum(cfg.num_blocks * cfg.block_size for _, cfg, _ in built)
    infinite, pooled = cache_hits(reqs), cache_hits(reqs, pooled_kv)
    best = case["results"][case["best_other"]]
    # Little's law: concurrent decodes = output tokens per second x seconds per token, per instance
    batch = round(best["output_throughput"] * best["p50_tpot_ms"] / 1e3 / len(built))
    idle_p90, loaded_p90 = floors(infinite, kinds, batch)
    pooled_idle_p90, pooled_loaded_p90 = floors(pooled, kinds, batch) if pooled != infinite else (idle_p90, loaded_p90)
    target = best["p90_ttft_ms"] / GOAL
    tessera = case["results"]["tessera"]
    return {
        "workload": case["workload"],
        "fleet": case["fleet"],
        "load": case["load"],
        "best_other": case["best_other"],
        "best_other_p90_ms": best["p90_ttft_ms"],
        "tessera_p90_ms": tessera["p90_ttft_ms"],
        "goal_p90_ms": target,
        "idle_floor_p90_ms": idle_p90,
        "loaded_floor_p90_ms": loaded_p90,
        "pooled_lru_idle_floor_p90_ms": pooled_idle_p90,
        "pooled_lru_loaded_floor_p90_ms": pooled_loaded_p90,
        "mean_decode_batch": batch,
        "pooled_kv_tokens": pooled_kv,
        "infinite_cache_hit_rate": hit_rate(infinite),
        "pooled_lru_hit_rate": hit_rate(pooled),
        "tessera_hit_rate": tessera["prefix_cache_hit_rate"],
        "best_other_hit_rate": best["prefix_cache_hit_rate"],
    }


def verdict(r: dict) -> str:
    goal = r["goal_p90_ms"]
    if goal < r["idle_floor_p90_ms"]:
        return "no: below the idle floor"
    if goal < r["pooled_lru_idle_floor_p90_ms"]:
        return "no: below the idle floor with the pooled LRU cache"
    if goal < max(r["loaded_floor_p90_ms"], r["pooled_lru_loaded_floor_p90_ms"]):
        return "unlikely: below the loaded floor"
    return "yes"


def table(rows: list[dict]) -> str:
    lines = [
        "| workload | fleet | load | best other p90 | goal (best / 1.5) | idle floor p90 (infinite / pooled LRU cache) "
        "| loaded floor p90 | tessera p90 | goal reachable? | hit rate: tessera / pooled LRU / infinite |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['workload']} | {r['fleet']} | {r['load']:.0%} | {r['best_other_p90_ms']:.0f} ms "
            f"({r['best_other']}) | {r['goal_p90_ms']:.0f} ms | {r['idle_floor_p90_ms']:.0f} / "
            f"{r['pooled_lru_idle_floor_p90_ms']:.0f} ms | {r['pooled_lru_loaded_floor_p90_ms']:.0f} ms | "
            f"{r['tessera_p90_ms']:.0f} ms | {verdict(r)} | {r['tessera_hit_rate']:.0%} / "
            f"{r['pooled_lru_hit_rate']:.0%} / {r['infinite_cache_hit_rate']:.0%} |"
        )
    return "\n".join(lines)


def main() -> int:
    data = json.loads((RESULTS / "routing_policies.json").read_text())
    arch = resolve_arch("llama3-8b")
    rows = []
    for case in data["cases"]:
        rows.append(case_floor(case, arch))
        r = rows[-1]
        print(
            f"{r['workload']:<13} {r['fleet']:<16} {r['load']:.0%}: goal {r['goal_p90_ms']:7.0f} ms, idle floor "
            f"{r['idle_floor_p90_ms']:7.0f} ms ({r['pooled_lru_idle_floor_p90_ms']:.0f} with the pooled LRU cache), "
            f"tessera {r['tessera_p90_ms']:7.0f} ms: {verdict(r)}",
            flush=True,
        )
    (RESULTS / "routing_floor.json").write_text(json.dumps(rows, indent=1))
    text = table(rows)
    (RESULTS / "routing_floor.md").write_text(text + "\n")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
