"""Pickers choose one worker from the scored candidates."""

from __future__ import annotations

import random
from collections.abc import Sequence

from services.scheduler.policy.snapshot import WorkerSnapshot


class MaxScorePicker:
    """The highest score wins; ties are broken at random so equal workers share load."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def __call__(self, workers: Sequence[WorkerSnapshot], scores: Sequence[float]) -> WorkerSnapshot:
        best = max(scores)
        top = [w for w, s in zip(workers, scores) if s >= best - 1e-9]
        return top[0] if len(top) == 1 else self._rng.choice(top)


class RandomPicker:
    """Uniformly random among candidates (a baseline)."""

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def __call__(self, workers: Sequence[WorkerSnapshot], scores: Sequence[float]) -> WorkerSnapshot:
        return self._rng.choice(list(workers))


PICKERS = {"max_score": MaxScorePicker, "random": RandomPicker}
