"""Placement policies on real vLLM CPU workers: Tessera's router with several profiles vs vllm-router.

Starts `tessera up --model tiny --workers 2` (each worker pinned to its own
core) and drives one shared-prefix workload (G groups of prompts sharing a
long prefix, interleaved at random, Poisson arrivals) with `tessera bench`
through, in turn:

- Tessera's router asking the scheduler for each placement profile
  (round_robin, least_loaded, cache_aware, tessera); one extra router process
  per profile, started for its run and stopped after it, so the workers are
  never restarted;
- vllm-router (PyPI vllm-router) with ``--policy cache_aware`` and
  ``--worker-urls`` set to the workers' own OpenAI HTTP APIs (vLLM's app on
  the same engines).

The request rate is a fraction (``--load``, 0.7) of what the two workers
sustain, measured first with a short saturating run. Every run uses its own
seed, so its prefixes are new to the workers' caches (no run warms the next)
and none has a warm-up. The prefix-cache hit rate is the delta of the
workers' ``vllm:prefix_cache_hits_total`` / ``vllm:prefix_cache_queries_total``
over the run, scraped from each worker's ``/metrics``; the per-worker share
of prompt tokens shows how the router balanced. Saves
benchmarks/results/router_comparison.{json,png}.

    python benchmarks/router_comparison.py [--run-seconds 90] [--load 0.7]
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench_cluster import (
    TESSERA,
    Processes,
    prepare_dirs,
    save_results,
    sigterm_exits,
    start_cluster,
    start_router,
    start_vllm_router,
    worker_addresses,
)

from tessera.runtime.models.registry import resolve

ROOT = Path(__file__).resolve().parent.parent

PROFILES = ("round_robin", "least_loaded", "cache_aware", "tessera")
CACHE_METRICS = ("vllm:prefix_cache_hits", "vllm:prefix_cache_queries")


@dataclass
class Run:
    """One router's results on the workload."""

    router: str
    seed: int
    completed: int
    failed: int
    duration_s: float
    request_throughput: float
    output_throughput: float
    p50_ttft_ms: float
    p90_ttft_ms: float
    p50_tpot_ms: float
    p90_tpot_ms: float
    prefix_hit_rate: float
    worker_token_share: list[float]
    ttfts_ms: list[float] = field(repr=False)


def cache_counters(http_address: str) -> dict[str, float]:
    """The worker's prefix-cache counters (tokens), summed over label sets."""
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"http://{http_address}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    totals = dict.fromkeys(CACHE_METRICS, 0.0)
    for family in text_string_to_metric_families(text):
        if family.name in totals:
            totals[family.name] += sum(s.value for s in family.samples if s.name.endswith("_total"))
    return totals


def cache_delta(before: list[dict[str, float]], after: list[dict[str, float]]) -> tuple[float, list[float]]:
    """(hit rate over the run, each worker's share of the prompt tokens it was asked to prefill)."""
    hits = sum(a["vllm:prefix_cache_hits"] - b["vllm:prefix_cache_hits"] for a, b in zip(after, before))
    queries = [a["vllm:prefix_cache_queries"] - b["vllm:prefix_cache_queries"] for a, b in zip(after, before)]
    total = sum(queries)
    return (hits / total if total else 0.0), [q / total if total else 0.0 for q in queries]


