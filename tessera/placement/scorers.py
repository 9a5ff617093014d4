"""Scorers rate each candidate in [0, 1]; higher is better. The pipeline weights and sums them.

A scorer is `f(request, workers, context) -> scores`; context carries what the
pipeline worked out once per request (prefix-cache hits per worker).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from tessera.placement.registry import Registry
from tessera.placement.snapshot import PlacementContext, RequestInfo, WorkerSnapshot

Scorer = Callable[[RequestInfo, Sequence[WorkerSnapshot], PlacementContext], list[float]]

# By the name profiles use; other packages add theirs under this entry-point group (registry.py).
SCORERS: Registry[Scorer] = Registry("scorer", "tessera.placement.scorers")

# The prefill chunk a step is assumed to carry when predicting how many steps a prefill takes.
PREFILL_CHUNK_TOKENS = 2048


def _inverse_minmax(values: Sequence[float]) -> list[float]:
    """Lowest value scores 1, highest 0, linear between; all equal scores 1.

    The same normalisation llm-d's queue and KV-cache scorers use, so weights
    mean the same thing across scorers.
    """
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    return [(hi - v) / (hi - lo) for v in values]


@SCORERS.register("queue_depth")
def queue_depth(req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext) -> list[float]:
    """Fewer waiting requests is better."""
    return _inverse_minmax([w.num_waiting for w in workers])


@SCORERS.register("running_requests")
def running_requests(req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext) -> list[float]:
    """A smaller running batch is better (less interference with decode)."""
    return _inverse_minmax([w.num_running for w in workers])


@SCORERS.register("kv_cache_usage")
def kv_cache_usage(req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext) -> list[float]:
    """More free KV cache is better: absolute, not relative, since usage is already a fraction."""
    return [max(0.0, 1.0 - w.kv_cache_usage) for w in workers]


@SCORERS.register("in_flight_tokens")
def in_flight_tokens(req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext) -> list[float]:
    """Fewer tokens being worked on is better."""
    return _inverse_minmax([w.tokens_in_flight for w in workers])


@SCORERS.register("prefix_cache")
def prefix_cache(
    req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext, max_prefix_tokens: int = 0
) -> list[float]:
    """Share of the prompt already cached on the worker (llm-d's prefix-cache scorer); with
    max_prefix_tokens, a share of at most that many leading tokens (llm-d hashes 256 blocks)."""
    total = min(req.prompt_tokens, max_prefix_tokens) if max_prefix_tokens else req.prompt_tokens
    if total <= 0:
        return [0.0] * len(workers)
    hits = ctx.prefix_hits
    return [min(1.0, hits.get(w.id, 0) / total) for w in workers]


def predicted_ttft_seconds(req: RequestInfo, w: WorkerSnapshot, hit_tokens: int) -> float:
    """Time to first token on `w`, from the performance model's figures for its hardware.

    The worker first works through the prompt tokens already queued on it, then
    this prompt's uncached part, at its prefill rate; every step meanwhile also
    carries the running decodes, which cost a decode step of that batch per
    2048-token chunk of prefill. Workers of unknown speed get a slow default,
    so they still rank by queue.
    """
    rate = w.prefill_tokens_per_s or 1e3
    work = w.prefill_tokens_waiting + max(0, req.prompt_tokens - hit_tokens)
    steps = max(1, math.ceil(work / PREFILL_CHUNK_TOKENS))
    return work / rate + steps * w.step_seconds(w.num_running)


@SCORERS.register("predicted_ttft")
def predicted_ttft(req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext) -> list[float]:
    """Fastest predicted time to first token scores 1; others score best/theirs.

    Puts cache hits, queued work and accelerator speed in one unit, so a faster
    accelerator takes a larger share of a mixed fleet and a cache hit is worth
    exactly the prefill it saves.
    """
    est = [predicted_ttft_seconds(req, w, ctx.prefix_hits.get(w.id, 0)) for w in workers]
    best = min(est)
    return [best / e if e > 0 else 1.0 for e in est]


@SCORERS.register("predicted_tpot")
def predicted_tpot(req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext) -> list[float]:
    """Shortest predicted decode step once this request joins the batch scores 1; others best/theirs.

    The counterweight to predicted_ttft: a fast accelerator that already runs a
    large batch gives a quick first token but slow ones after it.
    """
    est = [w.step_seconds(w.num_running + w.num_waiting + 1) or 1e-3 for w in workers]
    best = min(est)
    return [best / e for e in est]


@SCORERS.register("prefill_interference")
def prefill_interference(
    req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext, min_tokens: int = PREFILL_CHUNK_TOKENS
) -> list[float]:
    """Least decode time stolen from others scores 1; others best/theirs.

    A long prompt prefilled on a worker stalls every decode running there for
    as long as its uncached part takes (chunked prefill shares each step; the
    batch waits either way): running decodes x prefill seconds. This is the
    cost predicted_ttft does not see. Without it a fast accelerator takes
    every long prompt, and the streams already on it slow down (DistServe's
    argument for disaggregation, applied to placement).

    Only prompts with at least `min_tokens` uncached tokens everywhere (one
    full prefill chunk) get an opinion; shorter ones ride along in a step
    at little cost, and scoring them turned this term into a cache-affinity
    bonus that hot-spotted shared-prefix traffic (measured: p90 TTFT +20%).
    """
    uncached = [max(0, req.prompt_tokens - ctx.prefix_hits.get(w.id, 0)) for w in workers]
    if min(uncached, default=0) < min_tokens:
        return [1.0] * len(workers)
    est = [(w.num_running + 1) * u / (w.prefill_tokens_per_s or 1e3) for w, u in zip(workers, uncached)]
    best = min(est)
    return [best / e if e > 0 else 1.0 for e in est]


@SCORERS.register("session_affinity")
def session_affinity(req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext) -> list[float]:
    """1 for the worker that served this session last (set by the pipeline), else 0."""
    target = ctx.session_worker
    return [1.0 if target and w.id == target else 0.0 for w in workers]


@SCORERS.register("dynamo_kv_cost")
def dynamo_kv_cost(
    req: RequestInfo, workers: Sequence[WorkerSnapshot], ctx: PlacementContext, prefill_load_scale: float = 1.0
) -> list[float]:
    """Dynamo's KV router cost with its defaults (docs/peer-routing-policies.md):

        prefill_load_scale x max(0, (queued prefill tokens + prompt) / block - overlap blocks)
        + active blocks + the prompt's blocks not already cached

    Lowest cost wins (router temperature 0); returned as inverse min-max scores."""
    costs = []
    for w in workers:
        bs = w.kv_block_size or 16
        overlap = ctx.prefix_hits.get(w.id, 0) / bs
        request_blocks = req.prompt_tokens / bs
        prefill = max(0.0, (w.prefill_tokens_waiting + req.prompt_tokens) / bs - overlap)
        decode = w.kv_cache_usage * w.kv_capacity_blocks + max(0.0, request_blocks - overlap)
        costs.append(prefill_load_scale * prefill + decode)
    return _inverse_minmax(costs)
