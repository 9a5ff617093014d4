"""Learn how far the capacity model is off, per instance type, from observed latencies.

The performance model is calibrated on a few accelerators (H100, A100, one CPU
core); the rest are datasheet-scaled guesses, and no model sees noisy
neighbours, driver versions or a scheduler's quirks. Like Dynamo's planner, the
autoscaler compares what it predicted with what it measured and corrects the
next plan. A factor scales the model's service times (ttft: prompt work, tpot:
decode steps) for one instance type, so a slower-than-modelled type gets less
capacity per instance, including the queueing that slower service brings.

The update is an EWMA in log space of the residual: with `predicted` the
*corrected* model's prediction at the load the type actually carried,
f <- f * (observed/predicted) ** alpha. At its fixed point the corrected model
predicts what is observed; alpha damps noise; each ratio and each factor are
clamped so one bad interval cannot swing the fleet. Intervals with fewer than
`min_samples` requests say too little about a percentile and are skipped.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

METRICS = ("ttft", "tpot")


@dataclass(frozen=True)
class CorrectionParams:
    alpha: float = 0.3
    minimum: float = 0.5
    maximum: float = 3.0
    max_step_ratio: float = 2.0
    min_samples: int = 20


@dataclass(frozen=True)
class Factors:
    """Multipliers on the model's prompt-work (ttft) and decode-step (tpot) times; 1.0 = trust the model."""

    ttft: float = 1.0
    tpot: float = 1.0


@dataclass(frozen=True)
class CorrectionState:
    """Factors per instance-type label (InstanceType.label); a type never observed has 1.0."""

    factors: tuple[tuple[str, Factors], ...] = ()

    def for_label(self, label: str) -> Factors:
        return dict(self.factors).get(label, Factors())


def observe(
    state: CorrectionState,
    label: str,
    metric: str,
    predicted_s: float,
    observed_s: float,
    samples: int,
    params: CorrectionParams = CorrectionParams(),
) -> CorrectionState:
    """The state after comparing one interval's observed percentile with the corrected model's prediction."""
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {', '.join(METRICS)}, not {metric!r}")
    if samples < params.min_samples or predicted_s <= 0 or observed_s <= 0:
        return state
    ratio = min(max(observed_s / predicted_s, 1.0 / params.max_step_ratio), params.max_step_ratio)
    current = state.for_label(label)
    value = getattr(current, metric) * ratio**params.alpha
    value = min(max(value, params.minimum), params.maximum)
    table = dict(state.factors)
    table[label] = replace(current, **{metric: value})
    return CorrectionState(tuple(sorted(table.items())))