def run_bench(
    base_url: str, args: argparse.Namespace, seed: int, label: str, prompts_per_group: int, rate: float, out_dir: Path
) -> dict[str, Any]:
    """`tessera bench` on the shared-prefix workload, no warm-up; its saved result."""
    spec = resolve(args.model)
    cmd = [
        *TESSERA,
        "bench",
        "--backend",
        "openai",
        "--base-url",
        base_url,
        "--model",
        spec.name,
        "--tokenizer",
        spec.path,
        "--dataset",
        "shared-prefix",
        "--shared-prefix-groups",
        str(args.groups),
        "--prompts-per-group",
        str(prompts_per_group),
        "--shared-prefix-len",
        str(args.prefix_len),
        "--question-len",
        str(args.question_len),
        "--random-output-len",
        str(args.output_len),
        "--request-rate",
        str(rate),
        "--seed",
        str(seed),
        "--warmup",
        "0",
        "--percentiles",
        "50,90,99",
        "--label",
        label,
        "--ignore-eos",  # every request its full length, as these runs always had (bench used to default to it)
        "--save-result",
        "--save-detailed",  # the per-request lists the CDFs are drawn from
        "--result-dir",
        str(out_dir),
        "--result-filename",
        f"{label}.json",
    ]
    print(
        f"[router_comparison] {label}: {args.groups}x{prompts_per_group} prompts at {rate:.2f} req/s, seed {seed}",
        file=sys.stderr,
        flush=True,
    )
    with open(out_dir / f"{label}.log", "w") as log:  # its summary; its progress goes to stderr
        subprocess.run(cmd, cwd=ROOT, stdout=log, check=False)  # exit 1 when some requests failed
    path = out_dir / f"{label}.json"
    if not path.exists():
        raise SystemExit(f"tessera bench saved no result for {label}")
    return json.loads(path.read_text())


def measured_run(
    router: str,
    base_url: str,
    args: argparse.Namespace,
    seed: int,
    prompts_per_group: int,
    rate: float,
    http_addresses: list[str],
    out_dir: Path,
) -> Run:
    before = [cache_counters(a) for a in http_addresses]
    r = run_bench(base_url, args, seed, router.replace("/", "-"), prompts_per_group, rate, out_dir)
    hit_rate, share = cache_delta(before, [cache_counters(a) for a in http_addresses])
    return Run(
        router,
        seed,
        r["completed"],
        r["failed"],
        r["duration"],
        r["request_throughput"],
        r["output_throughput"],
        r["median_ttft_ms"],
        r["p90_ttft_ms"],
        r["median_tpot_ms"],
        r["p90_tpot_ms"],
        hit_rate,
        share,
        [round(t * 1000, 2) for t, e in zip(r["ttfts"], r["errors"]) if not e],
    )


