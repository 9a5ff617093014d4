"""The autoscaler's planner: pure code, checked against brute force and against its own promises."""

from __future__ import annotations

import itertools
import math
import random
from dataclasses import replace

import pytest

from services.autoscaler.model_autoscaler import groups_for
from tessera.planning import corrections, forecast, hysteresis
from tessera.planning.capacity import Capacity, CapacityModel
from tessera.planning.chunking import CHUNK_GRANULE, CONTEXT_BESIDE, DECODES_BESIDE, prefill_chunk
from tessera.planning.corrections import CorrectionState, Factors
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType, kinds_without_room
from tessera.planning.forecast import ForecastParams, ForecastState, IntervalStats
from tessera.planning.hysteresis import FleetState, HysteresisParams
from tessera.planning.load import LoadMix
from tessera.planning.milp import Candidate, served, solve
from tessera.planning.planner import (
    BEST_EFFORT_SHARE,
    IDLE,
    INVENTORY,
    LOAD,
    MAX_INSTANCES,
    SLO,
    capacities,
    plan,
    plan_homogeneous,
)
from tessera.planning.slo_policy import LatencyTarget, SloPolicyError, parse_slo_policy
from tests.support.paths import REPO

POLICY = """
model: llama3-8b
targets:
  ttft: {percentile: 90, ms: 500}
  tpot: {percentile: 90, ms: 50}
inventory:
  h100: {free: 4}
  a100: {free: 6}
  l40s: 4
roles: [mixed, prefill, decode]
tp: [1]
instances: {min: 0, max: 16}
headroom: 0.1
scale_to_zero_idle_s: 300
"""
SHAPE = LoadMix(1.0, input_mean=1024, input_p90=2048, output_mean=256)


@pytest.fixture(scope="module")
def policy():
    return parse_slo_policy(POLICY)


@pytest.fixture(scope="module")
def model(policy):
    return CapacityModel(engines_for(policy))


