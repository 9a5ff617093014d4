"""Kubernetes' Horizontal Pod Autoscaler, as its documentation and replica calculator define it.

The utilisation-threshold baseline the SLO-driven autoscaler is measured against: one
Deployment of one instance type, scaled so that its mean utilisation (here: the share of
time an engine is mid-step, what a GPU duty-cycle metric reports) stays near a target.
Kept faithful to Kubernetes (pkg/controller/podautoscaler) because a strawman would prove
nothing:

- desired = ceil(ready * utilisation / target), unchanged while |utilisation/target - 1| <= tolerance (0.1);
- on a scale-up, pods not yet ready count as 0% busy and the ratio is recomputed; if that
  falls inside the tolerance or flips direction, the count stays;
- scale-down is stabilised: the highest recommendation of the last 300 s wins;
- scale-up is rate-limited per 15 s period to max(2x current, current + 4) (the default
  behaviour's two policies, selectPolicy Max); the result is clamped to [min, max] replicas.

Pure: a frozen state in, a state and a replica count out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class HpaParams:
    target_utilisation: float = 0.6
    tolerance: float = 0.1
    scale_down_window_s: float = 300.0
    sync_period_s: float = 15.0
    min_replicas: int = 1
    max_replicas: int = 64
    scale_up_percent: float = 100.0
    scale_up_pods: int = 4


@dataclass(frozen=True)
class HpaState:
    """Recommendations of the stabilisation window, (time, replicas), oldest first."""

    recommendations: tuple[tuple[float, int], ...] = ()


def recommend(current: int, ready_utilisation: Sequence[float], unready: int, params: HpaParams) -> int:
    """The replica calculator: replicas for the observed utilisations of the ready pods.

    `current` is the Deployment's replica count; `ready_utilisation` one value per ready pod;
    `unready` pods still starting (they count as 0% busy when scaling up)."""
    if not ready_utilisation:
        return current
    target = params.target_utilisation
    ratio = sum(ready_utilisation) / len(ready_utilisation) / target
    if unready == 0:
        if abs(1.0 - ratio) <= params.tolerance:
            return current
        return math.ceil(ratio * len(ready_utilisation))
    if ratio <= 1.0:  # scaling down ignores unready pods (and there are no missing ones here)
        if abs(1.0 - ratio) <= params.tolerance:
            return current
        return min(current, math.ceil(ratio * len(ready_utilisation)))
    pods = len(ready_utilisation) + unready
    new_ratio = sum(ready_utilisation) / pods / target
    if abs(1.0 - new_ratio) <= params.tolerance or new_ratio < 1.0:
        return current
    desired = math.ceil(new_ratio * pods)
    return current if desired < current else desired


def step(
    state: HpaState,
    now_s: float,
    current: int,
    ready_utilisation: Sequence[float],
    unready: int,
    params: HpaParams = HpaParams(),
) -> tuple[HpaState, int]:
    """One sync period: the recommendation, stabilised (down) and rate-limited (up), within min..max."""
    raw = recommend(current, ready_utilisation, unready, params)
    raw = min(max(raw, params.min_replicas), params.max_replicas)
    window = tuple((t, r) for t, r in state.recommendations if t > now_s - params.scale_down_window_s)
    window += ((now_s, raw),)
    desired = raw
    if raw < current:
        desired = min(current, max(r for _, r in window))
    elif raw > current:
        limit = max(math.floor(current * (1.0 + params.scale_up_percent / 100.0)), current + params.scale_up_pods)
        desired = min(raw, limit)
    desired = min(max(desired, params.min_replicas), params.max_replicas)
    return HpaState(window), desired
