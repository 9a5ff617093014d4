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
from tessera.bench.datasets import random_requests, shared_prefix_requests, sharegpt_pairs, sharegpt_requests
from tessera.bench.results import DETAILED_KEYS, PERCENTILE_METRICS, summarize
from tessera.bench.runner import run_load


def add_arguments(p: argparse.ArgumentParser) -> None:
    """``vllm bench serve``'s flags, under its names and with its meaning (so one command line runs both);
    Tessera's own (gRPC backends, shared-prefix, --policy) come on top. Old spellings stay as aliases."""
    p.add_argument(
        "--backend",
        default="openai",
        choices=["openai", "vllm", "openai-chat", "tessera-grpc", "worker-grpc"],
        help="openai (as vLLM's vllm): the completions API over HTTP; openai-chat: the chat API; "
        "tessera-grpc: the router's gRPC API; worker-grpc: one worker",
    )
    p.add_argument(
        "--base-url",
        default=None,
        help="http://host:port for the HTTP backends (default http://HOST:PORT); host:port for the gRPC ones",
    )
    p.add_argument("--host", default="127.0.0.1", help="HTTP backends without --base-url: the server's host")
    p.add_argument("--port", type=int, default=8000, help="HTTP backends without --base-url: the server's port")
    p.add_argument(
        "--endpoint",
        default=None,
        choices=["/v1/completions", "/v1/chat/completions"],
        help="HTTP backends: the API to call (default: the backend's)",
    )
    p.add_argument("--model", required=True, help="served model name")
    p.add_argument(
        "--api-key",
        default=os.environ.get("OPENAI_API_KEY", ""),
        help="HTTP backends: sent as Authorization: Bearer KEY (default: OPENAI_API_KEY; none if unset)",
    )
    p.add_argument("--tokenizer", default=None, help="model folder whose tokenizer draws and counts the prompts")
    p.add_argument(
        "--trust-remote-code",
        action="store_true",
        help="accepted for vLLM's command lines; Tessera's tokenizer never runs a model's code",
    )
    p.add_argument(
        "--dataset-name",
        "--dataset",
        dest="dataset",
        default="random",
        choices=["random", "sharegpt", "shared-prefix"],
        help="random prompts; sharegpt: conversations from --dataset-path; shared-prefix: groups sharing a prefix",
    )
    p.add_argument("--dataset-path", default=None, help="sharegpt: the ShareGPT JSON file")
    p.add_argument(
        "--sharegpt-output-len", type=int, default=None, help="sharegpt: tokens to generate (default: the answer's)"
    )
    p.add_argument("--no-oversample", action="store_true", help="sharegpt: send fewer requests if the file has too few")
    p.add_argument("--num-prompts", type=int, default=100, help="requests to measure")
    p.add_argument("--random-input-len", type=int, default=128, help="random: prompt tokens")
    p.add_argument("--random-output-len", type=int, default=64, help="random, shared-prefix: tokens to generate")
    p.add_argument(
        "--random-range-ratio",
        default="0.0",
        help='random: lengths vary by +- this fraction; as vLLM, JSON {"input": 0.3, "output": 0.5} sets each',
    )
    p.add_argument("--random-prefix-len", type=int, default=0, help="random: tokens every prompt starts with")
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
    p.add_argument(
        "--ignore-eos",
        action=argparse.BooleanOptionalAction,
        default=False,
        help="generate every requested token even past end-of-sequence (off, as in vLLM: requests may stop early)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of the prompts and arrivals")
    p.add_argument(
        "--percentile-metrics",
        default=",".join(PERCENTILE_METRICS),
        help="metrics to report percentiles of, comma-separated, of ttft,tpot,itl,e2el",
    )
    p.add_argument(
        "--metric-percentiles",
        "--percentiles",
        dest="metric_percentiles",
        default="50,90,99",
        help="the percentiles to report, comma-separated (vLLM's default is 99 alone)",
    )
    p.add_argument("--goodput", nargs="*", default=[], metavar="KEY:MS", help="SLOs for goodput, e.g. ttft:500 tpot:50")
    p.add_argument(
        "--num-warmups", "--warmup", dest="warmup", type=int, default=2, help="requests sent (and discarded) first"
    )
    p.add_argument("--disable-tqdm", action="store_true", help="no progress bar")
    p.add_argument("--request-id-prefix", default="bench-", help="request ids are this prefix, the label and a number")
    p.add_argument(
        "--policy",
        default=None,
        help="placement profiles to compare, comma-separated (HTTP backends: sent as x-tessera-profile); "
        "each gets its own prompts of the same shape, so no run warms the caches for the next",
    )
    p.add_argument("--label", default=None, help="a name for this run in the result and its file name")
    p.add_argument("--metadata", nargs="*", default=[], metavar="KEY=VALUE", help="extra fields stored in the result")
    p.add_argument("--save-result", action="store_true", help="write the result as JSON (vLLM's keys)")
    p.add_argument(
        "--save-detailed",
        action="store_true",
        help="keep the per-request lists (ttfts, itls, input_lens, output_lens, ...) in the saved result",
    )
    p.add_argument("--result-dir", default=None, help="where --save-result writes (default: the current folder)")
    p.add_argument(
        "--result-filename",
        default=None,
        help="file name of the result (default, as vLLM: LABEL-RATEqps[-concurrencyN]-MODEL-DATE.json)",
    )


