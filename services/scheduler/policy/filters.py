"""Filters drop workers that cannot serve a request at all."""

from __future__ import annotations

from collections.abc import Callable

from services.scheduler.policy.snapshot import RequestInfo, WorkerSnapshot

Filter = Callable[[RequestInfo, list[WorkerSnapshot]], list[WorkerSnapshot]]


def model(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Only workers serving the requested model."""
    return [w for w in workers if w.model == req.model]


def health(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Only live workers that take new requests (not draining for scale-down)."""
    return [w for w in workers if w.healthy and not w.draining]


def exclude(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Not the workers a retry is moving away from."""
    return [w for w in workers if w.id not in req.exclude] if req.exclude else workers


def context_fits(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """The prompt and its output fit the worker's context and whole KV cache."""
    need = req.prompt_tokens + req.max_tokens
    return [
        w for w in workers
        if (not w.max_model_len or need <= w.max_model_len)
        and (not w.kv_capacity_blocks or req.prompt_tokens <= w.kv_capacity_tokens)
    ]


def serves_whole_requests(req: RequestInfo, workers: list[WorkerSnapshot]) -> list[WorkerSnapshot]:
    """Workers that can prefill and decode (mixed, or decode with local prefill)."""
    return [w for w in workers if w.role in ("mixed", "decode")]


FILTERS: dict[str, Filter] = {
    "model": model,
    "health": health,
    "exclude": exclude,
    "context_fits": context_fits,
    "serves_whole_requests": serves_whole_requests,
}
