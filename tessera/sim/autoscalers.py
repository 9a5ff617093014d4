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

homogeneous and tessera are tessera.planning.loop.PlanningLoop, the loop the live service runs
(services/autoscaler/model_autoscaler.py); this module only turns the simulator's Observation
into the planning loop's (`planning_observation`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

import numpy as np

from tessera.planning import forecast as fc
from tessera.planning.capacity import CapacityModel
from tessera.planning.fleet import InstanceType
from tessera.planning.load import LoadMix
from tessera.planning.loop import PlanningLoop
from tessera.planning.observation import Observation as PlanObservation
from tessera.planning.observation import TypeObservation as PlanTypeObservation
from tessera.planning.planner import plan, plan_homogeneous
from tessera.planning.slo_policy import SloPolicy
from tessera.sim import hpa

AUTOSCALERS = ("static", "hpa", "homogeneous", "tessera")


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


class PlannerLoop(Autoscaler):
    """The SLO-driven loop (tessera.planning.loop.PlanningLoop, the one the live service runs),
    fed from the simulator: each Observation becomes the planning loop's, with each type's
    latency percentiles at the policy's percentiles and, with a burst window, the interval's
    peak arrival rate over such windows."""

    def __init__(self, name: str, loop: PlanningLoop, burst_window_s: float = 0.0) -> None:
        self.name, self.loop, self.burst_window_s = name, loop, burst_window_s
        self.interval_s = loop.policy.interval_s

    def start(self, counts: Mapping[InstanceType, int]) -> None:
        self.loop.start(counts)

    def decide(self, obs: Observation) -> ScalingDecision:
        return self.decide_planned(planning_observation(obs, self.loop.policy, self.burst_window_s))

    def decide_planned(self, obs: PlanObservation) -> ScalingDecision:
        """The decision for an interval already in the planning loop's terms (a recorded live one)."""
        d = self.loop.step(obs)
        return ScalingDecision(d.counts, d.reasons, d.load.rate_rps, d.plan.summary().splitlines()[0], d.factors())


def planning_observation(obs: Observation, policy: SloPolicy, burst_window_s: float = 0.0) -> PlanObservation:
    """What the planning loop sees of a simulated interval: per type, the latency percentiles at
    the policy's percentiles over the requests it finished, in its role as the live service
    reports them (TTFT where it computes prompts, TPOT where it decodes: a decode worker's local
    prefills are placement's fallback, not its role's work); the peak rate over `burst_window_s`
    windows (0: none, the interval counts at its mean)."""
    ttft_pct, tpot_pct = policy.targets.ttft.percentile, policy.targets.tpot.percentile

    def pct(values: tuple[float, ...], q: float) -> float | None:
        return float(np.percentile(values, q)) if values else None

    def seen(t: InstanceType, o: TypeObservation) -> PlanTypeObservation:
        ttft = o.ttft_s if t.role != "decode" else ()
        tpot = o.tpot_s if t.role != "prefill" else ()
        return PlanTypeObservation(
            o.ready, o.starting, o.served, pct(ttft, ttft_pct), len(ttft), pct(tpot, tpot_pct), len(tpot)
        )

    fleet = {t: seen(t, o) for t, o in obs.fleet.items()}
    peak = obs.peak_rps(burst_window_s) if burst_window_s > 0 else None
    return PlanObservation(obs.now_s, obs.arrivals, peak, obs.queued, fleet)


# -- building them --------------------------------------------------------------------------------


def peak_load(arrivals: list[float], prompts: list[int], outputs: list[int], window_s: float = 60.0) -> LoadMix:
    """The highest request rate over any `window_s` window, with the whole workload's request shape
    (its measured p90 and p99 prompt lengths and p90 answer length included, as the autoscalers'
    intervals measure them)."""
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
        output_p90=float(np.percentile(outputs, 90)),
    )


def homogeneous_kind(policy: SloPolicy, peak: LoadMix, capacity: CapacityModel) -> str:
    """The one accelerator kind the homogeneous baseline runs: the cheapest single kind for the peak."""
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
    burst_window_s: float | None = None,
    warm_start: bool = True,
    opening: LoadMix | None = None,
) -> Autoscaler:
    """One of AUTOSCALERS for `policy`; `peak` (peak_load) sizes static and picks the homogeneous kind;
    `burst_window_s` makes the planner loops plan for each interval's peak rate over such windows
    (None: the policy's forecast.peak_window_s, as the live service measures it; 0: the mean).

    warm_start: every autoscaler starts from its own provisioning for the peak (static's plan; the
    best homogeneous plan of hpa's and homogeneous's kind), as a deployment that was running before
    the workload began would; otherwise from nothing (its first decision at t=0 is taken as ready).

    opening: with warm_start, the load that deployment was provisioned for instead of the peak
    (static keeps its peak fleet). A day's workload opens at midnight, where yesterday's loop left a
    fleet for midnight's load, not for the evening peak: a day started from the peak fleet billed
    the loops for its ten-minute scale-down: on the scarce day in 6 h, $2.33 of the $8.28 by which
    tessera exceeded its planner floor (issue 18, benchmarks/autoscaling_diurnal.py)."""
    window = policy.forecast.peak_window_s if burst_window_s is None else burst_window_s
    autoscaler = _build(name, policy, capacity, peak, hpa_params, window)
    if warm_start:
        autoscaler.initial = autoscaler.peak_counts
        if opening is not None and name != "static":
            autoscaler.initial = _provisioned_for(autoscaler, policy, capacity, opening)
    return autoscaler


def _provisioned_for(
    autoscaler: Autoscaler, policy: SloPolicy, capacity: CapacityModel, load: LoadMix
) -> dict[InstanceType, int]:
    """The fleet `autoscaler` would provision for `load`, of the kind it chose for the peak: the
    planner's plan for tessera, the plan on its one kind for homogeneous, and for hpa as many
    instances of its type as the plan on that type alone needs (at least one)."""
    if isinstance(autoscaler, PlannerLoop):
        kind = autoscaler.loop.accelerator
        if kind is None:
            return dict(plan(policy, load, capacity).counts)
        return dict(plan_homogeneous(policy, load, capacity, accelerator=kind).counts)
    (itype,) = autoscaler.peak_counts
    alone = replace(policy, roles=("mixed",), tp=(itype.tp,))
    counts = plan_homogeneous(alone, load, capacity, accelerator=itype.accelerator).counts
    return {itype: max(1, counts.get(itype, 0))}


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
        kind = homogeneous_kind(policy, peak, capacity)

        loop = PlannerLoop("homogeneous", PlanningLoop(policy, capacity, accelerator=kind), burst_window_s)
        loop.peak_counts = _provisioned_for(loop, policy, capacity, peak)
        return loop
    if name == "tessera":
        loop = PlannerLoop("tessera", PlanningLoop(policy, capacity), burst_window_s)
        loop.peak_counts = _provisioned_for(loop, policy, capacity, peak)
        return loop
    raise ValueError(f"unknown autoscaler {name!r}; known: {', '.join(AUTOSCALERS)}")
