"""What the router adds: the same requests straight to a worker's engine and through the router.

Starts a cluster with `tessera up` (one worker, pinned to its own core so the
router and the clients do not compete with the engine), then sends each prompt
four ways, back to back and in rotating order so that all see the same engine
state:

- ``worker-grpc``: the worker's Generate API directly (no router, no scheduler),
- ``router-grpc``: the router's gRPC API (placement + relay),
- ``worker-http``: vLLM's own OpenAI server on the worker's engine (what `vllm serve` is),
- ``router-http``: the router's OpenAI API (placement + relay + SSE).

Each protocol is compared with itself, so the differences are the router's
cost alone: router-grpc minus worker-grpc and router-http minus worker-http,
per prompt (paired). Saves JSON and a plot under benchmarks/results/.

``--zero-latency`` measures the same gRPC pair against a worker with no engine
(benchmarks/zero_latency_worker.py): the router's own cost, without an engine
competing with it for this machine's two cores.

    python benchmarks/router_overhead.py [--model tiny] [--prompts 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from bench_cluster import (
    Processes,
    run_async,
    sigterm_exits,
    start_cluster,
    start_zero_latency_cluster,
    worker_addresses,
)

from tessera.bench.clients import OpenAIClient, RouterGrpcClient, WorkerGrpcClient
from tessera.bench.datasets import random_requests
from tessera.runtime.models.registry import resolve
from tessera.runtime.models.tokenizer import ModelTokenizer

ROOT = Path(__file__).resolve().parent.parent

PATHS = ("worker-grpc", "router-grpc", "worker-http", "router-http")
PAIRS = (("router-grpc", "worker-grpc"), ("router-http", "worker-http"))


async def measure(
    args: argparse.Namespace,
    port: int,
    grpc_port: int,
    worker: tuple[str, str],
    served: str,
    paths: tuple[str, ...] = PATHS,
    pairs: tuple = PAIRS,
) -> dict:
    tok = ModelTokenizer(resolve(args.model).path)
    special = set(tok.tokenizer.get_added_tokens_decoder())
    vocab = [i for i in range(tok.tokenizer.get_vocab_size()) if i not in special]
    requests = random_requests(args.prompts + 5, args.input_len, args.output_len, vocab, seed=0)
    make = {
        "worker-grpc": lambda: WorkerGrpcClient(worker[0], ignore_eos=True),
        "router-grpc": lambda: RouterGrpcClient(f"127.0.0.1:{grpc_port}", served, ignore_eos=True),
        "worker-http": lambda: OpenAIClient(f"http://{worker[1]}", served, ignore_eos=True),
        "router-http": lambda: OpenAIClient(f"http://127.0.0.1:{port}", served, ignore_eos=True),
    }
    clients = {p: make[p]() for p in paths}
    results: dict[str, list] = {p: [] for p in paths}
    started = time.perf_counter()
    for i, req in enumerate(requests):
        order = paths[i % len(paths) :] + paths[: i % len(paths)]  # rotate who goes first
        for path in order:
            outcome = await clients[path].send(req, f"ovh-{i}-{path}")
            if not outcome.success:
                raise SystemExit(f"{path} failed: {outcome.error}")
            if i >= 5:  # the first few warm up connections and caches
                results[path].append(outcome)
        if i % 20 == 0:
            print(
                f"[router_overhead] {i}/{len(requests)} prompts, {time.perf_counter() - started:.0f}s",
                file=sys.stderr,
                flush=True,
            )
    for c in clients.values():
        await c.close()

    summary: dict = {
        "model": served,
        "prompts": args.prompts,
        "input_len": args.input_len,
        "output_len": args.output_len,
        "paths": {},
    }
    for path, outs in results.items():
        ttft = np.array([o.ttft for o in outs]) * 1000
        itl = np.array([x for o in outs for x in o.itl]) * 1000
        summary["paths"][path] = {
            "median_ttft_ms": float(np.median(ttft)),
            "p90_ttft_ms": float(np.percentile(ttft, 90)),
            "median_itl_ms": float(np.median(itl)),
            "p90_itl_ms": float(np.percentile(itl, 90)),
            "ttfts_ms": ttft.tolist(),
            "per_request_median_itl_ms": [float(np.median(o.itl)) * 1000 for o in outs if o.itl],
        }
    summary["pairs"] = [list(p) for p in pairs]
    for path, base in pairs:
        direct = results[base]
        d_ttft = [(r.ttft - w.ttft) * 1000 for r, w in zip(results[path], direct)]
        d_itl = [
            (statistics.median(r.itl) - statistics.median(w.itl)) * 1000
            for r, w in zip(results[path], direct)
            if r.itl and w.itl
        ]
        summary[f"{path}_minus_{base}"] = {
            "median_ttft_ms": float(np.median(d_ttft)),
            "p90_ttft_ms": float(np.percentile(d_ttft, 90)),
            "median_itl_ms": float(np.median(d_itl)),
            "p90_itl_ms": float(np.percentile(d_itl, 90)),
        }
    return summary


def run_vllm_bench(args: argparse.Namespace, port: int, served: str, result_dir: Path) -> None:
    """vLLM's own benchmark client against the router: the router is a drop-in OpenAI endpoint."""
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "vllm_bench_serve.py"),
        "--backend",
        "openai",
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--endpoint",
        "/v1/completions",
        "--model",
        served,
        "--tokenizer",
        resolve(args.model).path,
        "--dataset-name",
        "random",
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--num-prompts",
        str(args.vllm_bench_prompts),
        "--request-rate",
        "4",
        "--ignore-eos",
        "--seed",
        "0",
        "--percentile-metrics",
        "ttft,tpot,itl,e2el",
        "--metric-percentiles",
        "50,90,99",
        "--save-result",
        "--result-dir",
        str(result_dir),
        "--result-filename",
        "vllm_bench_serve_router.json",
    ]
    print("[router_overhead] running vllm bench serve against the router", file=sys.stderr, flush=True)
    subprocess.run(cmd, check=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})


