"""Predict the next interval's load from the recent ones: Holt's linear trend plus a burst floor.

New instances take minutes to come up, so the planner sizes for where the load
is going, not where it was. Holt's double exponential smoothing (a level and a
trend, each an EWMA) follows ramps without the lag of a plain moving average; it
is what Dynamo's planner offers beside ARIMA and Prophet, and it needs two
numbers of state rather than a fitted model. Smoothing alone answers a burst
late and a falling load early, so the forecast never drops below the peak of
the last `burst_window` intervals: up at the first busy interval, down only once
the burst has left the window. Prompt and answer lengths are plain EWMAs.

Pure: the state is a frozen record passed in and returned, so the service keeps
it in memory, the simulator keeps one per run, and tests replay series.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from tessera.planning.load import LoadMix


@dataclass(frozen=True)
class ForecastParams:
    """alpha, beta: Holt's level and trend weights; burst_window: intervals whose peak is a floor;
    length_alpha: EWMA weight of the lengths; horizon: intervals ahead to forecast;
    peak_window_s: each interval counts as its peak arrival rate over windows this long (0, or
    not shorter than the interval: its mean). Capacity is modelled for Poisson arrivals at a
    rate; a trace whose bursts of a few seconds run at several times the interval's mean queues
    past a sub-second TTFT target long before the next interval could add instances.
    burst_headroom: an interval whose peak is a burst (tessera.planning.loop.is_burst) counts at
    its peak times this, so the fleet is sized for a burst bigger than the last. Bursts come
    without warning and a new instance takes a minute or more: whatever the fleet holds when one
    starts is all it gets. On the Azure 2023 code hour each record 10-s peak ran up to 1.4x the
    one before (23.4 req/s at 570 s, then 32.7 at 840 s after two idle minutes). Steady load
    (peaks within Poisson noise) is planned at its rate: the capacity model already prices
    Poisson arrivals."""

    alpha: float = 0.5
    beta: float = 0.3
    burst_window: int = 2
    length_alpha: float = 0.3
    horizon: float = 1.0
    peak_window_s: float = 10.0
    burst_headroom: float = 1.5


@dataclass(frozen=True)
class IntervalStats:
    """What one planning interval saw: requests that arrived and their lengths (None: not measured;
    input_p99 is optional: without it the planner takes the tail from a lognormal through the mean
    and p90; output_p90 too: without it the planner sizes TPOT for the mean answer alone)."""

    duration_s: float
    requests: int
    input_mean: float | None = None
    input_p90: float | None = None
    output_mean: float | None = None
    prefix_reuse: float | None = None
    input_p99: float | None = None
    output_p90: float | None = None

    @property
    def rate_rps(self) -> float:
        return self.requests / self.duration_s if self.duration_s > 0 else 0.0


@dataclass(frozen=True)
class ForecastState:
    """Holt's level (req/s) and trend (req/s per interval), the last rates, the smoothed request
    shape (None until a request is seen: LoadMix's defaults stand in), and how long no request
    has arrived (what scale-to-zero waits on)."""

    level: float = 0.0
    trend: float = 0.0
    recent: tuple[float, ...] = ()
    shape: LoadMix | None = None
    idle_s: float = 0.0
    intervals: int = 0


def observe(state: ForecastState, stats: IntervalStats, params: ForecastParams = ForecastParams()) -> ForecastState:
    """The state after one more interval."""
    rate = stats.rate_rps
    if state.intervals == 0:
        level, trend = rate, 0.0
    else:
        level = params.alpha * rate + (1.0 - params.alpha) * (state.level + state.trend)
        trend = params.beta * (level - state.level) + (1.0 - params.beta) * state.trend
    recent = (state.recent + (rate,))[-max(params.burst_window, 1) :]
    idle = 0.0 if stats.requests > 0 else state.idle_s + stats.duration_s
    shape = _smoothed_shape(state, stats, params.length_alpha)
    return ForecastState(level, trend, recent, shape, idle, state.intervals + 1)


def _smoothed_shape(state: ForecastState, stats: IntervalStats, weight: float) -> LoadMix | None:
    if stats.requests <= 0:
        return state.shape
    old = state.shape or LoadMix(0.0)
    w = weight if state.shape is not None else 1.0

    def mix(prev: float, new: float | None) -> float:
        return prev if new is None else (1.0 - w) * prev + w * new

    input_mean = mix(old.input_mean, stats.input_mean)
    p90_seen = (
        stats.input_p90
        if stats.input_p90 is not None
        else (None if stats.input_mean is None else stats.input_mean * old.input_p90 / old.input_mean)
    )

    def optional(prev: float, seen: float | None, prev_mean: float, seen_mean: float | None) -> float:
        """A percentile only some routers measure (0: never measured): the first measurement is taken
        as is, later ones smoothed; an interval without one moves it with its mean."""
        if seen is not None:
            return seen if prev <= 0 else mix(prev, seen)
        if prev > 0 and seen_mean is not None:
            return mix(prev, seen_mean * prev / prev_mean)
        return prev

    p99 = optional(old.input_p99, stats.input_p99, old.input_mean, stats.input_mean)
    out_p90 = optional(old.output_p90, stats.output_p90, old.output_mean, stats.output_mean)
    return LoadMix(
        0.0,
        input_mean=max(input_mean, 1.0),
        input_p90=max(mix(old.input_p90, p90_seen), 0.0),
        output_mean=max(mix(old.output_mean, stats.output_mean), 1.0),
        prefix_reuse=min(max(mix(old.prefix_reuse, stats.prefix_reuse), 0.0), 0.99),
        input_p99=max(p99, 0.0),
        output_p90=max(out_p90, 0.0),
    )


def forecast(
    state: ForecastState, params: ForecastParams = ForecastParams(), interval_s: float | None = None
) -> LoadMix:
    """The load to plan for: max(Holt's level + horizon*trend, the recent peak), with the smoothed shape.

    Zero when every interval in the burst window was empty and the trend expects under half a
    request in the next interval (`interval_s`; without it, under 1e-3 req/s): an idle model
    forecasts exactly zero, which is what scale-to-zero needs."""
    holt = state.level + params.horizon * state.trend
    peak = max(state.recent, default=0.0)
    rate = max(holt, peak, 0.0)
    floor = 0.5 / interval_s if interval_s else 1e-3
    if peak == 0.0 and holt < floor:
        rate = 0.0
    return replace(state.shape or LoadMix(0.0), rate_rps=rate)