def sustained_rate(base_url: str, args: argparse.Namespace, out_dir: Path) -> float:
    """Requests/s the workers sustain: the same workload, all sent at once, through a round-robin router."""
    per_group = max(1, args.calibration_prompts // args.groups)
    r = run_bench(base_url, args, args.seed + 1000, "calibration", per_group, math.inf, out_dir)
    return r["request_throughput"]


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    runs = summary["runs"]
    names = [r["router"] for r in runs]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.5))
    for r in runs:
        values = np.sort(r["ttfts_ms"])
        axes[0].plot(values, np.linspace(0, 1, len(values)), label=r["router"])
    axes[0].set_xscale("log")
    axes[0].set(title="time to first token", xlabel="ms (log)", ylabel="fraction of requests")
    axes[0].legend(fontsize=8)
    x = np.arange(len(runs))
    for offset, key, label in ((-0.2, "p50_tpot_ms", "p50"), (0.2, "p90_tpot_ms", "p90")):
        axes[1].bar(x + offset, [r[key] for r in runs], 0.4, label=label)
    axes[1].set(title="time per output token", ylabel="ms")
    axes[1].legend()
    axes[2].bar(x, [r["prefix_hit_rate"] * 100 for r in runs], 0.6, color="C2")
    axes[2].set(title="prefix-cache hit rate (tokens, both workers)", ylabel="%", ylim=(0, 100))
    for ax in axes[1:]:
        ax.set_xticks(x, names, rotation=20, ha="right", fontsize=8)
    for ax in axes:
        ax.grid(alpha=0.3)
    w = summary["workload"]
    fig.suptitle(
        f"{summary['model']} on {summary['workers']} vLLM CPU workers: {w['groups']}x{w['prompts_per_group']} "
        f"prompts, {w['prefix_len']}-token shared prefix + {w['question_len']}, {w['output_len']} out, "
        f"{w['request_rate']:.2f} req/s ({summary['load']:.0%} of {summary['sustained_rate']:.2f})"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def print_table(runs: list[dict]) -> None:
    print(
        f"\n{'router':<26} {'ok':>4} {'fail':>4} {'req/s':>6} {'tok/s':>7} {'TTFT p50':>9} {'TTFT p90':>9} "
        f"{'TPOT p50':>9} {'TPOT p90':>9} {'hit %':>6}  worker share"
    )
    for r in runs:
        share = "/".join(f"{s:.0%}" for s in r["worker_token_share"])
        print(
            f"{r['router']:<26} {r['completed']:>4} {r['failed']:>4} {r['request_throughput']:>6.2f} "
            f"{r['output_throughput']:>7.1f} {r['p50_ttft_ms']:>9.1f} {r['p90_ttft_ms']:>9.1f} "
            f"{r['p50_tpot_ms']:>9.2f} {r['p90_tpot_ms']:>9.2f} {r['prefix_hit_rate'] * 100:>6.1f}  {share}"
        )
    print("(ms; hit % = prefix-cache hits / queries in tokens over both workers; share = prompt tokens per worker)")


def compare(procs: Processes, args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    """Start the cluster, find the rate, run every router in turn; the summary."""
    _, _, etcd = start_cluster(procs, args.model, log_dir, args.workers)
    http_addresses = [http for _, http in worker_addresses(etcd)]
    if len(http_addresses) != args.workers or not all(http_addresses):
        raise SystemExit(f"expected {args.workers} workers with OpenAI HTTP APIs, got {http_addresses}")
    bench_dir = log_dir / "bench"
    bench_dir.mkdir(exist_ok=True)
    sustained = args.sustained_rate
    if not sustained:
        port = start_router(procs, etcd, log_dir / "router-calibration.log", "round_robin")
        sustained = sustained_rate(f"http://127.0.0.1:{port}", args, bench_dir)
        procs.stop_last()
    rate = args.load * sustained
    per_group = args.prompts_per_group or max(1, math.ceil(rate * args.run_seconds / args.groups))
    print(
        f"[router_comparison] workers sustain {sustained:.2f} req/s; running at {rate:.2f} req/s, "
        f"{args.groups}x{per_group} prompts per run",
        file=sys.stderr,
        flush=True,
    )
    runs = []
    for i, router in enumerate(
        [f"tessera/{p}" for p in args.profiles] + ([] if args.no_vllm_router else ["vllm-router/cache_aware"])
    ):
        if router.startswith("tessera/"):
            port = start_router(procs, etcd, log_dir / f"router-{router[8:]}.log", router[8:])
        else:
            port = start_vllm_router(procs, [f"http://{a}" for a in http_addresses], log_dir / "vllm-router.log")
        run = measured_run(
            router, f"http://127.0.0.1:{port}", args, args.seed + i, per_group, rate, http_addresses, bench_dir
        )
        procs.stop_last()
        runs.append(asdict(run))
        print_table(runs[-1:])
    return {
        "model": resolve(args.model).name,
        "workers": args.workers,
        "load": args.load,
        "sustained_rate": sustained,
        "workload": {
            "groups": args.groups,
            "prompts_per_group": per_group,
            "prefix_len": args.prefix_len,
            "question_len": args.question_len,
            "output_len": args.output_len,
            "request_rate": rate,
        },
        "runs": runs,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--profiles", nargs="+", default=list(PROFILES), help="Tessera placement profiles to run")
    p.add_argument("--no-vllm-router", action="store_true")
    p.add_argument("--groups", type=int, default=8)
    p.add_argument("--prompts-per-group", type=int, default=0, help="0: enough for --run-seconds at the rate")
    p.add_argument("--prefix-len", type=int, default=1024)
    p.add_argument("--question-len", type=int, default=64)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument("--run-seconds", type=float, default=90.0, help="target length of each run")
    p.add_argument("--load", type=float, default=0.7, help="request rate as a fraction of the sustained rate")
    p.add_argument("--sustained-rate", type=float, default=0.0, help="req/s the workers sustain (0: measure it)")
    p.add_argument("--calibration-prompts", type=int, default=96)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "router_comparison"))
    p.add_argument("--log-dir", default="/tmp/tessera-router-comparison", help="logs of every process it starts")
    args = p.parse_args()
    log_dir = prepare_dirs(args.out, args.log_dir)
    sigterm_exits()
    with Processes() as procs:
        summary = compare(procs, args, log_dir)
    save_results(summary, args.out, plot, lambda s: print_table(s["runs"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
