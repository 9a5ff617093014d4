"""Four autoscalers behind one interface, for the simulator: static, hpa, homogeneous, tessera.

Each sees what the live autoscaler would see once per interval (an Observation: the
arrivals of the interval, the requests held at the router, and per instance type how many
instances are ready or starting, how busy they were and the latencies they delivered) and
answers with target counts per InstanceType. None of them touches the simulator: the
fleet mechanics (start-up delay, draining, billing) are tessera/sim/elastic.py's, so the
same decisions could drive the live service.

- static: the planner's plan for the workload's peak rate, held throughout (what an
  operator provisions without an autoscaler);
- hpa: Kubernetes' HPA rule on one instance type (tessera/sim/hpa.py);
- homogeneous: the tessera loop restricted to one accelerator kind (plan_homogeneous);
- tessera: forecast, least-cost heterogeneous plan (roles included), hysteresis, and online
  corrections from observed against predicted latencies.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from tessera.planning import corrections as corr
from tessera.planning import forecast as fc
from tessera.planning import hysteresis
from tessera.planning.capacity import CapacityModel
from tessera.planning.corrections import CorrectionState
from tessera.planning.fleet import InstanceType
from tessera.planning.load import LoadMix
from tessera.planning.planner import Plan, capacities, handoff_seconds, plan, plan_homogeneous
from tessera.planning.slo_policy import SloPolicy
from tessera.sim import hpa

AUTOSCALERS = ("static", "hpa", "homogeneous", "tessera")
LEARN_ABOVE = 0.5  # learn corrections only from intervals a type ran at >= this share of its capacity


@dataclass(frozen=True)
class TypeObservation:
    """One instance type over the interval: instances ready / still starting, each ready one's busy
    fraction, and the latencies (s) of the requests it finished (TTFT where it computed the prompt,
    TPOT where it decoded)."""

    ready: int = 0
    starting: int = 0
    busy: tuple[float, ...] = ()
    served: int = 0
    ttft_s: tuple[float, ...] = ()
    tpot_s: tuple[float, ...] = ()

    @property
    def requested(self) -> int:
        return self.ready + self.starting


@dataclass(frozen=True)
class Observation:
    now_s: float
    interval_s: float
    arrivals: fc.IntervalStats
    queued: int  # held at the router (nothing could take them)
    fleet: Mapping[InstanceType, TypeObservation] = field(default_factory=dict)
    arrival_times: tuple[float, ...] = ()  # of the interval's arrivals (for burst rates)

    def peak_rps(self, window_s: float) -> float:
        """The highest arrival rate over `window_s` windows of the interval (its mean if longer)."""
        if window_s <= 0 or window_s >= self.interval_s or not self.arrival_times:
            return self.arrivals.rate_rps
        start = self.now_s - self.interval_s
        bins = np.bincount(((np.asarray(self.arrival_times) - start) // window_s).astype(int).clip(0))
        return float(bins.max()) / window_s

    def counts(self) -> dict[InstanceType, int]:
        """The fleet asked for (ready or starting; draining instances are on their way out)."""
        return {t: o.requested for t, o in self.fleet.items() if o.requested}


@dataclass(frozen=True)
class ScalingDecision:
    counts: dict[InstanceType, int]
    reasons: tuple[str, ...] = ()
    forecast_rps: float | None = None
    plan: str = ""
    factors: dict[str, tuple[float, float]] = field(default_factory=dict)  # learnt (ttft, tpot) per type


class Autoscaler:
    """The interface: a name, a decision interval, and decide(observation) -> target counts.

    `initial` is the fleet already running when the workload starts (empty: none, and the first
    decision comes at t=0); start() tells the autoscaler it is running."""

    name = "autoscaler"
    interval_s = 30.0
    initial: dict[InstanceType, int] = {}
    peak_counts: dict[InstanceType, int] = {}  # its own provisioning for the peak (the warm start)

    def start(self, counts: Mapping[InstanceType, int]) -> None:
        """The fleet running at t=0, before the first decision."""

    def decide(self, obs: Observation) -> ScalingDecision:
        raise NotImplementedError


class Static(Autoscaler):
    """One fleet, decided before the run and never changed."""

    name = "static"

    def __init__(self, counts: Mapping[InstanceType, int], interval_s: float, why: str = "") -> None:
        self.counts, self.interval_s, self.why = dict(counts), interval_s, why

    def decide(self, obs: Observation) -> ScalingDecision:
        return ScalingDecision(dict(self.counts), (), None, self.why)


class Hpa(Autoscaler):
    """Kubernetes' HPA on one instance type, every sync period."""

    name = "hpa"

    def __init__(self, itype: InstanceType, params: hpa.HpaParams) -> None:
        self.itype, self.params, self.interval_s = itype, params, params.sync_period_s
        self.state = hpa.HpaState()

    def decide(self, obs: Observation) -> ScalingDecision:
        seen = obs.fleet.get(self.itype, TypeObservation())
        current = seen.requested or self.params.min_replicas
        self.state, desired = hpa.step(self.state, obs.now_s, current, seen.busy, seen.starting, self.params)
        util = float(np.mean(seen.busy)) if seen.busy else 0.0
        why = (
            f"{self.itype.label}: {util:.0%} busy (target {self.params.target_utilisation:.0%}), {current} -> {desired}"
        )
        return ScalingDecision({self.itype: desired}, (why,))


