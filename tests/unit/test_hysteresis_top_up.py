"""A scale-up grows the running fleet by the cheapest addition, not by the plan's whole shape (issue
18, floor 6).

When corrections move near a tie, the plan flips between two shapes of nearly equal cost. Adding
the plan's shape whole beside a running fleet that falls a little short ran both shapes for hours
on the day at 8 req/s ($6.79/h where either alone cost $4.29-5.00). The running fleet must grow
to the least-cost fleet that keeps it and serves the demand; where no such fleet is on offer, the
plan's types are started as before.
"""

from __future__ import annotations

from tessera.planning import hysteresis
from tessera.planning.fleet import Counts, InstanceType
from tessera.planning.hysteresis import FleetState, HysteresisParams

MIXED = InstanceType("mi300x")
PREFILL = InstanceType("mi300x", 1, "prefill")
DECODE = InstanceType("a100-sxm", 1, "decode")
RATE = {MIXED: 7.0, PREFILL: 16.0, DECODE: 16.0}
PRICE = {MIXED: 2.5, PREFILL: 2.5, DECODE: 1.79}
PARAMS = HysteresisParams(scale_down_stable_intervals=4, scale_down_cooldown_s=120.0)
POOL = {PREFILL: 1, DECODE: 1}  # $4.29/h for 16 req/s: the plan's shape at 15 req/s


def served(counts: Counts) -> float:
    mixed = RATE[MIXED] * counts.get(MIXED, 0)
    return mixed + min(RATE[PREFILL] * counts.get(PREFILL, 0), RATE[DECODE] * counts.get(DECODE, 0))


def cost(counts: Counts) -> float:
    return sum(PRICE[t] * n for t, n in counts.items())


def cheapest_addition(demand: float):
    """planner.top_up's contract on this toy inventory: the least-cost fleet keeping `running`."""

    def top_up(running: Counts) -> Counts | None:
        grown = dict(running)
        while served(grown) < demand:
            grown[MIXED] = grown.get(MIXED, 0) + 1
        return grown

    return top_up


def step(state: FleetState, target: Counts, now: float, demand: float, top_up=None):
    return hysteresis.step(state, target, now, PARAMS, None, lambda c: served(c) >= demand, cost, None, top_up)


def test_a_fleet_short_of_a_plan_of_another_shape_grows_by_the_cheapest_addition():
    running = FleetState(((MIXED, 2),), (), 0.0)  # 14 req/s, $5.00/h
    _, old = step(running, POOL, 30.0, 15.0)
    _, new = step(running, POOL, 30.0, 15.0, cheapest_addition(15.0))
    assert old.counts == {MIXED: 2, **POOL}  # both shapes: $9.29/h
    assert new.counts == {MIXED: 3}  # one more of the running type: $7.50/h
    assert served(new.counts) >= 15.0 and cost(new.counts) < cost(old.counts)
    assert new.changed and any(r.startswith("up mi300x") for r in new.reasons)


def test_the_plans_shape_is_started_where_the_addition_would_cost_more():
    running = FleetState(((MIXED, 2),), (), 0.0)
    _, d = step(running, POOL, 30.0, 40.0, cheapest_addition(40.0))  # 4 more MIXED ($10) > the pool ($4.29)
    assert d.counts == {MIXED: 2, **POOL}


def test_without_an_addition_on_offer_the_plans_types_go_up():
    running = FleetState(((MIXED, 2),), (), 0.0)
    _, d = step(running, POOL, 30.0, 15.0, lambda running: None)
    assert d.counts == {MIXED: 2, **POOL}


def test_a_plan_flipping_between_near_tie_shapes_does_not_run_both():
    """Thirty intervals of a plan alternating between 3 x MIXED and the pool, the demand just past
    two MIXED: the fleet settles on one shape and never pays for both at once."""
    state = FleetState(((MIXED, 2),), (), -1000.0)
    top_up = cheapest_addition(15.0)
    fleets = []
    for i in range(1, 31):
        target = {MIXED: 3} if i % 2 else POOL
        state, d = step(state, target, 30.0 * i, 15.0, top_up)
        fleets.append(d.counts)
    assert all(served(f) >= 15.0 for f in fleets)
    assert max(cost(f) for f in fleets) <= cost({MIXED: 3}) + 1e-9