def plot(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for path in summary["paths"]:
        data = summary["paths"][path]
        for ax, key, title in (
            (axes[0], "ttfts_ms", "time to first token"),
            (axes[1], "per_request_median_itl_ms", "inter-token latency (median per request)"),
        ):
            values = np.sort(data[key])
            ax.plot(values, np.linspace(0, 1, len(values)), label=path)
            ax.set_title(title)
            ax.set_xlabel("ms")
    axes[0].set_ylabel("fraction of requests")
    for ax, key in ((axes[0], "ttfts_ms"), (axes[1], "per_request_median_itl_ms")):
        p99 = max(float(np.percentile(d[key], 99)) for d in summary["paths"].values())
        ax.set_xlim(0, p99 * 1.15)  # the slowest 1% would squash the curves
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"Router overhead: {summary['model']} ({summary.get('backend', 'vLLM')}), {summary['input_len']} in / "
        f"{summary['output_len']} out, one request at a time"
    )
    fig.tight_layout()
    fig.savefig(out, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny")
    p.add_argument("--prompts", type=int, default=200)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=32)
    p.add_argument(
        "--out",
        default=None,
        help="path prefix of the JSON and plot (default: benchmarks/results/router_overhead[_zero_latency])",
    )
    p.add_argument(
        "--zero-latency",
        action="store_true",
        help="measure against an engine-less worker instead of a vLLM worker (router cost alone)",
    )
    p.add_argument(
        "--vllm-bench-prompts",
        type=int,
        default=100,
        help="also run vLLM's own `vllm bench serve` against the router with this many prompts (0: skip)",
    )
    args = p.parse_args()
    if args.out is None:  # the two kinds of run keep their own results
        name = "router_overhead_zero_latency" if args.zero_latency else "router_overhead"
        args.out = str(ROOT / "benchmarks" / "results" / name)
    log_dir = Path(args.out + "-logs")
    log_dir.mkdir(parents=True, exist_ok=True)
    served = resolve(args.model).name
    sigterm_exits()
    with Processes() as procs:
        if args.zero_latency:
            port, grpc_port, etcd = start_zero_latency_cluster(procs, args.model, log_dir)
            summary = run_async(
                measure(
                    args,
                    port,
                    grpc_port,
                    worker_addresses(etcd)[0],
                    served,
                    ("worker-grpc", "router-grpc"),
                    (("router-grpc", "worker-grpc"),),
                )
            )
            summary["backend"] = "zero-latency worker"
        else:
            port, grpc_port, etcd = start_cluster(procs, args.model, log_dir)
            summary = run_async(measure(args, port, grpc_port, worker_addresses(etcd)[0], served))
            summary["backend"] = "vLLM CPU worker"
            if args.vllm_bench_prompts:
                run_vllm_bench(args, port, served, Path(args.out).parent)
    Path(args.out + ".json").write_text(json.dumps(summary))
    plot(summary, Path(args.out + ".png"))
    print(f"\n{'path':<14} {'TTFT p50':>9} {'TTFT p90':>9} {'ITL p50':>8} {'ITL p90':>8}   (ms)")
    for path, d in summary["paths"].items():
        ttft, itl = (
            f"{d['median_ttft_ms']:>9.2f} {d['p90_ttft_ms']:>9.2f}",
            f"{d['median_itl_ms']:>8.2f} {d['p90_itl_ms']:>8.2f}",
        )
        print(f"{path:<14} {ttft} {itl}")
    for path, base in summary["pairs"]:
        d = summary[f"{path}_minus_{base}"]
        print(
            f"{path} minus {base}, paired: TTFT p50 {d['median_ttft_ms']:+.2f} ms (p90 {d['p90_ttft_ms']:+.2f}), "
            f"ITL p50 {d['median_itl_ms']:+.2f} ms"
        )
    print(f"saved {args.out}.json and {args.out}.png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
