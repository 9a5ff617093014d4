"""The rules tessera.planning.loop decided where the service's and the simulator's loops differed."""

from __future__ import annotations

import math
import random

import pytest

from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType
from tessera.planning.forecast import IntervalStats
from tessera.planning.load import LoadMix
from tessera.planning.loop import PlanningLoop, arrivals_at_peak, is_burst
from tessera.planning.observation import Observation, TypeObservation
from tessera.planning.queueing import poisson_upper
from tessera.planning.slo_policy import parse_slo_policy

POLICY = """
model: llama3-8b
targets:
  ttft: {percentile: 90, ms: 1000}
  tpot: {percentile: 90, ms: 50}
inventory: {h100: {free: 8}}
roles: [mixed, prefill, decode]
interval_s: 30
scale_to_zero_idle_s: 60
"""
SHAPE = (1024.0, 2048.0, 256.0)  # prompt mean and p90, answer mean
DECODE = InstanceType("h100-sxm", 1, "decode")
PREFILL = InstanceType("h100-sxm", 1, "prefill")


@pytest.fixture(scope="module")
def policy():
    return parse_slo_policy(POLICY)


@pytest.fixture(scope="module")
def capacity(policy):
    return CapacityModel(engines_for(policy))


def interval(now: float, requests: int, fleet=None, held: int = 0) -> Observation:
    shape = SHAPE if requests else (None, None, None)
    return Observation(now, IntervalStats(30.0, requests, *shape), None, held, fleet or {})


def test_held_requests_are_planned_for_but_not_counted_again_as_arrivals(policy, capacity):
    """Three requests held for a first instance over three intervals: each plan serves them, the
    model is not idle (no scale to zero with a client waiting), and the forecast still says no
    request arrived (the service used to add them to every interval's arrivals)."""
    loop = PlanningLoop(policy, capacity)
    for k in range(3):
        d = loop.step(interval(30.0 * (k + 1), 0, held=3))
        assert d.counts and d.load.rate_rps >= 3 / 30.0
    assert loop.state.forecast.level == 0.0 and loop.state.forecast.idle_s == 90.0
    d = loop.step(interval(120.0, 0))  # served, nothing held: idle for 120 s > 60 s, scale to zero
    assert not d.counts


def _at(capacity, policy, itype, share: float, ttft: float | None, tpot: float | None) -> TypeObservation:
    """Two ready instances of `itype` carrying `share` of their capacity, with these percentiles."""
    cap = capacity.capacity(itype, LoadMix(0.0, *SHAPE), policy.targets).rate_rps
    served = int(share * cap * 30.0 * 2)
    return TypeObservation(2, 0, served, ttft, served if ttft else 0, tpot, served if tpot else 0)


def test_a_decode_type_near_its_knee_learns_its_tpot_correction(policy, capacity):
    """The service learnt only on mixed types; a disaggregated fleet now corrects its decoders."""
    loop = PlanningLoop(policy, capacity)
    loop.start({DECODE: 2, PREFILL: 2})
    fleet = {
        DECODE: _at(capacity, policy, DECODE, 0.8, None, 0.2),  # answers four times slower than the target
        PREFILL: _at(capacity, policy, PREFILL, 0.1, 0.05, None),
    }
    d = loop.step(interval(30.0, 600, fleet))
    factors = dict(d.corrections.factors)
    assert factors[DECODE.label].tpot > 1.0 and factors[DECODE.label].ttft == 1.0
    assert PREFILL.label not in factors  # idle (10% of its capacity): says nothing about the knee


def test_each_type_learns_only_the_latency_its_role_computes(policy, capacity):
    """A decode worker that prefilled some prompts itself (placement's local prefill) reports their
    first tokens; a decode type's model has no prompt work, so learning TTFT there, then passing it
    to the prefill types through the prior, planned ever more prefill instances that sat idle (the
    simulator did this on Mooncake's trace; the service never reported TTFT for a decode type)."""
    loop = PlanningLoop(policy, capacity)
    loop.start({DECODE: 2, PREFILL: 2})
    fleet = {
        DECODE: _at(capacity, policy, DECODE, 0.8, 5.0, 0.2),  # slow first tokens: prompts it prefilled
        PREFILL: _at(capacity, policy, PREFILL, 0.8, 0.05, 9.0),  # a prefill type's "TPOT": one token
    }
    d = loop.step(interval(30.0, 600, fleet))
    factors = dict(d.corrections.factors)
    assert factors[DECODE.label].ttft == 1.0 and factors[DECODE.label].tpot > 1.0
    assert factors[PREFILL.label].tpot == 1.0 and factors[PREFILL.label].ttft < 1.0


