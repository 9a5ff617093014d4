"""Filters drop workers that cannot serve a request at all."""

from __future__ import annotations

from collections.abc import Callable

from tessera.placement.registry import Registry
from tessera.placement.scorers import predicted_ttft_seconds
from tessera.placement.snapshot import RequestInfo, WorkerSnapshot

Filter = Callable[[RequestInfo, list[WorkerSnapshot]], list[WorkerSnapshot]]

# By the name profiles use; other packages add theirs under this entry-point group (registry.py).
FILTERS: Registry[Filter] = Registry("filter", "tessera.placement.filters")


@FILTERS.register("model")
def model(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Only workers serving the requested model."""
    return [w for w in workers if w.model == req.model]


@FILTERS.register("health")
def health(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Only live workers that take new requests (not draining for scale-down)."""
    return [w for w in workers if w.healthy and not w.draining]


@FILTERS.register("exclude")
def exclude(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Not the workers a retry is moving away from."""
    return [w for w in workers if w.id not in req.exclude] if req.exclude else workers


@FILTERS.register("context_fits")
def context_fits(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """The prompt and its output fit the worker's context and whole KV cache."""
    need, prompt = req.prompt_tokens + req.max_tokens, req.prompt_tokens
    return [
        w
        for w in workers
        if (not w.max_model_len or need <= w.max_model_len)
        and (not w.kv_capacity_blocks or prompt <= w.kv_block_size * w.kv_capacity_blocks)
    ]


@FILTERS.register("serves_whole_requests")
def serves_whole_requests(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Workers that can prefill and decode (mixed, or decode with local prefill)."""
    return [w for w in workers if w.role in ("mixed", "decode")]


@FILTERS.register("load_guard")
def load_guard(
    req: RequestInfo, workers: list[WorkerSnapshot], max_queue_gap: int = 4, max_kv_usage: float = 0.95
) -> list[WorkerSnapshot]:
    """Not the workers far more queued than the least-queued one, nor those with a nearly full KV
    cache: however well their cache matches, piling a popular prefix onto one instance makes its
    queue, not its prefill, the bottleneck. Never empties the list."""
    least = min(w.num_waiting for w in workers)
    kept = [w for w in workers if w.num_waiting <= least + max_queue_gap and w.kv_cache_usage <= max_kv_usage]
    return kept or [w for w in workers if w.num_waiting == least]


@FILTERS.register("saturation")
def saturation(
    req: RequestInfo,
    workers: list[WorkerSnapshot],
    max_waiting: int = 8,
    max_kv_usage: float = 0.98,
    reserve_slots: int = 1,
) -> list[WorkerSnapshot]:
    """Not the workers that cannot start more work now: every batch slot (max_num_seqs) taken by
    running or queued requests (a request sent there waits for one to finish, which no latency
    model here predicts), more than `max_waiting` queued where the slots are unknown, the KV cache
    full, or (when the request has a TTFT objective) a predicted time to first token past it. When
    none is left the model is saturated for this request and the router queues it (admission
    control), in deadline order, rather than piling it onto engine queues in arrival order.

    A request whose tenant already holds its fair share (`over_fair_share`, set by the router)
    does not get a worker's last `reserve_slots` slots (on workers with over twice as many): a
    quiet tenant's next request then finds a free slot at once instead of waiting for one of the
    noisy tenant's requests to end."""
    # Placements not yet seen in a load report count towards batch slots but not towards the
    # engine's queue: a burst to a fast worker would otherwise look saturated until its next report.
    return [
        w
        for w in workers
        if w.num_waiting - w.pending <= max_waiting
        and w.kv_cache_usage < max_kv_usage
        and (not w.max_num_seqs or w.num_running + w.num_waiting < w.max_num_seqs - _reserved(req, w, reserve_slots))
        and (not req.ttft_slo_s or not w.prefill_tokens_per_s or predicted_ttft_seconds(req, w, 0) <= req.ttft_slo_s)
    ]


def _reserved(req: RequestInfo, w: WorkerSnapshot, reserve_slots: int) -> int:
    """The slots of `w` this request may not take: the reserve, for a tenant over its share."""
    return reserve_slots if req.over_fair_share and w.max_num_seqs > 2 * reserve_slots else 0
