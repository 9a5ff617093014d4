"""Learning how far this machine's engine steps are from the performance model, and correcting for it.

The model's efficiency factors were fitted on one machine (calibration.yaml); the same CPU type
on another host, another driver or a busier neighbour runs steps faster or slower (issue 18 saw
+29% on TPOT on a fresh machine of the same kind). Rather than refit every factor, the model
learns two numbers from the steps a live worker actually runs: how much longer (or shorter) its
prefills and its decode steps take than predicted. Prefill and decode are kept apart because they
are bound by different things (compute against memory bandwidth) and drift apart.

Pure: a learner takes (predicted, measured) pairs and returns a StepScale; applying one gives a
StepTimer whose every answer is corrected, for the scheduler's speed estimates, the sim engine
and the simulator alike.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from tessera.engine_model.perf.step_timer import StepTimer

# How many recent observations per phase a learner keeps: minutes of traffic on a busy worker, so
# the scale is the machine's over a while, not over its last few seconds.
WINDOW = 2048
# Below this many observations a phase is not learnt yet (its scale stays 1.0 and is reported as 0).
MIN_SAMPLES = 8
# Scales outside this band are not a machine's speed (a stopped process, a clock jump); observations
# above its top are dropped, and a learnt scale is kept inside it.
PLAUSIBLE = (0.05, 50.0)


@dataclass(frozen=True)
class StepScale:
    """Measured / predicted step time, for prefill and for decode (1.0: the model is right)."""

    prefill: float = 1.0
    decode: float = 1.0

    @classmethod
    def parse(cls, text: str) -> StepScale:
        """``prefill=1.2,decode=0.9`` (either may be left out); refuses anything else by name."""
        values: dict[str, float] = {}
        for part in filter(None, (p.strip() for p in text.split(","))):
            key, sep, value = part.partition("=")
            if not sep or key not in ("prefill", "decode"):
                raise ValueError(f"step time scale {part!r}: expected prefill=X and/or decode=Y")
            number = float(value)
            if not math.isfinite(number) or not PLAUSIBLE[0] <= number <= PLAUSIBLE[1]:
                raise ValueError(f"step time scale {key}={value}: must lie in {PLAUSIBLE[0]}..{PLAUSIBLE[1]}")
            values[key] = number
        return cls(**values)

    def __str__(self) -> str:
        return f"prefill={self.prefill:.3f},decode={self.decode:.3f}"


class ScaledStepTimer(StepTimer):
    """A StepTimer whose prefill work takes ``scale.prefill`` times and decode work ``scale.decode``
    times the model's figure. A mixed step is split: its prefill alone at the prefill scale, the
    rest (what the decodes add) at the decode scale."""

    def __init__(self, base: StepTimer, scale: StepScale) -> None:
        super().__init__(base.arch, base.accel, base.par, base.eff)
        self.scale = scale

    def __call__(self, prefill: Sequence[tuple[int, int]] = (), decode: Sequence[int] = ()) -> float:
        whole = super().__call__(prefill, decode)
        if not prefill:
            return whole * self.scale.decode
        prefill_part = super().__call__(prefill, ()) if decode else whole
        return prefill_part * self.scale.prefill + (whole - prefill_part) * self.scale.decode


def corrected_speed(speed: dict[str, float], prefill_scale: float, decode_scale: float) -> dict[str, float]:
    """A worker's speed figures (worker_speed.py's keys) corrected by what it learnt (0: not learnt, unchanged)."""
    out = dict(speed)
    if prefill_scale > 0 and out.get("prefill_tokens_per_s"):
        out["prefill_tokens_per_s"] = out["prefill_tokens_per_s"] / prefill_scale
    if decode_scale > 0:
        for key in ("decode_base_s", "decode_step_s"):
            if out.get(key):
                out[key] = out[key] * decode_scale
    return out


def scaled(timer: StepTimer, scale: StepScale) -> StepTimer:
    """``timer`` corrected by ``scale`` (the timer itself where there is nothing to correct)."""
    return timer if scale == StepScale() else ScaledStepTimer(timer, scale)


class StepScaleLearner:
    """Keeps the recent (predicted, measured) pairs of each phase; the scale is their ratio of sums.

    A ratio of sums, not a median of ratios: when the worker's event loop is late, two tokens of
    consecutive steps arrive together, so one gap reads too long and the next too short. Their
    sum is still the two steps' time, which a median would not keep (it picks one of the two).
    Time the machine spends elsewhere (a busy neighbour) is the machine's speed and is kept;
    only a ratio no machine explains (a stopped process) is dropped.
    """

    def __init__(self, window: int = WINDOW) -> None:
        self._pairs: dict[str, deque[tuple[float, float]]] = {
            "prefill": deque(maxlen=window),
            "decode": deque(maxlen=window),
        }

    def observe(self, phase: str, predicted_s: float, measured_s: float) -> None:
        if predicted_s <= 0 or measured_s < 0 or not math.isfinite(measured_s) or not math.isfinite(predicted_s):
            return
        if measured_s / predicted_s <= PLAUSIBLE[1]:
            self._pairs[phase].append((predicted_s, measured_s))

    def samples(self, phase: str) -> int:
        return len(self._pairs[phase])

    def learnt(self, phase: str) -> float | None:
        """The phase's scale, or None while it has fewer than MIN_SAMPLES observations."""
        pairs = self._pairs[phase]
        if len(pairs) < MIN_SAMPLES:
            return None
        ratio = sum(m for _, m in pairs) / sum(p for p, _ in pairs)
        return min(max(ratio, PLAUSIBLE[0]), PLAUSIBLE[1])

    def scale(self) -> StepScale:
        """What has been learnt, 1.0 for a phase not learnt yet."""
        return StepScale(prefill=self.learnt("prefill") or 1.0, decode=self.learnt("decode") or 1.0)
