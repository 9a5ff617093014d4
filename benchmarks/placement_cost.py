"""How long one placement decision takes with 16, 128 and 1024 workers.

The scheduler's own work per request: build the candidate list (cached worker
snapshots), run the profile's filters and scorers, look the prompt up in the
prefix index, pick. The index holds what a busy fleet would advertise: every
worker caches some of 64 shared system prompts plus private conversations,
about 1,000 blocks of 16 tokens per worker (1M worker-block entries, 244k distinct
blocks, at 1024 workers).
Prompts are 2k tokens: a shared system prompt and a private question.

    taskset -c 0 .venv/bin/python benchmarks/placement_cost.py

Writes benchmarks/results/placement_cost.json and .png. Goal: p99 under 1 ms at 1024 workers.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from pathlib import Path

from tessera.placement.block_hash import token_block_hashes
from tessera.placement.pipeline import load_profile
from tessera.placement.prefix_index import PrefixIndex
from tessera.placement.snapshot import RequestInfo, WorkerSnapshot

ROOT = Path(__file__).resolve().parents[1]

PROFILES = ("round_robin", "least_loaded", "power_of_two", "cache_aware", "llmd", "dynamo", "tessera")
SIZES = (16, 128, 1024)


def fleet(n: int, rng: random.Random) -> tuple[list[WorkerSnapshot], PrefixIndex, list[list[int]]]:
    systems = [token_block_hashes([s * 1_000_003 + t for t in range(1536)], 16) for s in range(64)]
    index = PrefixIndex()
    workers = []
    for i in range(n):
        wid = f"worker-{i:04d}"
        workers.append(
            WorkerSnapshot(
                id=wid,
                address=f"10.0.{i // 250}.{i % 250}:50051",
                model="m",
                accelerator="h100-sxm",
                num_waiting=rng.randint(0, 6),
                num_running=rng.randint(0, 64),
                kv_cache_usage=rng.random(),
                tokens_in_flight=rng.randint(0, 50_000),
                kv_block_size=16,
                kv_capacity_blocks=25_000,
                max_model_len=32_768,
                prefill_tokens_waiting=rng.randint(0, 8000),
                prefill_tokens_per_s=15_000.0,
                decode_base_s=0.008,
                decode_step_s=0.011,
            )
        )
        index.add_worker(wid, 16)
        for s in rng.sample(range(64), 8):
            keys = systems[s]
            for b, k in enumerate(keys):
                index.stored(wid, hash((wid, s, b)), [k])
        for b in range(1000 - 8 * len(systems[0])):
            index.stored(wid, hash((wid, "own", b)), [hash((wid, "own", b))])
    return workers, index, systems


def measure(
    profile: str,
    workers: list[WorkerSnapshot],
    index: PrefixIndex,
    systems: list[list[int]],
    requests: int,
    rng: random.Random,
) -> dict:
    pipeline = load_profile(profile, seed=0)
    prompts = []
    for r in range(requests):
        question = token_block_hashes([rng.getrandbits(20) for _ in range(512)], 16, parent=systems[r % 64][-1])
        prompts.append(
            RequestInfo(
                f"r{r}", "m", 2048, 256, block_hashes=tuple(systems[r % 64] + question), session_id=f"s{r % 500}"
            )
        )
    times = []
    for i, req in enumerate(prompts):
        t = time.perf_counter()
        decision = pipeline.place(req, workers, now=float(i), shared_index=index)
        times.append(time.perf_counter() - t)
        assert decision.worker is not None
    times.sort()
    return {
        "p50_ms": 1e3 * statistics.median(times),
        "p90_ms": 1e3 * times[int(0.9 * len(times))],
        "p99_ms": 1e3 * times[int(0.99 * len(times))],
        "mean_ms": 1e3 * statistics.fmean(times),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=2000)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "placement_cost"))
    args = p.parse_args()
    rng = random.Random(0)
    results: dict[str, dict[str, dict]] = {}
    for n in SIZES:
        workers, index, systems = fleet(n, rng)
        print(f"{n} workers, {len(index)} indexed blocks:", flush=True)
        for profile in PROFILES:
            r = measure(profile, workers, index, systems, args.requests, rng)
            results.setdefault(profile, {})[str(n)] = r
            print(
                f"  {profile:<13} p50 {r['p50_ms']:.3f} ms  p90 {r['p90_ms']:.3f} ms  p99 {r['p99_ms']:.3f} ms",
                flush=True,
            )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps({"requests": args.requests, "results": results}, indent=1))
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for profile in PROFILES:
        ax.plot(
            SIZES,
            [results[profile][str(n)]["p99_ms"] for n in SIZES],
            "o-",
            label=profile,
            lw=2.5 if profile == "tessera" else 1.2,
        )
    ax.axhline(1.0, color="red", ls="--", lw=0.8, label="goal: 1 ms")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("workers")
    ax.set_ylabel("p99 placement time (ms, one core)")
    ax.set_title("One placement decision, by profile and fleet size")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out.with_suffix(".png"), dpi=110)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