PlanFn = Callable[[LoadMix, float, CorrectionState, Mapping[InstanceType, int]], Plan]


class PlannerLoop(Autoscaler):
    """The SLO-driven loop: forecast the next interval, plan for it, smooth with hysteresis, and
    learn per-type correction factors where the model predicted the SLOs would hold but the
    observed percentiles say otherwise."""

    def __init__(
        self,
        name: str,
        policy: SloPolicy,
        capacity: CapacityModel,
        plan_fn: PlanFn,
        free_devices: Mapping[str, int],
        learn: bool = True,
        burst_window_s: float = 0.0,
    ) -> None:
        self.name, self.policy, self.capacity, self.plan_fn = name, policy, capacity, plan_fn
        self.free, self.learn, self.interval_s = dict(free_devices), learn, policy.interval_s
        self.burst_window_s = burst_window_s
        self.forecast_state = fc.ForecastState()
        self.fleet_state = hysteresis.FleetState()
        self.corrections = CorrectionState()

    def start(self, counts: Mapping[InstanceType, int]) -> None:
        self.fleet_state = hysteresis.FleetState(tuple(sorted((t, n) for t, n in counts.items() if n)), (), 0.0)

    def decide(self, obs: Observation) -> ScalingDecision:
        p = self.policy
        self.forecast_state = fc.observe(self.forecast_state, self._arrivals(obs), p.forecast)
        load = fc.forecast(self.forecast_state, p.forecast, p.interval_s)
        idle_s = self.forecast_state.idle_s
        if obs.queued:  # requests held at the router are demand too: a fleet scaled to zero comes back
            load, idle_s = load.scaled(max(load.rate_rps, obs.queued / obs.interval_s)), 0.0
        if self.learn:
            self.corrections = learn_corrections(self.corrections, obs, load, p, self.capacity)
        current = self.fleet_state.as_dict()
        chosen = self.plan_fn(load, idle_s, with_prior(self.corrections, p.instance_types()), current)
        self.fleet_state, d = hysteresis.step(
            self.fleet_state, chosen.counts, obs.now_s, p.hysteresis, self.free, chosen.serves
        )
        factors = {label: (round(f.ttft, 3), round(f.tpot, 3)) for label, f in self.corrections.factors}
        return ScalingDecision(d.counts, d.reasons, load.rate_rps, chosen.summary().splitlines()[0], factors)

    def _arrivals(self, obs: Observation) -> fc.IntervalStats:
        """The interval as the forecaster sees it: with a burst window, at its peak rate over such
        windows. The capacity model takes arrivals as Poisson at the interval's mean; a trace whose
        bursts of a few seconds run at several times that mean queues past a sub-second TTFT target
        long before the next interval (and a start-up delay) could add instances."""
        stats = obs.arrivals
        if self.burst_window_s <= 0 or not stats.requests:
            return stats
        peak = obs.peak_rps(self.burst_window_s)
        return replace(stats, requests=max(stats.requests, round(peak * stats.duration_s)))


