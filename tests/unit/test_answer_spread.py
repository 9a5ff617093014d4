"""The answers' spread in the capacity model (issue 18, floor 5).

A mix's p99 TPOT on a mixed instance is set by its short answers: their few decode steps average
over few draws, so one step carrying a full prompt chunk moves them a lot. Sized for the mean
answer alone, the model put one MI300X-tp2's TPOT p99 at 10 / 17 / 30 ms at 6 / 12.7 / 20 req/s of
the Azure code mix where the simulator measures 18 / 29 / 43, and the online corrections hit their
cap trying to make up for it. The routers now export the answer lengths, the autoscaler reads
their p90, and the model mixes the TPOT tail over the lengths.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from services.autoscaler.load_observer import interval, parse
from services.router.metrics import ANSWER_LENGTH_BUCKETS
from tessera.planning import forecast
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType
from tessera.planning.forecast import ForecastState, IntervalStats
from tessera.planning.load import LoadMix
from tessera.planning.slo_policy import parse_slo_policy
from tests.support.paths import REPO

# azure2023_code's shape, as peak_load measures it: answers min 6, median 13, mean 28, p90 55
CODE = LoadMix(1.0, input_mean=2048, input_p90=5188, output_mean=28.1, input_p99=7436, output_p90=55)
MI300X_TP2 = InstanceType("mi300x", 2)


@pytest.fixture(scope="module")
def setup():
    policy = parse_slo_policy((REPO / "deploy/slo-policies/llama3-8b-p99.yaml").read_text())
    return policy, CapacityModel(engines_for(policy))


def test_the_answer_lengths_follow_the_mean_and_p90():
    lengths = CODE.output_lengths()
    assert sum(w for _, w in lengths) == pytest.approx(1.0)
    assert sum(n * w for n, w in lengths) == pytest.approx(28.1, rel=0.05)
    assert sum(w for n, w in lengths if n > 55) == pytest.approx(0.10, abs=0.04)
    assert replace(CODE, output_p90=0.0).output_lengths() == ((28.1, 1.0),)  # not measured: the mean alone


def test_short_answers_raise_the_tpot_tail_at_moderate_load(setup):
    """At 6 and 12.7 req/s the spread lifts the p99 toward the simulator's 18 and 29 ms (the mean
    answer alone: about 10 and 17), and never past one step of a full token budget (about 45 ms)."""
    policy, model = setup
    for rate, mean_only_below, spread_above in ((6.0, 11.0, 12.5), (12.7, 18.0, 23.0)):
        alone = model.predict(MI300X_TP2, replace(CODE, output_p90=0.0).scaled(rate), policy.targets)
        spread = model.predict(MI300X_TP2, CODE.scaled(rate), policy.targets)
        assert alone.tpot_s * 1e3 < mean_only_below < spread_above < spread.tpot_s * 1e3
    overloaded = model.predict(MI300X_TP2, CODE.scaled(24.0), policy.targets)
    assert overloaded.tpot_s <= 0.046


def test_answers_all_alike_price_like_the_mean_answer(setup):
    """With no spread (p90 at the mean) the mixture is one length, and agrees with the mean-answer
    formula it generalises to within the one step it no longer counts (L-1 steps, not L)."""
    policy, model = setup
    long_answers = LoadMix(1.0, input_mean=1024, input_p90=2048, output_mean=256)
    for rate in (2.0, 8.0):
        alone = model.predict(InstanceType("h100-sxm"), long_answers.scaled(rate), policy.targets)
        alike = model.predict(
            InstanceType("h100-sxm"), replace(long_answers, output_p90=256).scaled(rate), policy.targets
        )
        assert alike.tpot_s == pytest.approx(alone.tpot_s, rel=0.02)


def test_the_forecast_carries_the_answers_p90_only_where_measured():
    state = forecast.observe(ForecastState(), IntervalStats(30.0, 90, 2048, 5188, 28))
    assert forecast.forecast(state).output_p90 == 0.0
    state = forecast.observe(state, IntervalStats(30.0, 90, 2048, 5188, 28, output_p90=55))
    assert forecast.forecast(state).output_p90 == 55
    state = forecast.observe(state, IntervalStats(30.0, 90, 2048, 5188, 56))
    assert forecast.forecast(state).output_p90 > 55  # not measured this time: follows the mean


def answers(lengths: list[int]) -> str:
    reg = CollectorRegistry()
    h = Histogram("tessera_request_generation_tokens", "", ["model"], registry=reg, buckets=ANSWER_LENGTH_BUCKETS)
    for n in lengths:
        h.labels("m").observe(n)
    return generate_latest(reg).decode()


def test_the_autoscaler_reads_the_p90_answer_length_of_the_interval():
    old = [2000] * 40
    new = [7] * 50 + [13] * 30 + [40] * 10 + [300] * 10
    seen = interval({"r1": parse(answers(old))}, {"r1": parse(answers(old + new))}, "m", 30.0)
    assert 40 <= seen.output_p90 <= 300
    assert seen.output_p90 < 2000  # this interval's answers, not the router's lifetime
    assert interval({"r1": parse(answers(old))}, {"r1": parse(answers(old))}, "m", 30.0).output_p90 is None


def test_a_batch_that_fills_the_token_budget_leaves_no_room_for_prompts(setup):
    """A decode batch as large as the prefill chunk (512 tokens on an A100 at a 50 ms TPOT): no
    prompt token fits beside it, so the prompt cost is infinite and the rate saturates, where it
    divided by zero (Mooncake's shape in the planning loop)."""
    policy, model = setup
    a100 = InstanceType("a100-80gb-sxm")
    engine = model.engine(a100)
    from tessera.planning.capacity import _Shape, _Steps
    from tessera.planning.corrections import Factors

    steps = _Steps(engine, _Shape.of(CODE, policy.targets), Factors())
    assert steps.prompt_token_cost(engine.max_num_batched_tokens) == float("inf")
    assert model.predict(a100, CODE.scaled(1e4), policy.targets).violations
