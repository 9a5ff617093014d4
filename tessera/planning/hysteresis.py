"""Turn each interval's plan into the fleet to run, without flapping.

Capacity that is missing costs SLO misses now, while extra capacity costs only
money, and every instance started or stopped costs minutes of warm-up and a
drain. So the rules are asymmetric, as in Kubernetes' HPA stabilisation window:

- **up at once**, when needed: if the running fleet (less any scale-down due now) no longer
  serves the plan's demand, it grows in the same interval, to the least-cost fleet that keeps
  every running instance and serves the demand (`top_up`), or where there is none (or no
  `top_up` given) every type the plan wants more of gets them. A fleet that still serves it
  is kept, so a plan that merely swaps one mix for another of equal capacity (noise near a
  tie) starts nothing; and a plan that swapped to another shape is not started whole beside
  the running one when a smaller addition will do (issue 18's floor 6: a plan flipping
  between near-tie shapes ran both for hours). The other shape is reached by the swap below.
  Without `serves` (no capacities at hand), any type the plan wants more of goes up at once;
- **down slowly**: a type is cut only when every plan of the last
  `scale_down_stable_intervals` intervals wanted fewer, the last change is at least
  `scale_down_cooldown_s` old, and then only down to the largest of those plans and by at most
  `max_scale_down_fraction` of its count (at least one) per interval;
- **scale to zero at once**: the planner returns an empty plan only after the model has been
  idle for the policy's `scale_to_zero_idle_s`, which is itself the stabilisation;
- **inventory wins**: when keeping the old instances beside the new ones would take more
  devices of a kind than are free, that kind follows the plan at once (a swap).
- **swap to a cheaper fleet, make before break**: a running fleet that still serves the plan is
  kept (see "up at once"), so a day's peak fleet of one type would otherwise run through the
  night where the plan wants a cheaper type. When the running types' scale-down is due (stable
  and cooled down) but the smaller fleet would not serve, and the plan costs at least
  `swap_min_saving` less than the running fleet and fits beside it, the plan's instances start
  beside the running ones; those are cut by the down rule one cooldown later, and only once the
  fleet left after the cut is ready enough to serve (`ready`), so capacity never dips while the
  replacements start. A swap pays both fleets for that cooldown, so it waits, as in the
  ski-rental problem, until the plans have been that much cheaper for long enough that the
  saving forgone equals the overlap's cost (`(now - cheaper_since) * saving >= cooldown *
  cost(plan)`; an online rule within 2x of hindsight's). A plan that stays cheaper for a night
  swaps after a few minutes; one that drifts back within minutes (corrections still settling,
  a near tie) costs nothing.

Pure: FleetState in, FleetState and a FleetDecision out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from tessera.planning.fleet import Counts, InstanceType, describe, devices_by_kind, kinds_without_room, nonzero


@dataclass(frozen=True)
class HysteresisParams:
    """Defaults: five minutes of smaller plans (Kubernetes' HPA waits 300 s to scale down) at 30 s
    intervals, and at most half of a type per step; a swap to another type only for a saving of
    15% or more (a swap runs both fleets for a cooldown and restarts the instances' caches)."""

    scale_down_stable_intervals: int = 10
    scale_down_cooldown_s: float = 300.0
    max_scale_down_fraction: float = 0.5
    swap_min_saving: float = 0.15


@dataclass(frozen=True)
class FleetState:
    """The fleet the autoscaler has asked for, the recent plans (oldest first), when it last changed."""

    counts: tuple[tuple[InstanceType, int], ...] = ()
    targets: tuple[tuple[tuple[InstanceType, int], ...], ...] = ()
    last_change_s: float = -math.inf
    cheaper_since_s: float | None = None  # since when every plan cost swap_min_saving less than the fleet

    def as_dict(self) -> dict[InstanceType, int]:
        return dict(self.counts)


@dataclass(frozen=True)
class FleetDecision:
    """The counts to run now and the reasons, one line per type that changed or was held."""

    counts: dict[InstanceType, int]
    changed: bool
    reasons: tuple[str, ...]


def _frozen(counts: Counts) -> tuple[tuple[InstanceType, int], ...]:
    return tuple(nonzero(counts).items())


def step(
    state: FleetState,
    target: Counts,
    now_s: float,
    params: HysteresisParams = HysteresisParams(),
    free_devices: Mapping[str, int] | None = None,
    serves: Callable[[Counts], bool] | None = None,
    cost: Callable[[Counts], float] | None = None,
    ready: Counts | None = None,
    top_up: Callable[[Counts], Counts | None] | None = None,
) -> tuple[FleetState, FleetDecision]:
    """The fleet after this interval's plan `target`.

    free_devices: devices of each kind this model may hold (its own included), to swap at once
    where the old and new fleet do not both fit. serves(counts): whether a fleet meets the
    plan's demand (Plan.serves), so that a fleet still good enough is not grown. cost(counts):
    a fleet's $/h, to swap to a cheaper plan make-before-break (None: never). ready: the
    instances of each type ready now, so that a scale-down does not cut the capacity that
    serves while its replacements still start (None: all asked for are taken as ready). top_up(counts):
    the least-cost fleet that keeps `counts` and serves the demand (planner.top_up; None: none)."""
    current = state.as_dict()
    cheaper_since = _cheaper_since(state, current, target, now_s, params, cost)
    history = (state.targets + (_frozen(target),))[-max(params.scale_down_stable_intervals, 1) :]
    plans = [dict(h) for h in history]
    new = dict(current)
    reasons: list[str] = []

    to_zero = not nonzero(target)
    if to_zero and nonzero(current):
        reasons.append(f"scale to zero: {describe(current)} -> nothing (the model is idle)")
    for itype in () if to_zero else sorted(current):
        if target.get(itype, 0) < current[itype]:
            new[itype] = _scaled_down(itype, current[itype], plans, now_s - state.last_change_s, params, reasons)
    if not to_zero and serves is not None and not serves(new) and serves(current):
        due = any(r.startswith("down ") for r in reasons)
        new = dict(current)
        reasons = [r for r in reasons if not r.startswith("down ")]
        if due and _swap_pays(current, target, now_s, cheaper_since, params, free_devices, cost):
            assert cost is not None
            for itype, want in nonzero(target).items():
                new[itype] = max(new.get(itype, 0), want)
            reasons.append(
                f"swap to {describe(target)} (${cost(target):.2f}/h) from {describe(current)} "
                f"(${cost(current):.2f}/h), make before break: started beside it, which goes once the "
                "cooldown has passed and they are ready"
            )
        else:
            reasons.append(f"hold {describe(current)}: a smaller fleet would not serve the plan's demand")
    elif not to_zero and serves is not None and ready is not None and new != current:
        ready_after = {t: min(n, ready.get(t, 0)) for t, n in new.items()}
        ready_now = {t: min(n, ready.get(t, 0)) for t, n in current.items()}
        if serves(new) and not serves(ready_after) and serves(ready_now):
            new = dict(current)
            reasons = [r for r in reasons if not r.startswith("down ")]
            reasons.append(
                f"hold {describe(current)}: the fleet left after a scale-down is not ready yet to serve the "
                "plan's demand"
            )
    if not to_zero and (serves is None or not serves(new)):
        grown = _grown(new, target, top_up, cost)
        for itype in sorted(grown):
            have, want = new.get(itype, 0), grown[itype]
            if want > have:
                new[itype] = want
                reasons.append(f"up {itype.label}: {have} -> {want} at once")

    if free_devices is not None:
        for kind, used in devices_by_kind(new).items():
            if used > free_devices.get(kind, 0):
                for itype in [t for t in set(new) | set(target) if t.accelerator == kind]:
                    new[itype] = target.get(itype, 0)
                reasons.append(
                    f"swap {kind} at once: old and new instances need {used} devices, {free_devices.get(kind, 0)} free"
                )
    new = {} if to_zero else nonzero(new)
    changed = new != nonzero(current)
    state = FleetState(
        _frozen(new), history, now_s if changed else state.last_change_s, None if changed else cheaper_since
    )
    return state, FleetDecision(new, changed, tuple(reasons))


def _grown(
    running: Counts,
    target: Counts,
    top_up: Callable[[Counts], Counts | None] | None,
    cost: Callable[[Counts], float] | None,
) -> Counts:
    """What a scale-up grows each type to: the least-cost addition to the running fleet where it
    costs less than the plan's types beside it, else the plan's counts."""
    beside = {t: max(running.get(t, 0), n) for t, n in target.items()}
    grown = top_up(running) if top_up is not None else None
    if grown is None or cost is None or cost(grown) >= cost({**running, **beside}):
        return target
    return grown


def _cheaper_since(
    state: FleetState,
    current: Counts,
    target: Counts,
    now_s: float,
    params: HysteresisParams,
    cost: Callable[[Counts], float] | None,
) -> float | None:
    """Since when the plans have cost at least `swap_min_saving` less than the running fleet (None:
    this one does not)."""
    if cost is None or not nonzero(target) or not nonzero(current):
        return None
    if cost(target) > (1.0 - params.swap_min_saving) * cost(current):
        return None
    return now_s if state.cheaper_since_s is None else state.cheaper_since_s


def _swap_pays(
    current: Counts,
    target: Counts,
    now_s: float,
    cheaper_since: float | None,
    params: HysteresisParams,
    free_devices: Mapping[str, int] | None,
    cost: Callable[[Counts], float] | None,
) -> bool:
    """Whether to start the plan beside the running fleet now: it has been cheaper long enough
    that the saving forgone covers a cooldown of both fleets, and both fit the free devices."""
    if cost is None or cheaper_since is None:
        return False
    saving = cost(current) - cost(target)
    if saving * (now_s - cheaper_since) < params.scale_down_cooldown_s * cost(target):
        return False
    return free_devices is None or not kinds_without_room(current, target, free_devices)


def _scaled_down(
    itype: InstanceType,
    have: int,
    plans: list[dict[InstanceType, int]],
    since_change_s: float,
    params: HysteresisParams,
    reasons: list[str],
) -> int:
    """How many of `itype` to keep when the plan wants fewer than `have`."""
    stable = sum(1 for p in plans if p.get(itype, 0) < have)
    if stable < params.scale_down_stable_intervals:
        reasons.append(
            f"hold {itype.label} at {have}: fewer wanted for {stable}/{params.scale_down_stable_intervals} intervals"
        )
        return have
    if since_change_s < params.scale_down_cooldown_s:
        reasons.append(
            f"hold {itype.label} at {have}: cooldown, last change {since_change_s:.0f} s ago "
            f"< {params.scale_down_cooldown_s:.0f} s"
        )
        return have
    keep = max(p.get(itype, 0) for p in plans)
    limit = have - max(1, math.floor(params.max_scale_down_fraction * have))
    count = max(keep, limit)
    reasons.append(f"down {itype.label}: {have} -> {count}")
    return count