def learn_corrections(
    state: CorrectionState,
    obs: Observation,
    load: LoadMix,
    policy: SloPolicy,
    capacity: CapacityModel,
    learn_above: float = LEARN_ABOVE,
) -> CorrectionState:
    """Compare each type's observed TTFT/TPOT percentiles with the corrected model's prediction at
    the per-instance rate it carried, and update its factors (corrections.observe).

    Only where the model predicted the SLOs would hold: a type carrying more than its capacity
    (requests queued while new instances started) misses by design, not because the model is off.
    And only near the knee (at least `learn_above` of the type's capacity): that is where the
    factor decides the plan, and the model's error there need not be its error on an idle
    instance, where the percentile is one lone prompt and no queueing (on a bursty trace the
    model is pessimistic idle and optimistic loaded, and averaging both would undo the lesson)."""
    caps = None
    targets = policy.targets
    for itype, seen in sorted(obs.fleet.items()):
        if not seen.ready or seen.served < policy.corrections.min_samples:
            continue
        rate = seen.served / (obs.interval_s * seen.ready)
        factors = state.for_label(itype.label)
        handoff = 0.0
        if itype.role == "prefill":
            caps = caps or capacities(policy, load, capacity, state)
            handoff = handoff_seconds(
                policy, load, capacity, itype, {t: c for t, c in caps.items() if t.role == "decode"}
            )
        try:
            predicted = capacity.predict(itype, load.scaled(rate), targets, factors, handoff)
        except KeyError:
            continue
        if not predicted.ok:
            continue
        if rate < learn_above * capacity.capacity(itype, load, targets, factors, handoff).rate_rps:
            continue
        for metric, values, pred, target in (
            ("ttft", seen.ttft_s, predicted.ttft_s, targets.ttft),
            ("tpot", seen.tpot_s, predicted.tpot_s, targets.tpot),
        ):
            if len(values) >= policy.corrections.min_samples and math.isfinite(pred) and pred > 0:
                observed = float(np.percentile(values, target.percentile))
                state = corr.observe(state, itype.label, metric, pred, observed, len(values), policy.corrections)
    return state


def with_prior(state: CorrectionState, types: list[InstanceType]) -> CorrectionState:
    """Factors for every type, those never observed at the geometric mean of the observed ones.

    Part of the model's error belongs to the workload rather than to one accelerator (arrivals
    burstier than Poisson, prompt-decode interference on short answers), and a type learnt
    nothing about would otherwise look faster than the types already corrected, so the plan
    would keep swapping to it."""
    seen = dict(state.factors)
    if not seen:
        return state
    prior = corr.Factors(
        float(np.exp(np.mean([math.log(f.ttft) for f in seen.values()]))),
        float(np.exp(np.mean([math.log(f.tpot) for f in seen.values()]))),
    )
    table = {t.label: seen.get(t.label, prior) for t in types} | seen
    return CorrectionState(tuple(sorted(table.items())))


# -- building them --------------------------------------------------------------------------------


def peak_load(arrivals: list[float], prompts: list[int], outputs: list[int], window_s: float = 60.0) -> LoadMix:
    """The highest request rate over any `window_s` window, with the whole workload's request shape
    (its measured p90 and p99 prompt lengths included, as the autoscalers' intervals measure them)."""
    if not arrivals:
        return LoadMix(0.0)
    times = np.sort(np.asarray(arrivals))
    ends = np.searchsorted(times, times + window_s, side="left")
    peak = float(np.max(ends - np.arange(len(times)))) / window_s
    return LoadMix(
        peak,
        float(np.mean(prompts)),
        float(np.percentile(prompts, 90)),
        float(np.mean(outputs)),
        input_p99=float(np.percentile(prompts, 99)),
    )