def brute_force(cands: list[Candidate], demand: float, free: dict[str, int], lo: int, hi: int) -> float | None:
    """The least cost over every count vector within the inventory (None: nothing serves `demand`)."""
    ranges = [range(free[c.itype.accelerator] // c.itype.tp + 1) for c in cands]
    best = None
    for counts in itertools.product(*ranges):
        if not lo <= sum(counts) <= hi:
            continue
        used: dict[str, int] = {}
        for c, n in zip(cands, counts):
            used[c.itype.accelerator] = used.get(c.itype.accelerator, 0) + n * c.itype.tp
        if any(used[k] > free[k] for k in used):
            continue
        fleet = {c.itype: n for c, n in zip(cands, counts) if n}
        if len({t.role == "mixed" for t in fleet}) > 1:
            continue  # mixed instances beside a prefill/decode pool: not a fleet the planner offers
        if served(cands, fleet) >= demand * (1 - 1e-9):
            cost = sum(c.cost_per_hour * n for c, n in zip(cands, counts))
            best = cost if best is None else min(best, cost)
    return best


def milp_cost(cands, counts) -> float:
    price = {c.itype: c.cost_per_hour for c in cands}
    return sum(price[t] * n for t, n in counts.items())


# ---- the integer program ------------------------------------------------------------------------


def test_milp_matches_brute_force_on_random_small_cases():
    rng = random.Random(7)
    kinds = ("a", "b")
    checked = infeasible = 0
    for _ in range(150):
        types = rng.sample(
            [InstanceType(k, tp, role) for k in kinds for tp in (1, 2) for role in ("mixed", "prefill", "decode")],
            rng.randint(2, 3),
        )
        cands = [Candidate(t, round(rng.uniform(0.5, 10), 2), round(rng.uniform(0.5, 4), 2) * t.tp) for t in types]
        free = {k: rng.randint(0, 6) for k in kinds}
        lo, hi = rng.choice([(0, 99), (0, 3), (2, 99)])
        demand = round(rng.uniform(0.1, 30), 2)
        expected = brute_force(cands, demand, free, lo, hi)
        got = solve(cands, demand, free, lo, hi)
        if expected is None:
            assert got is None, (cands, demand, free, got)
            infeasible += 1
        else:
            assert got is not None, (cands, demand, free)
            assert milp_cost(cands, got) == pytest.approx(expected, abs=1e-6), (cands, demand, free, got)
            assert served(cands, got) >= demand * (1 - 1e-7)
            checked += 1
    assert checked > 30 and infeasible > 10  # both kinds of answer were exercised


def test_plan_matches_brute_force_with_real_capacities(policy, model):
    small = replace(policy, inventory=(replace(policy.inventory[0], free=2), replace(policy.inventory[1], free=3)))
    caps = capacities(small, SHAPE, model)
    cands = [
        Candidate(t, c.rate_rps, small.cost_per_device_hour(t.accelerator) * t.tp)
        for t, c in caps.items()
        if c.rate_rps > 0
    ]
    for rate in (0.5, 4.0, 12.0, 30.0, 45.0, 90.0):
        p = plan(small, SHAPE.scaled(rate), model)
        expected = brute_force(cands, p.demand_rps, small.free_devices(), 0, small.max_instances)
        if expected is None:
            assert not p.feasible
        else:
            assert p.feasible and p.cost_per_hour == pytest.approx(expected, abs=1e-6), (rate, p.summary())


def test_a_fleet_is_mixed_instances_or_a_pool_never_both(policy, model):
    """The router picks each request's decode side by load, not in the proportion the program
    splits the demand between mixed instances and a pool, so a fleet of both overloads its mixed
    instances (Mooncake's trace: 39% of their requests missed TPOT). Where the cheapest fleet
    with both shapes is cheaper still, the plan takes the cheaper of the two pure ones."""
    for rate in (1.0, 4.0, 12.0, 30.0, 45.0, 90.0, 200.0):
        p = plan(policy, SHAPE.scaled(rate), model)
        assert len({t.role == "mixed" for t in p.counts}) <= 1, p.summary()
    a, b = InstanceType("a"), InstanceType("b", 1, "prefill")
    c = InstanceType("b", 1, "decode")
    cands = [Candidate(a, 5.0, 1.1), Candidate(b, 10.0, 1.0), Candidate(c, 10.0, 1.0)]
    # at 15 req/s: one mixed beside a pool $3.10; pure: three mixed $3.30, or two pools $4
    got = solve(cands, 15.0, {"a": 8, "b": 8})
    assert got == {a: 3}, got
    assert served(cands, {a: 1, b: 1, c: 1}) >= 15.0  # the cheaper fleet of both shapes, now not offered


def test_pd_pool_needs_both_sides(policy, model):
    p = plan(replace(policy, inventory=policy.inventory[:1]), SHAPE.scaled(60.0), model)
    prefill, decode = p.prefill_decode
    assert (prefill == 0) == (decode == 0)
    if prefill:
        assert p.disaggregated_rps > 0


# ---- infeasible plans say why ---------------------------------------------------------------------


def test_too_little_inventory_names_the_inventory(policy, model):
    p = plan(policy, SHAPE.scaled(500.0), model)
    assert not p.feasible and p.binding == INVENTORY
    assert "cannot meet SLO with inventory" in p.reasons[0] and "at most" in p.reasons[0]
    assert p.entries, "the best-effort fleet still uses what is on offer"


def test_best_effort_skips_the_dearest_last_few_percent(policy, model):
    """Short of the SLOs, the fleet is the cheapest serving BEST_EFFORT_SHARE of the most the
    inventory could: an L40S that would add under 5% to four H100s is not bought for a forecast
    nothing on offer can meet (it would start after the burst, and hysteresis would hold it)."""
    tight = replace(
        policy,
        roles=("mixed",),
        inventory=tuple(replace(i, free={"h100-sxm": 4, "l40s": 1}.get(i.accelerator, 0)) for i in policy.inventory),
    )
    caps = {t.accelerator: c.rate_rps for t, c in capacities(tight, SHAPE, model).items()}
    assert caps["l40s"] < (1 - BEST_EFFORT_SHARE) * (4 * caps["h100-sxm"] + caps["l40s"])  # the premise
    p = plan(tight, SHAPE.scaled(300.0), model)
    assert not p.feasible and p.binding == INVENTORY
    assert p.devices == {"h100-sxm": 4}, p.summary()
    assert any("best effort" in r and "95%" in r for r in p.reasons)


def test_instance_cap_is_named(policy, model):
    p = plan(replace(policy, max_instances=2), SHAPE.scaled(60.0), model)
    assert not p.feasible and p.binding == MAX_INSTANCES
    assert "instances.max = 2" in p.reasons[0]
    assert sum(p.counts.values()) <= 2


def test_unreachable_slo_is_named(policy, model):
    strict = replace(policy, targets=replace(policy.targets, ttft=replace(policy.targets.ttft, ms=5)))
    p = plan(strict, SHAPE.scaled(1.0), model)
    assert not p.feasible and p.binding == SLO
    assert any("TTFT p90" in r and "even when idle" in r for r in p.reasons)
    # Serving late beats not serving: one instance of the cheapest type the model fits on, said so.
    cheapest = min(
        (t for t in strict.instance_types() if t.role == "mixed"),
        key=lambda t: t.tp * strict.cost_per_device_hour(t.accelerator),
    )
    assert p.counts == {cheapest: 1}
    assert any("anyway" in r for r in p.reasons)


def test_inventory_binding_when_feasible_but_forced_off_the_cheapest_kind(policy, model):
    p = plan(policy, SHAPE.scaled(40.0), model)
    cheapest_kind = max(p.devices, key=p.devices.get)
    squeezed = replace(
        policy, inventory=tuple(replace(i, free=1) if i.accelerator == cheapest_kind else i for i in policy.inventory)
    )
    q = plan(squeezed, SHAPE.scaled(40.0), model)
    assert q.feasible and q.binding == INVENTORY and q.cost_per_hour > p.cost_per_hour
    assert p.binding == LOAD


# ---- heterogeneous vs homogeneous -----------------------------------------------------------------


def test_heterogeneous_beats_homogeneous_when_inventory_forces_it(policy, model):
    load = SHAPE.scaled(70.0)
    mixed_fleet = plan(policy, load, model)
    single = plan_homogeneous(policy, load, model)
    assert mixed_fleet.feasible
    assert len(mixed_fleet.devices) >= 2, mixed_fleet.summary()
    assert not single.feasible or single.cost_per_hour > mixed_fleet.cost_per_hour + 1e-6
    for item in policy.inventory:  # no single kind does it as cheaply
        one = plan_homogeneous(policy, load, model, accelerator=item.accelerator)
        assert not one.feasible or one.cost_per_hour >= mixed_fleet.cost_per_hour - 1e-6


# ---- capacity model -------------------------------------------------------------------------------


def test_capacity_grows_with_looser_targets_and_faster_parts(policy, model):
    h100, a100 = InstanceType("h100-sxm"), InstanceType("a100-80gb-sxm")
    tight = policy.targets
    loose = replace(tight, tpot=replace(tight.tpot, ms=100), ttft=replace(tight.ttft, ms=1000))
    for t in (h100, a100, replace(h100, role="decode"), replace(h100, role="prefill")):
        assert model.capacity(t, SHAPE, loose).rate_rps >= model.capacity(t, SHAPE, tight).rate_rps > 0
    assert model.capacity(h100, SHAPE, tight).rate_rps > model.capacity(a100, SHAPE, tight).rate_rps


def test_prediction_at_capacity_meets_targets_and_just_beyond_breaks_them(policy, model):
    for role in ("mixed", "prefill", "decode"):
        itype = InstanceType("h100-sxm", 1, role)
        cap = model.capacity(itype, SHAPE, policy.targets)
        assert cap.at_capacity is not None and cap.at_capacity.ok
        beyond = model.predict(itype, SHAPE.scaled(cap.rate_rps * 1.01), policy.targets)
        assert cap.binding in beyond.violations


def test_decode_capacity_stays_below_what_a_full_batch_sustains(policy, model):
    """At max_num_seqs the batch cannot grow: the rate must stay under slots / (output * full step),
    with room for Poisson bursts, or the slot queue never drains."""
    itype = InstanceType("h100-sxm", 1, "decode")
    cap = model.capacity(itype, SHAPE, policy.targets)
    engine = model.engine(itype)
    full_step = engine.timer(decode=[int(SHAPE.input_mean + SHAPE.output_mean / 2)] * engine.max_num_seqs)
    sustained = engine.max_num_seqs / (SHAPE.output_mean * full_step)
    assert cap.binding == "max_num_seqs"
    assert 0.8 * sustained < cap.rate_rps < 0.95 * sustained


def test_handoff_eats_into_prefill_capacity(policy, model):
    itype = InstanceType("h100-sxm", 1, "prefill")
    alone = model.capacity(itype, SHAPE, policy.targets, handoff_s=0.0).rate_rps
    assert model.capacity(itype, SHAPE, policy.targets, handoff_s=0.2).rate_rps < alone


def test_longer_answers_cost_decode_capacity_and_prefix_reuse_helps_prefill(policy, model):
    dec, pre = InstanceType("h100-sxm", 1, "decode"), InstanceType("h100-sxm", 1, "prefill")
    assert (
        model.capacity(dec, replace(SHAPE, output_mean=1024), policy.targets).rate_rps
        < model.capacity(dec, SHAPE, policy.targets).rate_rps
    )
    assert (
        model.capacity(pre, replace(SHAPE, prefix_reuse=0.5), policy.targets).rate_rps
        > model.capacity(pre, SHAPE, policy.targets).rate_rps
    )


# ---- corrections ----------------------------------------------------------------------------------


def test_corrections_move_capacity_the_right_way(policy, model):
    itype = InstanceType("a100-80gb-sxm")
    base = model.capacity(itype, SHAPE, policy.targets).rate_rps
    slow = fast = CorrectionState()
    for _ in range(10):
        slow = corrections.observe(slow, itype.label, "tpot", 0.030, 0.045, samples=100)
        fast = corrections.observe(fast, itype.label, "ttft", 0.300, 0.200, samples=100)
    assert slow.for_label(itype.label).tpot > 1.2 and fast.for_label(itype.label).ttft < 0.8
    assert model.capacity(itype, SHAPE, policy.targets, slow.for_label(itype.label)).rate_rps < base
    assert model.capacity(itype, SHAPE, policy.targets, fast.for_label(itype.label)).rate_rps > base
    corrected = plan(policy, SHAPE.scaled(20.0), model, corrections=slow)
    assert corrected.cost_per_hour >= plan(policy, SHAPE.scaled(20.0), model).cost_per_hour


def test_corrections_are_clamped_and_ignore_thin_intervals():
    state = CorrectionState()
    assert corrections.observe(state, "x", "ttft", 0.1, 1.0, samples=3) == state
    for _ in range(50):
        state = corrections.observe(state, "x", "ttft", 0.1, 10.0, samples=100)
    assert state.for_label("x") == Factors(ttft=corrections.CorrectionParams().maximum, tpot=1.0)
    assert state.for_label("other") == Factors()


# ---- forecaster -----------------------------------------------------------------------------------


def _feed(rates, state=ForecastState(), params=ForecastParams(), duration=30.0):
    for r in rates:
        state = forecast.observe(state, IntervalStats(duration, round(r * duration), 1024, 2048, 256), params)
    return state


def test_forecaster_follows_a_trend():
    ramp = [10 + 2 * i for i in range(20)]  # +2 req/s per interval
    state = _feed(ramp)
    nxt = forecast.forecast(state).rate_rps
    assert nxt == pytest.approx(ramp[-1] + 2, rel=0.05)
    assert nxt - ramp[-1] > 1.5  # a step ahead of the last interval, not level with it


def test_forecaster_reacts_to_a_burst_at_once_and_lets_go_later():
    params = ForecastParams(burst_window=2)
    state = _feed([20.0] * 10 + [80.0], params=params)
    assert forecast.forecast(state, params).rate_rps >= 80.0
    state = _feed([20.0] * 6, state, params)
    assert forecast.forecast(state, params).rate_rps == pytest.approx(20.0, rel=0.1)


def test_forecaster_smooths_lengths_and_counts_idle_time():
    state = _feed([5.0] * 3)
    state = forecast.observe(state, IntervalStats(30.0, 90, input_mean=4096, input_p90=8192, output_mean=64))
    shape = forecast.forecast(state)
    assert 1024 < shape.input_mean < 4096 and 64 < shape.output_mean < 256
    state = _feed([0.0] * 4, state)
    assert state.idle_s == 120.0
    state = _feed([0.0] * 4, state)
    assert forecast.forecast(state, interval_s=30.0).rate_rps == 0.0


def test_measured_p99_replaces_the_lognormal_tail():
    # azure2023_code.csv: mean 2048, p90 5188, p99 7436 prompt tokens; the lognormal through the
    # mean and p90 puts the p99 at ~17.8k
    fitted = LoadMix(1.0, input_mean=2048, input_p90=5188, output_mean=28)
    measured = replace(fitted, input_p99=7436)
    assert fitted.input_quantile(99) > 15000
    assert measured.input_quantile(99) == pytest.approx(7436)
    assert measured.input_quantile(90) == pytest.approx(5188)
    assert measured.input_quantile(50) == pytest.approx(fitted.input_quantile(50))  # below p90: unchanged
    assert 5188 < measured.input_quantile(95) < 7436 < measured.input_quantile(99.9)
    assert measured.scaled(3.0).input_p99 == 7436
    with pytest.raises(ValueError):
        LoadMix(1.0, input_p99=-1)


def test_the_prompt_variance_follows_the_measured_tail():
    """The prompt queue's margin grows with (1 + scv) / 2. The lognormal through azure2023_code's
    mean and p90 alone has scv 4.2; the trace's own prompts have 0.93. With the measured p99 the
    shape (lognormal body, measured tail) gives about 1.25, which put one MI300X's p99 capacity
    of this mix at 11.4 req/s where the simulator meets the SLOs up to about 14 (it was 3.6)."""
    fitted = LoadMix(1.0, input_mean=2048, input_p90=5188, output_mean=28)
    assert fitted.input_scv() == pytest.approx(4.17, abs=0.05)
    assert replace(fitted, input_p99=7436).input_scv() == pytest.approx(1.25, abs=0.05)
    alike = LoadMix(1.0, input_mean=2048, input_p90=2048, input_p99=2048)  # every prompt alike
    assert alike.input_scv() == pytest.approx(0.0, abs=1e-6)


def test_a_shorter_measured_tail_raises_capacity(policy, model):
    targets = replace(policy.targets, ttft=replace(policy.targets.ttft, percentile=99))
    itype = InstanceType("h100-sxm", 1, "mixed")
    fitted = LoadMix(1.0, input_mean=2048, input_p90=5188, output_mean=28)
    assert (
        model.capacity(itype, replace(fitted, input_p99=7436), targets).rate_rps
        > model.capacity(itype, fitted, targets).rate_rps
    )


def test_forecaster_keeps_the_p99_only_where_measured():
    state = forecast.observe(ForecastState(), IntervalStats(30.0, 90, input_mean=2048, input_p90=5188, output_mean=28))
    assert forecast.forecast(state).input_p99 == 0.0  # a router reporting no percentile: the lognormal
    state = forecast.observe(state, IntervalStats(30.0, 90, 2048, 5188, 28, input_p99=7436))
    assert forecast.forecast(state).input_p99 == 7436  # the first measurement as is
    state = forecast.observe(state, IntervalStats(30.0, 90, 2048, 5188, 28, input_p99=6000))
    assert 6000 < forecast.forecast(state).input_p99 < 7436
    state = forecast.observe(state, IntervalStats(30.0, 90, input_mean=4096, output_mean=28))
    assert forecast.forecast(state).input_p99 > 7000  # not measured: follows the mean


# ---- hysteresis -----------------------------------------------------------------------------------

H = InstanceType("h100-sxm")
A = InstanceType("a100-80gb-sxm")


def test_scale_up_is_immediate_and_scale_down_waits_and_steps():
    params = HysteresisParams(scale_down_stable_intervals=3, scale_down_cooldown_s=60, max_scale_down_fraction=0.5)
    state, d = hysteresis.step(FleetState(), {H: 8}, 0.0, params)
    assert d.counts == {H: 8} and d.changed
    counts = []
    for i in range(1, 12):
        state, d = hysteresis.step(state, {H: 1}, 30.0 * i, params)
        counts.append(d.counts.get(H, 0))
    assert counts[:2] == [8, 8]  # not yet stable for 3 intervals
    assert counts[2] == 4  # then at most half at a time
    assert all(b >= a // 2 for a, b in zip(counts, counts[1:]))
    assert counts[-1] == 1


def test_scale_down_keeps_the_largest_recent_plan():
    params = HysteresisParams(scale_down_stable_intervals=3, scale_down_cooldown_s=0, max_scale_down_fraction=1.0)
    state, _ = hysteresis.step(FleetState(), {H: 10}, 0.0, params)
    for i, want in enumerate((3, 6, 4), start=1):
        state, d = hysteresis.step(state, {H: want}, 30.0 * i, params)
    assert d.counts == {H: 6}


def test_hysteresis_does_not_flap_on_noisy_load(policy, model):
    """The service's loop: observe -> forecast -> plan -> hysteresis, on +-35% noise around 40 req/s."""
    rng = random.Random(3)
    fstate, fleet = ForecastState(), FleetState()
    raw, kept = [], []
    for i in range(30):
        rate = 40.0 * (1 + rng.uniform(-0.35, 0.35))
        raw.append(tuple(sorted(plan(policy, SHAPE.scaled(rate), model).counts.items())))
        fstate = forecast.observe(fstate, IntervalStats(30.0, round(rate * 30), 1024, 2048, 256), policy.forecast)
        p = plan(policy, forecast.forecast(fstate, policy.forecast), model, current=fleet.as_dict())
        fleet, d = hysteresis.step(fleet, p.counts, 30.0 * i, policy.hysteresis, policy.free_devices(), p.serves)
        kept.append(tuple(sorted(d.counts.items())))
        assert p.serves(d.counts)  # never less than the plan needs
    raw_changes = sum(a != b for a, b in zip(raw, raw[1:]))
    kept_changes = sum(a != b for a, b in zip(kept, kept[1:]))
    assert raw_changes >= 10, raw  # planning each interval's load alone would flap
    # a few steps up while the forecast learns how high the noise reaches, then at most one step down
    sizes = [sum(n for _, n in k) for k in kept]
    downs = sum(b < a for a, b in zip(sizes, sizes[1:]))
    assert kept_changes <= 4 and downs <= 1, kept


def test_hysteresis_holds_through_alternating_plans():
    params = HysteresisParams(scale_down_stable_intervals=4, scale_down_cooldown_s=0, max_scale_down_fraction=0.5)
    state, sizes = FleetState(), []
    for i, want in enumerate([4, 2, 5, 3] * 3 + [3] * 4):
        state, d = hysteresis.step(state, {H: want}, 30.0 * i, params)
        sizes.append(d.counts[H])
    assert sizes == [4, 4] + [5] * 12 + [3, 3]  # down only once 4 plans in a row wanted fewer


def test_swap_happens_at_once_when_old_and_new_do_not_both_fit():
    state, _ = hysteresis.step(FleetState(), {InstanceType("h100-sxm", 2): 2}, 0.0)
    state, d = hysteresis.step(state, {H: 4}, 30.0, free_devices={"h100-sxm": 4})
    assert d.counts == {H: 4}


# ---- scale to zero --------------------------------------------------------------------------------


def test_scale_to_zero_after_idle_time_and_back(policy, model):
    fstate, fleet = _feed([4.0] * 3), FleetState()
    t = 0.0
    p = plan(policy, forecast.forecast(fstate), model, idle_s=fstate.idle_s)
    fleet, d = hysteresis.step(fleet, p.counts, t, policy.hysteresis)
    assert d.counts
    sizes = []
    for _ in range(12):  # 6 minutes without a request (idle time: 5)
        t += 30.0
        fstate = _feed([0.0], fstate)
        p = plan(policy, forecast.forecast(fstate, interval_s=30.0), model, idle_s=fstate.idle_s)
        fleet, d = hysteresis.step(fleet, p.counts, t, policy.hysteresis)
        sizes.append(sum(d.counts.values()))
    assert p.binding == IDLE and not p.entries and sizes[-1] == 0
    assert all(s >= 1 for s in sizes[:9])  # nothing stopped before 300 s idle
    fstate = _feed([2.0], fstate)  # traffic is back
    p = plan(policy, forecast.forecast(fstate), model, idle_s=fstate.idle_s)
    fleet, d = hysteresis.step(fleet, p.counts, t + 30.0, policy.hysteresis)
    assert p.feasible and sum(d.counts.values()) >= 1


def test_min_instances_keeps_a_warm_fleet(policy, model):
    p = plan(replace(policy, min_instances=1), LoadMix(0.0), model, idle_s=1e6)
    assert sum(p.counts.values()) == 1 and p.feasible


def test_idle_but_not_long_enough_keeps_one_cheap_instance(policy, model):
    p = plan(policy, LoadMix(0.0), model, idle_s=10.0)
    assert sum(p.counts.values()) == 1 and next(iter(p.counts)).role == "mixed"


# ---- the policy document --------------------------------------------------------------------------


def test_policy_round_trips_and_fills_catalog_prices(policy):
    assert parse_slo_policy(policy.to_yaml()) == policy
    assert policy.cost_per_device_hour("h100-sxm") == 2.99  # the catalog's price
    assert policy.free_devices() == {"h100-sxm": 4, "a100-80gb-sxm": 6, "l40s": 4}


def test_example_policy_file_parses():

    p = parse_slo_policy((REPO / "deploy/slo-policies/llama3-8b.yaml").read_text())
    assert p.model == "llama3-8b" and p.targets.tpot.ms == 50


@pytest.mark.parametrize(
    "edit, key",
    [
        (("ms: 500", "ms: fast"), "targets.ttft.ms"),
        (("percentile: 90, ms: 500", "percentile: 100, ms: 500"), "targets.ttft.percentile"),
        (("h100: {free: 4}", "h100: {free: 4, price: 3}"), "inventory.h100.price"),
        (("h100: {free: 4}", "h900: {free: 4}"), "inventory.h900"),
        (("l40s: 4", "l40s: -1"), "inventory.l40s.free"),
        (("roles: [mixed, prefill, decode]", "roles: [mixed, prefill]"), "roles"),
        (("roles: [mixed, prefill, decode]", "roles: [mixed, verify]"), "roles"),
        (("tp: [1]", "tp: [0]"), "tp"),
        (("instances: {min: 0, max: 16}", "instances: {min: 9, max: 4}"), "instances.min"),
        (("headroom: 0.1", "headroom: 0.1\nhysteresis: {cooldown: 3}"), "hysteresis.cooldown"),
        (("headroom: 0.1", "headroom: 0.1\nforecast: {alpha: 2}"), "forecast.alpha"),
        (("headroom: 0.1", "headroom: 0.1\nspeed: 3"), "speed"),
        (("headroom: 0.1", "headroom: 0.1\ncorrections: {maximum: 0.5}"), "corrections.maximum"),
        (("scale_to_zero_idle_s: 300", "scale_to_zero_idle_s: soon"), "scale_to_zero_idle_s"),
        (("headroom: 0.1", "headroom: 0.1\nheadroom: 0.5"), "headroom: given twice"),
        (("headroom: 0.1", "headroom: 0.1\nforecast: {peak_window_s: -5}"), "forecast.peak_window_s"),
        (("headroom: 0.1", "headroom: 0.1\nforecast: {burst_headroom: 0.5}"), "forecast.burst_headroom"),
        (
            ("headroom: 0.1", "headroom: 0.1\ndeployment: {engine_args: {max_num_batched_tokens: lots}}"),
            "deployment.engine_args.max_num_batched_tokens",
        ),
    ],
)
def test_policy_errors_name_the_key(edit, key):
    old, new = edit
    assert old in POLICY
    with pytest.raises(SloPolicyError) as err:
        parse_slo_policy(POLICY.replace(old, new))
    assert key in str(err.value)


def test_plan_reads_as_an_explanation(policy, model):
    p = plan(policy, SHAPE.scaled(30.0), model)
    text = p.summary()
    assert f"${p.cost_per_hour:.2f}/h" in text and "why:" in text
    for e in p.entries:
        assert e.binding in ("ttft", "tpot", "kv_cache", "max_num_seqs", "saturated")
        assert 0 < e.utilisation <= 1.0 + 1e-9
    assert math.isclose(p.mixed_rps + p.disaggregated_rps, p.demand_rps, rel_tol=1e-6)


# ---- the prefill chunk each instance type runs with -----------------------------------------------


def test_prefill_chunk_is_the_largest_that_keeps_a_full_step_within_the_tpot_target(policy, model):
    """A clump of long prompts fills every step with a full chunk; the chunk the engines are priced
    with keeps such a step within the TPOT target (50 ms here), and no larger multiple would."""
    target = policy.targets.tpot.seconds
    chunks = {}
    for key, engine in model.engines.items():

        def step(tokens: int, engine=engine) -> float:
            return engine.timer(prefill=[(tokens, 0)], decode=[CONTEXT_BESIDE] * DECODES_BESIDE)

        chunk = engine.max_num_batched_tokens
        chunks[key] = chunk
        assert chunk % CHUNK_GRANULE == 0 and CHUNK_GRANULE <= chunk <= 8192
        if chunk > CHUNK_GRANULE:
            assert step(chunk) <= target, key
        if chunk < 8192:
            assert step(chunk + CHUNK_GRANULE) > target, key
    # faster parts take bigger chunks
    assert chunks[("h100-sxm", 1)] > chunks[("a100-80gb-sxm", 1)]


def test_prefill_chunk_follows_the_target_and_the_operator(policy):
    loose = engines_for(replace(policy, targets=replace(policy.targets, tpot=LatencyTarget(90, 1000))))
    assert all(e.max_num_batched_tokens == 8192 for e in loose.values())  # vLLM's default already fits
    fixed = replace(policy, deployment=replace(policy.deployment, engine_args={"max_num_batched_tokens": 2048}))
    assert {e.max_num_batched_tokens for e in engines_for(fixed).values()} == {2048}


def test_worker_groups_launch_with_the_chunk_they_were_priced_with(policy, model):
    groups = {
        g.accelerator: g for g in groups_for(policy, {InstanceType("h100-sxm"): 2, InstanceType("a100"): 1}, model)
    }
    assert (
        groups["h100-sxm"].engine_args["max_num_batched_tokens"]
        == model.engines[("h100-sxm", 1)].max_num_batched_tokens
    )
    assert groups["h100-sxm"].replicas == 2
    assert int(prefill_chunk(lambda **_: 0.0, 8192, 0.05)) == 8192  # nothing to shrink: no argument needed
    same = replace(policy, targets=replace(policy.targets, tpot=LatencyTarget(90, 1000)))
    [group] = groups_for(same, {InstanceType("h100-sxm"): 1}, CapacityModel(engines_for(same)))
    assert "max_num_batched_tokens" not in group.engine_args  # the vendor default is what runs


def test_a_plan_that_would_stop_running_instances_for_lack_of_room_keeps_them(policy, model):
    """One H100: at 40 req/s it runs as the prefill side of a P/D pool. When the load falls, the
    cheapest fleet is one mixed H100, but the running prefill instance would have to stop before
    the mixed one could start (both need the only H100): a minute with no prompt capacity. The
    plan keeps the running instance instead and says why."""
    sizes = {"h100-sxm": 1, "a100-80gb-sxm": 2, "l40s": 0}
    tight = replace(policy, inventory=tuple(replace(i, free=sizes[i.accelerator]) for i in policy.inventory))
    prefill = InstanceType("h100-sxm", 1, "prefill")
    running = plan(tight, SHAPE.scaled(40.0), model).counts
    assert running.get(prefill) == 1
    cheapest = plan(tight, SHAPE.scaled(8.0), model)
    assert kinds_without_room(running, cheapest.counts, tight.free_devices()) == ["h100-sxm"]
    kept = plan(tight, SHAPE.scaled(8.0), model, current=running)
    assert kept.feasible and kept.counts.get(prefill) == 1
    assert not kinds_without_room(running, kept.counts, tight.free_devices())
    assert kept.cost_per_hour >= cheapest.cost_per_hour
    assert "keeps the running" in kept.summary()


class FixedCapacities:
    """A capacity model that gives each instance type a set rate (the planner asks nothing else)."""

    def __init__(self, rates: dict[InstanceType, float]) -> None:
        self.rates = rates

    def capacity(self, itype, load, targets, factors=None, handoff_s=0.0) -> Capacity:
        return Capacity(itype, self.rates.get(itype, 0.0), "ttft", None, "set by the test")


def test_a_best_effort_plan_keeps_running_instances_it_has_no_room_to_replace(policy):
    """Past the inventory, two fleets of different shape on the same devices can serve nearly the
    same (4 x H100 at 72 req/s, 2 x H100-tp2 at 73). Swapping the running one for the other would
    stop its instances before the new ones start, in the middle of the burst that used up the
    inventory; the homogeneous MI300X loop met 73.7% of the compressed bursts so. With a fleet
    keeping them serving BEST_EFFORT_SHARE of the most, the running instances stay."""
    one, two = InstanceType("h100-sxm"), InstanceType("h100-sxm", 2)
    tight = replace(
        policy,
        roles=("mixed",),
        tp=(1, 2),
        inventory=tuple(replace(i, free={"h100-sxm": 4}.get(i.accelerator, 0)) for i in policy.inventory),
    )
    model = FixedCapacities({one: 18.0, two: 36.5})
    fresh = plan(tight, SHAPE.scaled(300.0), model)
    assert not fresh.feasible and fresh.counts == {two: 2}  # the same price, fewer instances
    kept = plan(tight, SHAPE.scaled(300.0), model, current={one: 4})
    assert not kept.feasible and kept.counts == {one: 4}, kept.summary()
    assert "keeps the running" in kept.summary()
    homogeneous = plan_homogeneous(tight, SHAPE.scaled(300.0), model, current={one: 4})
    assert homogeneous.counts == {one: 4}  # the homogeneous baseline is given the running fleet too
