"""Hysteresis swaps a running fleet for a cheaper plan make-before-break (issue 18, floor 4).

A running fleet that still serves the plan is kept, so without this rule a day's peak fleet of a
large type ran through the night where every plan wanted one smaller instance. The swap must start
the new instances beside the old ones, cut the old ones only once the new ones are ready, and
never happen for a small saving or where both fleets do not fit the inventory.
"""

from __future__ import annotations

from tessera.planning import hysteresis
from tessera.planning.fleet import Counts, InstanceType
from tessera.planning.hysteresis import FleetState, HysteresisParams

BIG = InstanceType("mi300x", 2)
SMALL = InstanceType("mi300x")
MID = InstanceType("mi300x", 1, "decode")  # stands for a type at $4/h that serves the plan
RATE = {BIG: 14.0, SMALL: 7.0, MID: 7.0}  # req/s each instance serves
PRICE = {BIG: 2 * 2.5, SMALL: 2.5, MID: 4.0}  # $/h
PARAMS = HysteresisParams(scale_down_stable_intervals=4, scale_down_cooldown_s=120.0)


def serves(counts: Counts, demand: float = 5.0) -> bool:
    return sum(RATE[t] * n for t, n in counts.items()) >= demand


def cost(counts: Counts) -> float:
    return sum(PRICE[t] * n for t, n in counts.items())


def run(plans: list[dict], ready_lag: int = 1, params: HysteresisParams = PARAMS, free=None) -> list[dict]:
    """The fleets decided over `plans` (one per 30-s interval), from a running BIG; an instance
    asked for is ready `ready_lag` intervals later."""
    state = FleetState(((BIG, 1),), (), 0.0)
    asked_at: dict[InstanceType, int] = {BIG: -100}
    fleets = []
    for i, target in enumerate(plans, start=1):
        ready = {t: n for t, n in state.as_dict().items() if i - asked_at[t] >= ready_lag}
        state, d = hysteresis.step(state, target, 30.0 * i, params, free, serves, cost, ready)
        for t in d.counts:
            asked_at.setdefault(t, i)
        for t in list(asked_at):
            if t not in d.counts:
                del asked_at[t]
        fleets.append(d.counts)
    return fleets


def test_a_cheaper_plan_starts_beside_the_running_fleet_then_replaces_it():
    fleets = run([{SMALL: 1}] * 20)
    first_swap = fleets.index({BIG: 1, SMALL: 1})
    assert all(f == {BIG: 1} for f in fleets[:first_swap])  # held while the cheaper plan settles
    assert first_swap >= PARAMS.scale_down_stable_intervals - 1
    assert fleets[-1] == {SMALL: 1}  # and at the end only the cheaper fleet runs
    gone = fleets.index({SMALL: 1})
    # the old instance stays for a cooldown beside its replacement: never a fleet that does not serve
    assert (gone - first_swap) * 30.0 >= PARAMS.scale_down_cooldown_s
    assert all(serves(f) for f in fleets)


def test_the_old_fleet_waits_for_its_replacement_to_be_ready():
    slow = run([{SMALL: 1}] * 30, ready_lag=12)  # the new instance takes 6 minutes to start
    fast = run([{SMALL: 1}] * 30, ready_lag=1)
    assert slow.index({SMALL: 1}) > fast.index({SMALL: 1})
    start = slow.index({BIG: 1, SMALL: 1})
    assert slow.index({SMALL: 1}) - start >= 12  # cut only after the replacement is ready


def test_no_swap_for_a_small_saving():
    params = HysteresisParams(scale_down_stable_intervals=4, scale_down_cooldown_s=120.0, swap_min_saving=0.6)
    fleets = run([{SMALL: 1}] * 20, params=params)  # SMALL saves 50%, less than asked
    assert all(f == {BIG: 1} for f in fleets)


def test_no_swap_where_both_fleets_do_not_fit():
    fleets = run([{SMALL: 1}] * 20, free={"mi300x": 2})  # the running BIG holds both devices
    assert all(f == {BIG: 1} for f in fleets)


def test_no_swap_without_prices():
    state = FleetState(((BIG, 1),), (), 0.0)
    for i in range(1, 20):
        state, d = hysteresis.step(state, {SMALL: 1}, 30.0 * i, PARAMS, None, serves)
    assert d.counts == {BIG: 1}


def test_a_plan_that_goes_back_before_the_swap_settles_keeps_the_running_fleet():
    fleets = run([{SMALL: 1}] * 2 + [{BIG: 1}] + [{SMALL: 1}] * 2 + [{BIG: 1}] * 10)
    assert all(f == {BIG: 1} for f in fleets)  # the cheaper plan never held for the stable intervals


def test_a_small_saving_waits_until_it_pays_for_the_overlap():
    """Ski rental: the swap runs both fleets for a cooldown (120 s here), so a plan 20% cheaper
    ($4 against $5 an hour) must have been cheaper for 480 s first, a 50% cheaper one for 120 s."""
    small, large = run([{SMALL: 1}] * 30), run([{MID: 1}] * 30)
    swap_small = small.index({BIG: 1, SMALL: 1})
    swap_mid = large.index({BIG: 1, MID: 1})
    assert swap_mid - swap_small >= (480 - 120) / 30 - 1
    assert (swap_mid + 1) * 30.0 >= 480.0


def test_a_cheaper_plan_that_drifts_back_before_paying_off_swaps_nothing():
    # cheaper for 7 intervals (210 s), a plan at the running fleet's price, then cheaper again
    plans = ([{SMALL: 1}] * 7 + [{BIG: 1}]) * 3
    fleets = run([{MID: 1} if p == {SMALL: 1} else p for p in plans])
    assert all(f == {BIG: 1} for f in fleets)