def _homogeneous_kind(policy: SloPolicy, peak: LoadMix, capacity: CapacityModel) -> str:
    best = plan_homogeneous(policy, peak, capacity)
    if not best.entries:
        raise ValueError(f"no single accelerator kind in the inventory serves the peak: {best.reasons[0]}")
    return best.entries[0].itype.accelerator


def build_autoscaler(
    name: str,
    policy: SloPolicy,
    capacity: CapacityModel,
    peak: LoadMix,
    hpa_params: hpa.HpaParams | None = None,
    burst_window_s: float = 0.0,
    warm_start: bool = True,
) -> Autoscaler:
    """One of AUTOSCALERS for `policy`; `peak` (peak_load) sizes static and picks the homogeneous kind;
    `burst_window_s` makes the planner loops plan for each interval's peak rate over such windows.

    warm_start: every autoscaler starts from its own provisioning for the peak (static's plan; the
    best homogeneous plan of hpa's and homogeneous's kind), as a deployment that was running before
    the workload began would; otherwise from nothing (its first decision at t=0 is taken as ready)."""
    autoscaler = _build(name, policy, capacity, peak, hpa_params, burst_window_s)
    if warm_start:
        autoscaler.initial = autoscaler.peak_counts
    return autoscaler


def _build(
    name: str,
    policy: SloPolicy,
    capacity: CapacityModel,
    peak: LoadMix,
    hpa_params: hpa.HpaParams | None,
    burst_window_s: float,
) -> Autoscaler:
    if name == "static":
        chosen = plan(policy, peak, capacity)
        static = Static(
            chosen.counts, policy.interval_s, f"peak {peak.rate_rps:.3g} req/s: {chosen.summary().splitlines()[0]}"
        )
        static.peak_counts = chosen.counts
        return static
    if name == "hpa":
        mixed = replace(policy, roles=("mixed",))
        best = plan_homogeneous(mixed, peak, capacity)
        if not best.entries:
            raise ValueError(f"hpa: no mixed instance type serves the peak: {best.reasons[0]}")
        itype = max(best.entries, key=lambda e: e.count * e.itype.tp).itype
        free = policy.free_devices()[itype.accelerator] // itype.tp
        params = replace(hpa_params or hpa.HpaParams(), max_replicas=free)
        scaler = Hpa(itype, params)
        scaler.peak_counts = {itype: best.counts[itype]}
        return scaler
    if name == "homogeneous":
        kind = _homogeneous_kind(policy, peak, capacity)

        def homogeneous(load: LoadMix, idle_s: float, corrections: CorrectionState, current) -> Plan:
            return plan_homogeneous(policy, load, capacity, accelerator=kind, idle_s=idle_s, corrections=corrections)

        loop = PlannerLoop(
            "homogeneous",
            policy,
            capacity,
            homogeneous,
            {kind: policy.free_devices()[kind]},
            burst_window_s=burst_window_s,
        )
        loop.peak_counts = plan_homogeneous(policy, peak, capacity, accelerator=kind).counts
        return loop
    if name == "tessera":

        def heterogeneous(load: LoadMix, idle_s: float, corrections: CorrectionState, current) -> Plan:
            return plan(policy, load, capacity, idle_s=idle_s, corrections=corrections, current=current)

        loop = PlannerLoop(
            "tessera", policy, capacity, heterogeneous, policy.free_devices(), burst_window_s=burst_window_s
        )
        loop.peak_counts = plan(policy, peak, capacity).counts
        return loop
    raise ValueError(f"unknown autoscaler {name!r}; known: {', '.join(AUTOSCALERS)}")
