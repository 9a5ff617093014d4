"""``tessera bench``: drive an endpoint with a workload and print/save vllm-bench-style results.

Examples::

    tessera bench --model tiny-llama --num-prompts 200 --request-rate 4
    tessera bench --backend worker-grpc --base-url 127.0.0.1:43121 --model tiny-llama ...
    tessera bench --dataset shared-prefix --shared-prefix-groups 8 --prompts-per-group 8 ...
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

from tessera.bench.clients import Client, OpenAIClient, RouterGrpcClient, WorkerGrpcClient
from tessera.bench.datasets import random_requests, shared_prefix_requests
from tessera.bench.results import summarize
from tessera.bench.runner import run_load


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        default="openai",
        choices=["openai", "tessera-grpc", "worker-grpc"],
        help="openai: the HTTP API; tessera-grpc: the router's gRPC API; worker-grpc: one worker",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help="http://host:port for openai (default http://127.0.0.1:8000); host:port for the gRPC backends",
    )
    p.add_argument(
        "--endpoint",
        default="/v1/completions",
        choices=["/v1/completions", "/v1/chat/completions"],
        help="openai backend: the API to call",
    )
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY", ""),
        help="openai backend: sent as Authorization: Bearer KEY (default: OPENAI_API_KEY; none if unset)",
    )
    p.add_argument("--tokenizer", default=None, help="model folder whose tokenizer draws the random prompts")
    p.add_argument(
        "--dataset",
        default="random",
        choices=["random", "shared-prefix"],
        help="random prompts, or groups sharing a prefix",
    )
    p.add_argument("--num-prompts", type=int, default=100, help="requests to send")
    p.add_argument("--random-input-len", type=int, default=128, help="random: prompt tokens")
    p.add_argument("--random-output-len", type=int, default=64, help="random: tokens to generate")
    p.add_argument("--random-range-ratio", type=float, default=0.0, help="random: lengths vary by +- this fraction")
    p.add_argument("--shared-prefix-groups", type=int, default=4, help="shared-prefix: groups")
    p.add_argument("--prompts-per-group", type=int, default=8, help="shared-prefix: prompts per group")
    p.add_argument("--shared-prefix-len", type=int, default=512, help="shared-prefix: tokens of each group's prefix")
    p.add_argument("--question-len", type=int, default=64, help="shared-prefix: tokens after the prefix")
    p.add_argument("--request-rate", type=float, default=math.inf, help="requests/s (inf: all at once)")
    p.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of arrivals; 1 is Poisson")
    p.add_argument(
        "--max-concurrency", type=int, default=None, help="most requests in flight at once (default: no limit)"
    )
    p.add_argument("--temperature", type=float, default=0.0, help="sampling temperature")
    p.add_argument("--no-ignore-eos", action="store_true", help="let requests stop at end-of-sequence")
    p.add_argument("--seed", type=int, default=0, help="random seed of the prompts and arrivals")
    p.add_argument("--percentiles", default="50,90,99", help="latency percentiles to report, comma-separated")
    p.add_argument("--goodput", nargs="*", default=[], metavar="KEY:MS", help="SLOs for goodput, e.g. ttft:500 tpot:50")
    p.add_argument("--warmup", type=int, default=2, help="requests sent (and discarded) before measuring")
    p.add_argument(
        "--policy",
        default=None,
        help="placement profiles to compare, comma-separated (openai backend: sent as x-tessera-profile); "
        "each gets its own prompts of the same shape, so no run warms the caches for the next",
    )
    p.add_argument("--label", default=None, help="a name for this run in the result")
    p.add_argument("--save-result", action="store_true", help="write the result as JSON")
    p.add_argument("--result-dir", default="benchmarks/results", help="where --save-result writes")
    p.add_argument(
        "--result-filename", default=None, help="file name of the result (default: from backend, model, time)"
    )


def _tokenizer_path(args: argparse.Namespace) -> str:
    if args.tokenizer:
        return args.tokenizer
    from tessera.runtime.models.registry import resolve

    for candidate in (args.model,):
        spec = resolve(candidate)
        if Path(spec.path).is_dir():
            return spec.path
    if args.backend == "openai":
        base = args.base_url or "http://127.0.0.1:8000"
        auth = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        models = urllib.request.Request(base.rstrip("/") + "/v1/models", headers=auth)
        with urllib.request.urlopen(models, timeout=5) as resp:
            for m in json.loads(resp.read())["data"]:
                if m["id"] == args.model and m.get("root") and Path(m["root"]).is_dir():
                    return m["root"]
    raise SystemExit("tessera bench: pass --tokenizer PATH (the model folder) to draw prompts")


def build_requests(args: argparse.Namespace, tok: Any) -> list:
    special = set(tok.tokenizer.get_added_tokens_decoder())
    vocab = [i for i in range(tok.tokenizer.get_vocab_size()) if i not in special]
    n = args.num_prompts + args.warmup
    if args.dataset == "random":
        return random_requests(
            n, args.random_input_len, args.random_output_len, vocab, args.seed, args.random_range_ratio
        )
    reqs = shared_prefix_requests(
        args.shared_prefix_groups,
        args.prompts_per_group,
        args.shared_prefix_len,
        args.question_len,
        args.random_output_len,
        vocab,
        args.seed,
    )
    return reqs[: args.warmup] + reqs


async def bench(args: argparse.Namespace, policy: str = "", seed_offset: int = 0) -> dict[str, Any]:
    from tessera.runtime.models.tokenizer import ModelTokenizer

    tok = ModelTokenizer(_tokenizer_path(args))
    requests = build_requests(argparse.Namespace(**{**vars(args), "seed": args.seed + seed_offset}), tok)
    warmup, measured = requests[: args.warmup], requests[args.warmup :]
    ignore_eos = not args.no_ignore_eos
    if args.backend == "openai":
        client: Client = OpenAIClient(
            args.base_url or "http://127.0.0.1:8000",
            args.model,
            args.endpoint,
            args.temperature,
            ignore_eos,
            decode=tok.decode,
            headers=({"x-tessera-profile": policy} if policy else {})
            | ({"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}),
        )
    elif args.backend == "tessera-grpc":
        client = RouterGrpcClient(args.base_url or "127.0.0.1:50051", args.model, args.temperature, ignore_eos)
    else:
        if not args.base_url:
            raise SystemExit("tessera bench: --backend worker-grpc needs --base-url host:port of a worker")
        client = WorkerGrpcClient(args.base_url, args.temperature, ignore_eos)
    label = (args.label or f"{args.backend}-{args.dataset}") + (f"-{policy}" if policy else "")
    try:
        if warmup:
            await run_load(client, warmup, label=f"{label}-warmup", progress=False)
        outcomes, duration = await run_load(
            client, measured, args.request_rate, args.burstiness, args.max_concurrency, args.seed, label
        )
    finally:
        await client.close()
    goodput = {k: float(v) for k, v in (item.split(":") for item in args.goodput)} or None
    percentiles = tuple(float(p) for p in args.percentiles.split(","))
    result = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": args.backend,
        "backend": args.backend,
        "label": label,
        "model_id": args.model,
        "tokenizer_id": str(tok.tokenizer.get_vocab_size()),
        "num_prompts": args.num_prompts,
        "request_rate": args.request_rate if math.isfinite(args.request_rate) else "inf",
        "burstiness": args.burstiness,
        "max_concurrency": args.max_concurrency,
        "dataset": args.dataset,
        "policy": policy or None,
        **summarize(outcomes, duration, percentiles, goodput),
    }
    return result


def print_summary(r: dict[str, Any]) -> None:
    print(f"{' ' + r['label'] + ' ':=^60}")
    print(f"{'Successful requests:':<40} {r['completed']}")
    print(f"{'Failed requests:':<40} {r['failed']}")
    print(f"{'Benchmark duration (s):':<40} {r['duration']:.2f}")
    print(f"{'Request throughput (req/s):':<40} {r['request_throughput']:.2f}")
    print(f"{'Output token throughput (tok/s):':<40} {r['output_throughput']:.2f}")
    for name, title in (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency")):
        keys = [
            k
            for k in r
            if k.endswith(f"_{name}_ms")
            and k.split("_")[0] in ("mean", "median")
            or (k.startswith("p") and k.endswith(f"_{name}_ms"))
        ]
        print(f"{title:-^60}")
        for k in keys:
            print(f"{k:<40} {r[k]:.3f}")
    print("=" * 60)


def run_main(args: argparse.Namespace) -> int:
    policies = [p.strip() for p in (args.policy or "").split(",") if p.strip()] or [""]
    if policies != [""] and args.backend != "openai":
        raise SystemExit("tessera bench: --policy needs the openai backend (the router's HTTP API)")
    results = []
    for i, policy in enumerate(policies):
        result = asyncio.run(bench(args, policy, seed_offset=i))
        print_summary(result)
        results.append(result)
        if args.save_result:
            out_dir = Path(args.result_dir)
            out_dir.mkdir(parents=True, exist_ok=True)
            name = args.result_filename or f"{result['label']}-{result['date']}.json"
            if len(policies) > 1:
                name = f"{Path(name).stem}-{policy}.json" if args.result_filename else name
            (out_dir / name).write_text(json.dumps(result))
            print(f"saved {out_dir / name}", file=sys.stderr)
    if len(results) > 1:
        print_comparison(results)
    return 0 if all(r["failed"] == 0 for r in results) else 1


def print_comparison(results: list[dict[str, Any]]) -> None:
    print(f"\n{'policy':<14}{'TTFT p50':>10}{'p90':>9}{'TPOT p50':>10}{'p90':>8}{'req/s':>8}{'hit':>8}{'failed':>8}")
    for r in results:
        print(
            f"{r['policy']:<14}{r['median_ttft_ms']:>10.1f}{r['p90_ttft_ms']:>9.1f}{r['median_tpot_ms']:>10.1f}"
            f"{r['p90_tpot_ms']:>8.1f}{r['request_throughput']:>8.2f}{r['prefix_cache_hit_rate']:>8.1%}"
            f"{r['failed']:>8}"
        )
