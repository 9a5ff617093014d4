"""Pickers choose one worker from the scored candidates.

A picker is an object (some keep state: a round-robin position, a random
generator) called as `picker(request, workers, scores, context)`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from tessera.placement.registry import Registry
from tessera.placement.snapshot import PlacementContext, RequestInfo, WorkerSnapshot

Picker = Callable[[RequestInfo, Sequence[WorkerSnapshot], Sequence[float], PlacementContext], WorkerSnapshot]
PickerFactory = Callable[..., Picker]  # (seed, **the profile's parameters) -> a picker

# By the name profiles use; other packages add theirs under this entry-point group (registry.py).
PICKERS: Registry[PickerFactory] = Registry("picker", "tessera.placement.pickers")


def _load(w: WorkerSnapshot) -> int:
    """Requests on a worker, queued or running: what the peers' routers count as load."""
    return w.num_waiting + w.num_running


@PICKERS.register("max_score")
class MaxScorePicker:
    """The highest score wins; ties are broken at random so equal workers share load."""

    def __init__(self, seed: int | None = None, **_: object) -> None:
        self._rng = random.Random(seed)

    def __call__(
        self, req: RequestInfo, workers: Sequence[WorkerSnapshot], scores: Sequence[float], ctx: PlacementContext
    ) -> WorkerSnapshot:
        best = max(scores)
        top = [w for w, s in zip(workers, scores) if s >= best - 1e-9]
        return top[0] if len(top) == 1 else self._rng.choice(top)


@PICKERS.register("random")
class RandomPicker:
    """Uniformly random among candidates (a baseline)."""

    def __init__(self, seed: int | None = None, **_: object) -> None:
        self._rng = random.Random(seed)

    def __call__(
        self, req: RequestInfo, workers: Sequence[WorkerSnapshot], scores: Sequence[float], ctx: PlacementContext
    ) -> WorkerSnapshot:
        return self._rng.choice(list(workers))


@PICKERS.register("round_robin")
class RoundRobinPicker:
    """Each candidate in turn, in worker-id order (stable across membership changes)."""

    def __init__(self, seed: int | None = None, **_: object) -> None:
        self._last = ""

    def __call__(
        self, req: RequestInfo, workers: Sequence[WorkerSnapshot], scores: Sequence[float], ctx: PlacementContext
    ) -> WorkerSnapshot:
        ordered = sorted(workers, key=lambda w: w.id)
        for w in ordered:
            if w.id > self._last:
                self._last = w.id
                return w
        self._last = ordered[0].id
        return ordered[0]


@PICKERS.register("power_of_two")
class PowerOfTwoPicker:
    """Two candidates at random, the less loaded wins (vllm-router / SGLang router `power_of_two`)."""

    def __init__(self, seed: int | None = None, **_: object) -> None:
        self._rng = random.Random(seed)

    def __call__(
        self, req: RequestInfo, workers: Sequence[WorkerSnapshot], scores: Sequence[float], ctx: PlacementContext
    ) -> WorkerSnapshot:
        if len(workers) == 1:
            return workers[0]
        a, b = self._rng.sample(list(workers), 2)
        return a if _load(a) <= _load(b) else b


@PICKERS.register("cache_aware")
class CacheAwarePicker:
    """vllm-router's (and SGLang router's) `cache_aware` policy, with their launcher defaults.

    Load is requests in flight per worker. If it is imbalanced (max - min >
    balance_abs_threshold and max > balance_rel_threshold x min), the
    least-loaded worker takes the request. Otherwise, if the best prefix match
    (against the routing history: the pipeline's approximate index) exceeds
    cache_threshold of the prompt, the least-loaded of the best-matching workers
    takes it; failing that, the least-loaded worker overall. Ties: at random
    (theirs: first in registry order). See docs/peer-routing-policies.md.
    """

    def __init__(
        self,
        seed: int | None = None,
        cache_threshold: float = 0.3,
        balance_abs_threshold: int = 64,
        balance_rel_threshold: float = 1.5,
        **_: object,
    ) -> None:
        self._rng = random.Random(seed)
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def _least_loaded(self, workers: Sequence[WorkerSnapshot]) -> WorkerSnapshot:
        lo = min(_load(w) for w in workers)
        return self._rng.choice([w for w in workers if _load(w) == lo])

    def __call__(
        self, req: RequestInfo, workers: Sequence[WorkerSnapshot], scores: Sequence[float], ctx: PlacementContext
    ) -> WorkerSnapshot:
        loads = [_load(w) for w in workers]
        hi, lo = max(loads), min(loads)
        if hi - lo > self.balance_abs_threshold and hi > lo * self.balance_rel_threshold:
            return self._least_loaded(workers)
        hits = ctx.prefix_hits
        best = max((hits.get(w.id, 0) for w in workers), default=0)
        if req.prompt_tokens and best / req.prompt_tokens > self.cache_threshold:
            return self._least_loaded([w for w in workers if hits.get(w.id, 0) == best])
        return self._least_loaded(workers)