def _tokenizer_path(args: argparse.Namespace) -> str:
    if args.tokenizer:
        return args.tokenizer
    from tessera.runtime.models.prepare import ensure_model
    from tessera.runtime.models.registry import resolve

    # A built-in recipe needs only its tokenizer here: the weights-free folder on a fresh machine.
    local = ensure_model(resolve(args.model), weights=False)
    if Path(local).is_dir():
        return local
    if args.backend in HTTP_BACKENDS:
        base = _base_url(args)
        auth = {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {}
        models = urllib.request.Request(base.rstrip("/") + "/v1/models", headers=auth)
        with urllib.request.urlopen(models, timeout=5) as resp:
            for m in json.loads(resp.read())["data"]:
                if m["id"] == args.model and m.get("root") and Path(m["root"]).is_dir():
                    return m["root"]
    raise SystemExit("tessera bench: pass --tokenizer PATH (the model folder) to draw prompts")


HTTP_BACKENDS = ("openai", "vllm", "openai-chat")


def _base_url(args: argparse.Namespace) -> str:
    return args.base_url or f"http://{args.host}:{args.port}"


def build_requests(args: argparse.Namespace, tok: Any) -> list:
    n = args.num_prompts + args.warmup
    if args.dataset == "sharegpt":
        if not args.dataset_path:
            raise SystemExit("tessera bench: --dataset-name sharegpt needs --dataset-path FILE (a ShareGPT JSON)")
        try:
            pairs = sharegpt_pairs(json.loads(Path(args.dataset_path).read_text()))
            return sharegpt_requests(
                pairs, n, tok.encode, args.sharegpt_output_len, args.seed, oversample=not args.no_oversample
            )
        except (OSError, ValueError, AttributeError) as exc:
            raise SystemExit(f"tessera bench: {args.dataset_path}: {exc}") from None
    special = set(tok.tokenizer.get_added_tokens_decoder())
    vocab = [i for i in range(tok.tokenizer.get_vocab_size()) if i not in special]
    if args.dataset == "random":
        return random_requests(
            n,
            args.random_input_len,
            args.random_output_len,
            vocab,
            args.seed,
            range_ratios(args.random_range_ratio),
            args.random_prefix_len,
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
    ignore_eos = args.ignore_eos
    if args.backend in HTTP_BACKENDS:
        endpoint = args.endpoint or ("/v1/chat/completions" if args.backend == "openai-chat" else "/v1/completions")
        client: Client = OpenAIClient(
            _base_url(args),
            args.model,
            endpoint,
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
            await run_load(client, warmup, label=f"{args.request_id_prefix}{label}-warmup", progress=False)
        outcomes, duration = await run_load(
            client,
            measured,
            args.request_rate,
            args.burstiness,
            args.max_concurrency,
            args.seed,
            f"{args.request_id_prefix}{label}",
            progress=not args.disable_tqdm,
        )
    finally:
        await client.close()
    goodput = {k: float(v) for k, v in (item.split(":") for item in args.goodput)} or None
    percentiles = tuple(float(p) for p in args.metric_percentiles.split(","))
    metrics = tuple(m.strip() for m in args.percentile_metrics.split(",") if m.strip())
    result = {
        "date": datetime.now().strftime("%Y%m%d-%H%M%S"),
        "endpoint_type": args.backend,
        "backend": args.backend,
        "label": label,
        "model_id": args.model,
        "tokenizer_id": str(tok.tokenizer.get_vocab_size()),
        "num_prompts": args.num_prompts,
        **dict(item.split("=", 1) for item in args.metadata),
        "request_rate": args.request_rate if math.isfinite(args.request_rate) else "inf",
        "burstiness": args.burstiness,
        "max_concurrency": args.max_concurrency,
        "dataset": args.dataset,
        "policy": policy or None,
        **summarize(outcomes, duration, percentiles, goodput, metrics),
    }
    return result


def range_ratios(text: str) -> tuple[float, float]:
    """--random-range-ratio as vLLM reads it: one number for both lengths, or {"input": x, "output": y}."""
    value = json.loads(text)
    pair = (value.get("input", 0.0), value.get("output", 0.0)) if isinstance(value, dict) else (value, value)
    if not all(isinstance(r, int | float) and 0 <= r < 1 for r in pair):
        raise ValueError(f"--random-range-ratio {text!r}: each ratio must be in [0, 1)")
    return float(pair[0]), float(pair[1])


def check_arguments(args: argparse.Namespace) -> None:
    """Refuse what would fail later, by name (argparse checks only each flag alone)."""
    try:
        range_ratios(args.random_range_ratio)
    except ValueError as exc:  # json.JSONDecodeError is one
        raise SystemExit(f"tessera bench: {exc}") from None
    bad = [m for m in args.percentile_metrics.split(",") if m.strip() and m.strip() not in PERCENTILE_METRICS]
    if bad:
        raise SystemExit(f"tessera bench: --percentile-metrics: unknown {', '.join(bad)} (of ttft,tpot,itl,e2el)")
    try:
        [float(p) for p in args.metric_percentiles.split(",")]
    except ValueError:
        raise SystemExit(
            f"tessera bench: --metric-percentiles {args.metric_percentiles!r}: numbers, comma-separated"
        ) from None
    bad = [item for item in args.metadata if "=" not in item]
    if bad:
        raise SystemExit(f"tessera bench: --metadata {bad[0]!r}: KEY=VALUE")


def result_path(args: argparse.Namespace, result: dict[str, Any]) -> Path:
    """Where --save-result writes, named as vLLM names it (compute_result_filename) unless told."""
    concurrency = f"-concurrency{args.max_concurrency}" if args.max_concurrency is not None else ""
    name = args.result_filename or (
        f"{result['label']}-{args.request_rate}qps{concurrency}-{args.model.split('/')[-1]}-{result['date']}.json"
    )
    return Path(args.result_dir or ".") / name


def saved_form(result: dict[str, Any], detailed: bool) -> dict[str, Any]:
    """What --save-result writes: as vLLM, the per-request lists only with --save-detailed."""
    return result if detailed else {k: v for k, v in result.items() if k not in DETAILED_KEYS}


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
    check_arguments(args)
    policies = [p.strip() for p in (args.policy or "").split(",") if p.strip()] or [""]
    if policies != [""] and args.backend not in HTTP_BACKENDS:
        raise SystemExit("tessera bench: --policy needs an HTTP backend (the router's HTTP API)")
    results = []
    for i, policy in enumerate(policies):
        result = asyncio.run(bench(args, policy, seed_offset=i))
        print_summary(result)
        results.append(result)
        if args.save_result:
            path = result_path(args, result)
            if len(policies) > 1 and args.result_filename:
                path = path.with_name(f"{path.stem}-{policy}.json")
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(saved_form(result, args.save_detailed)))
            print(f"saved {path}", file=sys.stderr)
    if len(results) > 1:
        print_comparison(results)
    return 0 if all(r["failed"] == 0 for r in results) else 1


def print_comparison(results: list[dict[str, Any]]) -> None:
    """Median and the highest percentile asked for, of TTFT and TPOT, per policy."""
    top = max((k for k in results[0] if k.startswith("p") and k.endswith("_ttft_ms")), default="", key=_pct)
    word = top.split("_")[0]
    print(f"\n{'policy':<14}{'TTFT p50':>10}{word:>9}{'TPOT p50':>10}{word:>8}{'req/s':>8}{'hit':>8}{'failed':>8}")
    for r in results:
        print(
            f"{r['policy']:<14}{r.get('median_ttft_ms', math.nan):>10.1f}{r.get(top, math.nan):>9.1f}"
            f"{r.get('median_tpot_ms', math.nan):>10.1f}{r.get(top.replace('ttft', 'tpot'), math.nan):>8.1f}"
            f"{r['request_throughput']:>8.2f}{r['prefix_cache_hit_rate']:>8.1%}{r['failed']:>8}"
        )


def _pct(key: str) -> float:
    """The percentile a key like p99.9_ttft_ms names."""
    return float(key.split("_")[0][1:])
