"""Replay a workload on a fleet an autoscaler resizes as it goes, in virtual time.

Wires the three parts together: the Simulator (requests, engines, placement), the
ElasticFleet (start-up delay, draining, billing) and an Autoscaler (the decision). A tick
every `autoscaler.interval_s` observes the interval, asks for a decision and applies it;
ticks stop once every request is done (or `max_tail_s` after the last arrival, so a fleet
that never comes back cannot loop forever; its held requests then count as misses).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from tessera.engine_model.perf.model_arch import ModelArch
from tessera.placement.pipeline import load_profile
from tessera.planning.engines import engines_for, launch_args_by_type
from tessera.planning.fleet import EngineKey
from tessera.planning.slo_policy import SloPolicy
from tessera.sim.autoscalers import Autoscaler
from tessera.sim.elastic import DEFAULT_STARTUP_S, ElasticFleet, Lifetime
from tessera.sim.simulator import SimResult, Simulator
from tessera.sim.workloads import SimRequest


@dataclass(frozen=True)
class Tick:
    """One decision: when, the forecast it planned for (planner loops), the fleet it asked for, why."""

    t: float
    arrival_rps: float
    queued: int
    forecast_rps: float | None
    counts: dict[str, int]
    plan: str
    reasons: tuple[str, ...]
    factors: dict[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class AutoscaledRun:
    autoscaler: str
    policy: SloPolicy
    startup_s: float | None  # None: each type's cold start from the start-up model
    result: SimResult
    lifetimes: list[Lifetime]
    ticks: list[Tick] = field(default_factory=list)
    end_s: float = 0.0


def run_autoscaled(
    workload: list[SimRequest],
    policy: SloPolicy,
    autoscaler: Autoscaler,
    arch: ModelArch,
    *,
    startup_s: float | None = DEFAULT_STARTUP_S,
    mixed_profile: str = "tessera",
    disagg_profile: str = "tessera_disagg",
    seed: int = 0,
    max_tail_s: float = 3600.0,
    sample_interval_s: float | None = None,
    engine_args: Mapping[EngineKey, Mapping[str, object]] | None = None,
) -> AutoscaledRun:
    """Simulate `workload` with `autoscaler` sizing the fleet: from `autoscaler.initial`, ready at t=0,
    or from nothing (scale from zero: the first decision at t=0 starts instances, requests wait at
    the router). Prices come from the policy's inventory; `engine_args` per (accelerator, tp) are
    what instances launch with (default: the policy's, planning.engines.launch_args_by_type: the
    prefill chunk the planner priced)."""
    if engine_args is None:
        engine_args = launch_args_by_type(engines_for(policy))
    horizon = max((r.arrival_s for r in workload), default=0.0)
    mixed = load_profile(mixed_profile, seed=seed)
    disagg = load_profile(disagg_profile, seed=seed) if "prefill" in policy.roles else None
    sim = Simulator(
        arch,
        arch.name,
        [],
        mixed,
        sample_interval_s=sample_interval_s if sample_interval_s is not None else max(0.1, horizon / 2000),
    )
    prices = {item.accelerator: item.cost_per_hour for item in policy.inventory}
    fleet = ElasticFleet(sim, arch, prices, startup_s, mixed, disagg, engine_args)
    ticks: list[Tick] = []

    def tick(sim: Simulator) -> None:
        obs = fleet.observe(autoscaler.interval_s)
        decision = autoscaler.decide(obs)
        fleet.apply(decision.counts)
        ticks.append(
            Tick(
                sim.now,
                obs.arrivals.rate_rps,
                obs.queued,
                decision.forecast_rps,
                {t.label: n for t, n in sorted(decision.counts.items()) if n},
                decision.plan,
                decision.reasons,
                decision.factors,
            )
        )
        if sim.pending > 0 and sim.now < horizon + max_tail_s:
            sim.call_at(sim.now + autoscaler.interval_s, tick)

    if autoscaler.initial:

        def warm(sim: Simulator) -> None:
            fleet.apply(autoscaler.initial, ready_now=True)
            autoscaler.start(autoscaler.initial)
            ticks.append(
                Tick(
                    0.0,
                    0.0,
                    0,
                    None,
                    {t.label: n for t, n in sorted(autoscaler.initial.items()) if n},
                    "running before the workload",
                    (),
                )
            )
            sim.call_at(autoscaler.interval_s, tick)

        sim.call_at(0.0, warm)
    else:
        sim.call_at(0.0, tick)
    result = sim.run(workload)
    end = max(result.duration_s, horizon)
    fleet.close(end)
    return AutoscaledRun(autoscaler.name, policy, startup_s, result, list(fleet.lifetimes.values()), ticks, end)


def fleet_changes(run: AutoscaledRun) -> list[dict]:
    """The ticks where the asked-for fleet or the learnt correction factors changed (the first
    included), for the JSON and logs."""
    out, last = [], None
    for t in run.ticks:
        if (t.counts, t.factors) != last:
            out.append(
                {
                    "t": round(t.t, 1),
                    "fleet": describe_labels(t.counts),
                    "forecast_rps": t.forecast_rps,
                    "arrival_rps": round(t.arrival_rps, 3),
                    "queued": t.queued,
                    "plan": t.plan,
                    "reasons": list(t.reasons),
                    "corrections": t.factors,
                }
            )
            last = (t.counts, t.factors)
    return out


def describe_labels(counts: dict[str, int]) -> str:
    return ", ".join(f"{n} x {label}" for label, n in counts.items()) or "nothing"
