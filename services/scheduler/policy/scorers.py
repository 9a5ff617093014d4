"""Scorers rate each candidate in [0, 1]; higher is better. The pipeline weights and sums them."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from services.scheduler.policy.snapshot import RequestInfo, WorkerSnapshot

Scorer = Callable[[RequestInfo, Sequence[WorkerSnapshot]], list[float]]


def _inverse_minmax(values: Sequence[float]) -> list[float]:
    """Lowest value scores 1, highest 0, linear between; all equal scores 1.

    The same normalisation llm-d's queue and KV-cache scorers use, so weights
    mean the same thing across scorers.
    """
    lo, hi = min(values), max(values)
    if hi == lo:
        return [1.0] * len(values)
    return [(hi - v) / (hi - lo) for v in values]


def queue_depth(req: RequestInfo, workers: Sequence[WorkerSnapshot]) -> list[float]:
    """Fewer waiting requests is better."""
    return _inverse_minmax([w.num_waiting for w in workers])


def running_requests(req: RequestInfo, workers: Sequence[WorkerSnapshot]) -> list[float]:
    """A smaller running batch is better (less interference with decode)."""
    return _inverse_minmax([w.num_running for w in workers])


def kv_cache_usage(req: RequestInfo, workers: Sequence[WorkerSnapshot]) -> list[float]:
    """More free KV cache is better: absolute, not relative, since usage is already a fraction."""
    return [max(0.0, 1.0 - w.kv_cache_usage) for w in workers]


def in_flight_tokens(req: RequestInfo, workers: Sequence[WorkerSnapshot]) -> list[float]:
    """Fewer tokens being worked on is better."""
    return _inverse_minmax([w.tokens_in_flight for w in workers])


SCORERS: dict[str, Scorer] = {
    "queue_depth": queue_depth,
    "running_requests": running_requests,
    "kv_cache_usage": kv_cache_usage,
    "in_flight_tokens": in_flight_tokens,
}