def test_a_type_past_its_capacity_learns_nothing(policy, capacity):
    """Carrying more than the model says it can: the miss is by design (instances were starting)."""
    loop = PlanningLoop(policy, capacity)
    loop.start({DECODE: 2, PREFILL: 2})
    d = loop.step(interval(30.0, 600, {DECODE: _at(capacity, policy, DECODE, 1.6, None, 0.2)}))
    assert not d.corrections.factors


def test_a_type_that_cannot_meet_the_slo_even_idle_still_learns(capacity):
    """A TTFT target below one prompt's own time: capacity 0 everywhere, the planner runs
    instances.min as a best effort, and the observed latency is the only way to find out the
    model is wrong about it, so it learns from every interval."""
    tight = parse_slo_policy(POLICY.replace("ms: 1000", "ms: 1").replace("interval_s: 30", "instances: {min: 1}"))
    mixed = InstanceType("h100-sxm")
    assert capacity.capacity(mixed, LoadMix(0.0, *SHAPE), tight.targets).rate_rps == 0
    loop = PlanningLoop(tight, capacity)
    loop.start({mixed: 1})
    fleet = {mixed: TypeObservation(1, 0, 60, 0.02, 60, 0.02, 60)}
    d = loop.step(interval(30.0, 60, fleet))
    assert dict(d.corrections.factors)[mixed.label].ttft != 1.0


def _peaked(requests: int, peak_rps: float) -> Observation:
    return Observation(30.0, IntervalStats(30.0, requests, *SHAPE), peak_rps, 0, {})


def test_poisson_noise_in_the_peak_window_is_not_planned_as_a_burst():
    """At 8 req/s a 30-s interval's busiest 10-s window of Poisson arrivals runs a few per cent
    above the mean by chance alone; the capacity model already prices that noise, so the
    interval enters the forecast at its mean. Planning it at its peak kept a fleet dearer than
    a static one for the 60-s peak that already met the SLOs."""
    assert arrivals_at_peak(_peaked(240, 9.5), window_s=10.0).requests == 240
    assert not is_burst(8.0, 9.5, 10.0, 30.0)


def test_a_real_burst_is_planned_beyond_its_peak_by_the_burst_headroom():
    """The Azure code hour's 10-s peak of 23.4 req/s over an interval's mean of 12.3: far beyond
    Poisson noise, so it counts at its peak times the headroom (the next burst may be bigger)."""
    obs = _peaked(369, 23.4)
    assert is_burst(12.3, 23.4, 10.0, 30.0)
    assert arrivals_at_peak(obs, window_s=10.0, headroom=1.5).rate_rps == pytest.approx(1.5 * 23.4, abs=0.05)
    assert arrivals_at_peak(obs, window_s=10.0, headroom=1.0).rate_rps == pytest.approx(23.4, abs=0.05)
    # a driver that does not say its window: any peak above the mean counts, as measured
    assert arrivals_at_peak(obs, window_s=0.0, headroom=1.5).rate_rps == pytest.approx(23.4, abs=0.05)


def test_the_burst_test_holds_its_significance_on_poisson_arrivals():
    """Over 2,000 intervals of Poisson arrivals at 4 req/s, at most about 1% are taken for bursts
    (the test's significance, a union bound over the interval's windows, so fewer in practice)."""
    rng = random.Random(7)
    false = 0
    for _ in range(2000):
        counts = [_poisson(rng, 40.0) for _ in range(3)]
        false += is_burst(sum(counts) / 30.0, max(counts) / 10.0, 10.0, 30.0)
    assert false <= 0.015 * 2000


def _poisson(rng: random.Random, mean: float) -> int:
    k, t = 0, rng.expovariate(1.0)
    while t < mean:
        k, t = k + 1, t + rng.expovariate(1.0)
    return k


@pytest.mark.parametrize("mean", [0.5, 4.0, 40.0, 900.0])
def test_poisson_upper_is_the_counts_tail_quantile(mean):
    q = poisson_upper(mean, 0.01)
    tail = 1.0 - sum(math.exp(-mean + k * math.log(mean) - math.lgamma(k + 1)) for k in range(q + 1))
    below = tail + math.exp(-mean + q * math.log(mean) - math.lgamma(q + 1))
    assert tail <= 0.0102 and below > 0.0098  # the smallest such count (normal approximation above 400)
