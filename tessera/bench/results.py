"""Per-request outcomes to the summary ``vllm bench serve --save-result`` writes (same key names).

Pure: outcomes in, dict out, so tests and plots use it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class Outcome:
    """One request as the client saw it. Times in seconds."""

    prompt_len: int
    success: bool = False
    output_tokens: int = 0
    ttft: float = 0.0
    latency: float = 0.0
    itl: list[float] = field(default_factory=list)
    start_time: float = 0.0
    generated_text: str = ""
    error: str = ""
    cached_tokens: int = 0  # prompt tokens served from a prefix cache (usage.prompt_tokens_details)
    queue_time: float = 0.0  # waiting for a --max-concurrency slot before being sent (vLLM's client_queue_time)


PERCENTILE_METRICS = ("ttft", "tpot", "itl", "e2el")
# Per-request lists vLLM saves only with --save-detailed (vllm/benchmarks/serve.py).
DETAILED_KEYS = ("input_lens", "output_lens", "start_times", "ttfts", "itls", "generated_texts", "errors")


def peaks(ok: list[Outcome]) -> tuple[float, int]:
    """The most output tokens in one second, and the most requests in flight in one second, as vLLM counts
    them: one-second buckets from the first start, a token at start + ttft + the gaps before it."""
    if not ok:
        return 0.0, 0
    first = min(o.start_time for o in ok)
    seconds = int(np.ceil(max(o.start_time + o.latency for o in ok) - first)) + 1
    tokens, running = np.zeros(seconds), np.zeros(seconds)
    for o in ok:
        times = np.cumsum([o.start_time + o.ttft, *o.itl]) - first
        np.add.at(tokens, np.clip(times.astype(int), 0, seconds - 1), 1)
        running[int(o.start_time - first) : int(o.start_time + o.latency - first) + 1] += 1
    return float(tokens.max()), int(running.max())


def summarize(
    outcomes: list[Outcome],
    duration: float,
    percentiles: tuple[float, ...] = (50, 90, 99),
    goodput_ms: dict[str, float] | None = None,
    metrics: tuple[str, ...] = PERCENTILE_METRICS,
) -> dict[str, Any]:
    """vLLM's result keys (``vllm bench serve --save-result --save-detailed``) and Tessera's prefix hit rate;
    mean, median, std and ``percentiles`` of each of ``metrics``."""
    ok = [o for o in outcomes if o.success]
    ttfts = [o.ttft for o in ok]
    e2els = [o.latency for o in ok]
    itls = [x for o in ok for x in o.itl]
    tpots = [(o.latency - o.ttft) / (o.output_tokens - 1) for o in ok if o.output_tokens > 1]
    total_out = sum(o.output_tokens for o in ok)
    total_in = sum(o.prompt_len for o in ok)
    good = len(ok)
    if goodput_ms:
        good = 0
        for o in ok:
            tpot = (o.latency - o.ttft) / (o.output_tokens - 1) if o.output_tokens > 1 else 0.0
            seconds = {"ttft": o.ttft, "tpot": tpot, "e2el": o.latency}
            if all(seconds[k] * 1000 <= limit for k, limit in goodput_ms.items()):
                good += 1
    result: dict[str, Any] = {
        "duration": duration,
        "completed": len(ok),
        "failed": len(outcomes) - len(ok),
        "total_input_tokens": total_in,
        "total_output_tokens": total_out,
        "request_throughput": len(ok) / duration if duration else 0.0,
        "request_goodput": (good / duration if duration else 0.0) if goodput_ms else None,
        "output_throughput": total_out / duration if duration else 0.0,
        "total_token_throughput": (total_in + total_out) / duration if duration else 0.0,
        "prefix_cache_hit_rate": sum(o.cached_tokens for o in ok) / total_in if total_in else 0.0,
        "input_lens": [o.prompt_len for o in outcomes],
        "output_lens": [o.output_tokens for o in outcomes],
        "ttfts": [o.ttft for o in outcomes],
        "itls": [o.itl for o in outcomes],
        "latencies": [o.latency for o in outcomes],
        "start_times": [o.start_time for o in outcomes],
        "queue_times": [o.queue_time for o in outcomes],
        "generated_texts": [o.generated_text for o in outcomes],
        "errors": [o.error for o in outcomes],
    }
    result["max_output_tokens_per_s"], result["max_concurrent_requests"] = peaks(ok)
    result["rtfx"] = 0.0  # vLLM's inverse real-time factor of audio input: none here
    for name, values in (("ttft", ttfts), ("tpot", tpots), ("itl", itls), ("e2el", e2els)):
        if name not in metrics:
            continue
        arr = np.asarray(values or [0.0]) * 1000
        result[f"mean_{name}_ms"] = float(arr.mean())
        result[f"median_{name}_ms"] = float(np.median(arr))
        result[f"std_{name}_ms"] = float(arr.std())
        for p in percentiles:
            word = str(int(p)) if int(p) == p else str(p)
            result[f"p{word}_{name}_ms"] = float(np.percentile(arr, p))
    return result
