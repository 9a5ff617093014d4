"""Requests per second through a router in front of an instant backend: Tessera's router vs vllm-router.

With a backend that answers at once (benchmarks/zero_latency_worker.py: no
engine; gRPC for Tessera's router, an OpenAI HTTP API for vllm-router, same
process), what limits throughput is the router itself (and the client, and
this machine's cores). A closed-loop client keeps C streams busy for a fixed
time, each sending the next request when the last one ends (streaming,
short prompts, ``max_tokens`` 8), against:

- ``direct``: the backend's own HTTP API, no router (the client's and the
  backend's ceiling on this machine),
- ``tessera/PROFILE``: Tessera's router asking the scheduler for placement
  profile PROFILE (tokenize, place, relay over gRPC); ``round_robin`` is the
  cheapest placement, ``tessera`` the default,
- ``vllm-router``: ``vllm-router --policy cache_aware`` (PyPI vllm-router),
  which fetches token ids from every backend (``/v1/*/render``, then
  ``/tokenize``) for text prompts; token-id prompts on /v1/completions it
  uses as they are.

Targets take turns at each concurrency, so drift hits all alike. Saves
benchmarks/results/router_throughput.{json,png}.

    python benchmarks/router_throughput.py [--concurrency 1 8 32] [--duration 15]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from bench_cluster import (
    Processes,
    prepare_dirs,
    run_async,
    save_results,
    sigterm_exits,
    start_router,
    start_vllm_router,
    start_zero_latency_cluster,
    worker_addresses,
)

from tessera.bench.clients import OpenAIClient
from tessera.bench.datasets import BenchRequest, random_requests
from tessera.bench.results import Outcome
from tessera.runtime.models.registry import resolve
from tessera.runtime.models.tokenizer import ModelTokenizer

ROOT = Path(__file__).resolve().parent.parent

ENDPOINTS = ("/v1/chat/completions", "/v1/completions")
WARMUP_S = 1.0


@dataclass
class Point:
    """One (target, endpoint, concurrency) measurement."""

    target: str
    endpoint: str
    concurrency: int
    requests: int
    errors: int
    duration_s: float
    requests_per_s: float
    p50_latency_ms: float
    p99_latency_ms: float
    p50_ttft_ms: float
    first_error: str = ""


async def closed_loop(
    client: OpenAIClient, prompts: list[BenchRequest], concurrency: int, duration_s: float, label: str
) -> tuple[list[Outcome], float]:
    """``concurrency`` streams, each sending its next request as soon as the last ends, for ``duration_s``.

    Requests in flight at the deadline are finished and counted; the
    duration runs until the last of them ends.
    """
    outcomes: list[Outcome] = []
    start = time.perf_counter()
    deadline = start + duration_s

    async def stream(k: int) -> None:
        i = k
        while time.perf_counter() < deadline:
            outcomes.append(await client.send(prompts[i % len(prompts)], f"{label}-{k}-{i}"))
            i += concurrency

    await asyncio.gather(*(stream(k) for k in range(concurrency)))
    return outcomes, time.perf_counter() - start


def summarize_point(target: str, endpoint: str, concurrency: int, outcomes: list[Outcome], duration_s: float) -> Point:
    ok = [o for o in outcomes if o.success]
    latency = np.array([o.latency for o in ok] or [0.0]) * 1000
    ttft = np.array([o.ttft for o in ok] or [0.0]) * 1000
    errors = [o.error for o in outcomes if not o.success]
    return Point(
        target,
        endpoint,
        concurrency,
        len(ok),
        len(errors),
        duration_s,
        len(ok) / duration_s,
        float(np.percentile(latency, 50)),
        float(np.percentile(latency, 99)),
        float(np.percentile(ttft, 50)),
        errors[0] if errors else "",
    )


async def measure(urls: dict[str, str], args: argparse.Namespace, served: str, tok: ModelTokenizer) -> list[Point]:
    special = set(tok.tokenizer.get_added_tokens_decoder())
    vocab = [i for i in range(tok.tokenizer.get_vocab_size()) if i not in special]
    prompts = random_requests(64, args.input_len, args.max_tokens, vocab, seed=0)
    points = []
    for endpoint in args.endpoints:
        clients = {t: OpenAIClient(urls[t], served, endpoint, ignore_eos=True, decode=tok.decode) for t in urls}
        try:
            for c in args.concurrency:
                for target, client in clients.items():
                    await closed_loop(client, prompts, c, WARMUP_S, f"warm-{target}")
                    outcomes, duration = await closed_loop(client, prompts, c, args.duration, target)
                    point = summarize_point(target, endpoint, c, outcomes, duration)
                    points.append(point)
                    print(
                        f"[router_throughput] {endpoint:<21} c={c:<3} {target:<24} {point.requests_per_s:8.1f} "
                        f"req/s  p50 {point.p50_latency_ms:7.2f} ms  p99 {point.p99_latency_ms:7.2f} ms"
                        f"{'  ' + str(point.errors) + ' errors: ' + point.first_error if point.errors else ''}",
                        file=sys.stderr,
                        flush=True,
                    )
        finally:
            for client in clients.values():
                await client.close()
    return points


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    styles = {e: s for e, s in zip(ENDPOINTS, ("-", "--"))}
    targets = list(dict.fromkeys(p["target"] for p in summary["points"]))
    colors = {t: f"C{i}" for i, t in enumerate(targets)}
    for endpoint in {p["endpoint"] for p in summary["points"]}:
        for target in targets:
            pts = sorted(
                (p for p in summary["points"] if p["target"] == target and p["endpoint"] == endpoint),
                key=lambda p: p["concurrency"],
            )
            if not pts:
                continue
            conc = [p["concurrency"] for p in pts]
            kw = {"color": colors[target], "linestyle": styles.get(endpoint, ":"), "marker": "o"}
            axes[0].plot(conc, [p["requests_per_s"] for p in pts], label=f"{target} {endpoint}", **kw)
            axes[1].plot(conc, [p["p50_latency_ms"] for p in pts], label=f"{target} {endpoint} p50", **kw)
            axes[1].plot(conc, [p["p99_latency_ms"] for p in pts], alpha=0.4, **kw)
    axes[0].set_ylabel("requests/s")
    axes[1].set_ylabel("latency (ms; faint: p99)")
    axes[1].set_yscale("log")
    levels = sorted({p["concurrency"] for p in summary["points"]})
    for ax in axes:
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(c) for c in levels])
        ax.set_xlabel("concurrent streams")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(
        f"Router throughput, zero-latency backend ({summary['workers']} worker(s)), {summary['input_len']} "
        f"tokens in / {summary['max_tokens']} out, {summary['duration_s']:.0f} s per point"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def print_table(points: list[dict]) -> None:
    print(f"\n{'endpoint':<21} {'conc':>4} {'target':<24} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>6}")
    for p in points:
        print(
            f"{p['endpoint']:<21} {p['concurrency']:>4} {p['target']:<24} {p['requests_per_s']:>8.1f} "
            f"{p['p50_latency_ms']:>8.2f} {p['p99_latency_ms']:>8.2f} {p['errors']:>6}"
        )


def start_targets(procs: Processes, args: argparse.Namespace, log_dir: Path) -> dict[str, str]:
    """The zero-latency cluster, a Tessera router per profile and vllm-router; their base URLs by target."""
    _, _, etcd = start_zero_latency_cluster(procs, args.model, log_dir, args.workers, ["--itl-ms", "0"])
    backends = [f"http://{http}" for _, http in worker_addresses(etcd)]
    urls = {"direct": backends[0]}
    for profile in args.profiles:
        port = start_router(procs, etcd, log_dir / f"router-{profile}.log", profile)
        urls[f"tessera/{profile}"] = f"http://127.0.0.1:{port}"
    vr_port = start_vllm_router(procs, backends, log_dir / "vllm-router.log", args.vllm_router_policy)
    urls[f"vllm-router/{args.vllm_router_policy}"] = f"http://127.0.0.1:{vr_port}"
    return urls


def parse_cpus(text: str) -> set[int] | None:
    return {int(c) for c in text.split(",")} if text else None


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny", help="whose tokenizer the routers and the backend use")
    p.add_argument("--workers", type=int, default=1, help="zero-latency workers behind each router")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--duration", type=float, default=15.0, help="seconds per point")
    p.add_argument(
        "--endpoints",
        nargs="+",
        default=list(ENDPOINTS),
        choices=ENDPOINTS,
        help="chat sends text (vllm-router asks the backends for token ids); completions sends token ids",
    )
    p.add_argument("--input-len", type=int, default=16)
    p.add_argument("--max-tokens", type=int, default=8)
    p.add_argument(
        "--profiles",
        nargs="+",
        default=["tessera", "round_robin"],
        help="placement profiles Tessera's router asks for (one router each)",
    )
    p.add_argument("--vllm-router-policy", default="cache_aware")
    p.add_argument("--server-cpus", default="", help="pin routers and backends to these cores (e.g. 1)")
    p.add_argument("--client-cpus", default="", help="pin the load generator (this process) to these cores")
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "router_throughput"))
    p.add_argument("--log-dir", default="/tmp/tessera-router-throughput", help="logs of every process it starts")
    args = p.parse_args()
    log_dir = prepare_dirs(args.out, args.log_dir)
    spec = resolve(args.model)
    sigterm_exits()
    with Processes() as procs:
        if args.server_cpus:
            os.sched_setaffinity(0, parse_cpus(args.server_cpus))  # what this process starts inherits it
        urls = start_targets(procs, args, log_dir)
        if args.client_cpus:
            os.sched_setaffinity(0, parse_cpus(args.client_cpus))
        print(f"[router_throughput] targets {urls}", file=sys.stderr)
        points = run_async(measure(urls, args, spec.name, ModelTokenizer(spec.path)))
    summary = {
        "model": spec.name,
        "workers": args.workers,
        "duration_s": args.duration,
        "input_len": args.input_len,
        "max_tokens": args.max_tokens,
        "profiles": args.profiles,
        "vllm_router_policy": args.vllm_router_policy,
        "server_cpus": args.server_cpus,
        "client_cpus": args.client_cpus,
        "cpu_count": os.cpu_count(),
        "points": [asdict(pt) for pt in points],
    }
    save_results(summary, args.out, plot, lambda s: print_table(s["points"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
