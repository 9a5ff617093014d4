"""Autoscaling in the discrete-event simulator: the fleet grows and shrinks with the load, drains
without losing requests, bills what a cloud would, scales to zero and back, and the HPA baseline
follows Kubernetes' formula."""

from __future__ import annotations

import math
import random

import pytest

from tessera.engine_model.perf.model_arch import ModelArch
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType
from tessera.planning.forecast import IntervalStats
from tessera.planning.slo_policy import parse_slo_policy
from tessera.sim import hpa
from tessera.sim.autoscalers import (
    Autoscaler,
    Observation,
    ScalingDecision,
    Static,
    TypeObservation,
    build_autoscaler,
    peak_load,
    planning_observation,
)
from tessera.sim.autoscaling import run_autoscaled
from tessera.sim.autoscaling_report import billed_cost, fleet_series, summarize_autoscaled
from tessera.sim.elastic import Lifetime
from tessera.sim.report import request_metrics_ms
from tessera.sim.simulator import DRAINING, GONE
from tessera.sim.workloads import SimRequest
from tests.support.sim import POLICY, ConstantTimer, make_sim

H100 = InstanceType("h100-sxm")


@pytest.fixture(scope="module")
def policy():
    return parse_slo_policy(POLICY)


@pytest.fixture(scope="module")
def capacity(policy):
    return CapacityModel(engines_for(policy))


def poisson(
    rate: float, start: float, end: float, rng: random.Random, tag: str, prompt: int = 1024, output: int = 64
) -> list[SimRequest]:
    t, out = start, []
    while True:
        t += rng.expovariate(rate)
        if t >= end:
            return out
        out.append(SimRequest(f"{tag}{len(out)}", t, prompt, output))


class Scripted(Autoscaler):
    """Asks for given counts from given times on: a hand-made timeline."""

    name = "scripted"

    def __init__(self, script: list[tuple[float, dict[InstanceType, int]]], interval_s: float = 10.0) -> None:
        self.script, self.interval_s = script, interval_s

    def decide(self, obs: Observation) -> ScalingDecision:
        counts: dict[InstanceType, int] = {}
        for t, c in self.script:
            if obs.now_s >= t:
                counts = c
        return ScalingDecision(dict(counts))


def test_a_load_step_adds_then_removes_instances_and_loses_nothing(policy, capacity):
    rng = random.Random(3)
    low, high = 2.0, 80.0  # one H100 serves ~33 req/s of this shape within the SLOs
    workload = sorted(
        poisson(low, 0, 60, rng, "a") + poisson(high, 60, 105, rng, "b") + poisson(low, 105, 300, rng, "c"),
        key=lambda r: r.arrival_s,
    )
    scaler = build_autoscaler("tessera", policy, capacity, peak_load([0.0], [1024], [64]), warm_start=False)
    run = run_autoscaled(workload, policy, scaler, ModelArch.llama3_8b(), startup_s=20.0)
    sizes = [(t.t, sum(t.counts.values())) for t in run.ticks]
    before = max(n for t, n in sizes if t < 60)
    peak = max(n for t, n in sizes)
    after = sizes[-1][1]
    assert before == 1 and peak >= 3 and after < peak  # up with the step, down after it
    records = run.result.records
    assert len(records) == len(workload)
    assert all(r.done and not r.error for r in records)  # drained, not dropped
    drained = [life for life in run.lifetimes if life.drain_s is not None]
    assert drained and all(life.stopped_s is not None and life.stopped_s >= life.drain_s for life in drained)
    for life in run.lifetimes:  # ready one start-up after the ask (cold start)
        assert life.ready_s == pytest.approx(life.requested_s + 20.0)
    summary = summarize_autoscaled(run)
    assert summary["completed"] == len(workload) and summary["queued_at_end"] == 0
    assert summary["cost_usd"] == pytest.approx(billed_cost(run.lifetimes, run.end_s))
    assert max(max(v) for v in summary["timeseries"]["instances"].values()) >= 3


def test_drained_instance_finishes_its_requests_and_takes_no_new_ones():
    sim = make_sim(n=2, step_s=0.01)
    a, b = sim.instances
    sim.call_at(0.05, lambda s: s.drain_instance(a))
    reqs = [SimRequest(f"r{i}", 0.01 * i, 64, 20) for i in range(4)] + [
        SimRequest(f"late{i}", 0.1 + 0.01 * i, 64, 5) for i in range(4)
    ]
    result = sim.run(reqs)
    assert all(r.done for r in result.records)
    early_on_a = [r for r in result.records if r.instance == a.id]
    assert early_on_a and all(r.request.request_id.startswith("r") for r in early_on_a)
    assert a.state == GONE and a.stopped_s == pytest.approx(max(r.finish_s for r in early_on_a))
    assert a in result.instances and b.state != DRAINING


def test_cost_matches_a_hand_worked_case(policy):
    # 1 x H100 running from t=0; a second asked for at t=10 (ready at 40), drained at t=60 while idle:
    # billed 50 s. At $2.00/h per device, over a run ending at t=100: 2.0 * (100 + 50) / 3600.
    workload = [SimRequest(f"r{i}", float(t), 256, 8) for i, t in enumerate((1, 30, 50, 99))]
    scaler = Scripted([(10.0, {H100: 2}), (60.0, {H100: 1})])
    scaler.initial = {H100: 1}
    run = run_autoscaled(workload, policy, scaler, ModelArch.llama3_8b(), startup_s=30.0)
    assert run.end_s == pytest.approx(max(99.0, run.result.duration_s))
    second = [life for life in run.lifetimes if life.requested_s > 0]
    assert len(second) == 1
    assert (second[0].requested_s, second[0].ready_s, second[0].drain_s, second[0].stopped_s) == pytest.approx(
        (10.0, 40.0, 60.0, 60.0)
    )
    expected = 2.0 * (run.end_s + 50.0) / 3600.0
    assert summarize_autoscaled(run)["cost_usd"] == pytest.approx(expected)
    lives = [Lifetime(H100, 1, 2.0, 0.0, 0.0), Lifetime(H100, 2, 3.0, 10.0, 40.0, 60.0, 70.0)]
    assert billed_cost(lives, 100.0) == pytest.approx(2.0 * 100 / 3600 + 3.0 * 2 * 60 / 3600)
    series = fleet_series(lives, 100.0, 50.0)
    assert series["cost_per_hour"] == pytest.approx([2.0 + 6.0 * 40 / 50, 2.0 + 6.0 * 20 / 50])
    assert series["instances"]["h100-sxm"] == pytest.approx([1 + 10 / 50, 1 + 10 / 50])
    assert series["starting"]["h100-sxm"] == pytest.approx([30 / 50, 0.0])
    assert series["draining"]["h100-sxm"] == pytest.approx([0.0, 10 / 50])


def test_scale_to_zero_after_idle_and_back_with_the_held_requests_served(policy, capacity):
    rng = random.Random(5)
    late = [SimRequest(f"late{i}", 400.0 + 0.5 * i, 512, 16) for i in range(5)]
    workload = poisson(3.0, 0, 30, rng, "early") + late
    scaler = build_autoscaler("tessera", policy, capacity, peak_load([0.0], [1024], [64]))
    run = run_autoscaled(workload, policy, scaler, ModelArch.llama3_8b(), startup_s=25.0)
    empty = [t.t for t in run.ticks if not t.counts]
    assert empty and min(empty) < 400.0  # scaled to zero while idle
    assert any(t.queued for t in run.ticks if t.t > 400.0)  # the late requests were held
    assert all(r.done and not r.error for r in run.result.records)
    for rec in run.result.records[-5:]:
        assert rec.first_token_s - rec.arrival_s >= 25.0 - 10.0  # waited for an instance to start
    assert not [life for life in run.lifetimes if life.requested_s < 400 and life.stopped_s is None]


def test_no_instance_ready_holds_requests_at_the_router():
    spec_sim = make_sim(n=1, step_s=0.01)
    inst = spec_sim.instances[0]
    spec_sim.drain_instance(inst)  # idle: gone at once
    assert inst.state == GONE and not spec_sim.instances
    spec, cfg = inst.spec, inst.engine.config
    spec_sim.call_at(5.0, lambda s: s.add_instance(spec, cfg, ConstantTimer(0.01), ready_s=8.0))
    result = spec_sim.run([SimRequest("r", 1.0, 64, 2)])
    rec = result.records[0]
    assert rec.done and rec.first_token_s >= 8.0


def test_hpa_follows_the_kubernetes_formula():
    p = hpa.HpaParams(target_utilisation=0.6, tolerance=0.1, max_replicas=100)
    assert hpa.recommend(4, [0.9] * 4, 0, p) == math.ceil(4 * 0.9 / 0.6)  # 6
    assert hpa.recommend(4, [0.63] * 4, 0, p) == 4  # within tolerance
    assert hpa.recommend(4, [0.2] * 4, 0, p) == math.ceil(4 * 0.2 / 0.6)  # 2
    assert hpa.recommend(4, [0.9, 0.9], 2, p) == 4  # unready pods count as idle: 1.8/4/0.6 < 1, hold
    assert hpa.recommend(4, [1.0, 1.0, 1.0], 1, p) == math.ceil(3.0 / 4 / 0.6 * 4)  # 5
    # scale-down waits for the highest recommendation of the last 300 s
    state, n = hpa.step(hpa.HpaState(), 0.0, 6, [0.6] * 6, 0, p)
    assert n == 6
    state, n = hpa.step(state, 100.0, 6, [0.1] * 6, 0, p)
    assert n == 6  # 6 recommended at t=0 is still in the window
    state, n = hpa.step(state, 301.0, 6, [0.1] * 6, 0, p)
    assert n == 1  # ceil(6 * 0.1/0.6) = 1 once it has left
    # scale-up: at most max(2x, +4) per period, within max_replicas
    _, n = hpa.step(hpa.HpaState(), 0.0, 2, [1.0, 1.0], 0, p)
    assert n == math.ceil(2 * 1.0 / 0.6)  # 4, under the limit of max(4, 6)
    _, n = hpa.step(hpa.HpaState(), 0.0, 1, [1.0], 0, hpa.HpaParams(target_utilisation=0.05))
    assert n == 5  # wants 20, limited to 1 + 4
    _, n = hpa.step(hpa.HpaState(), 0.0, 3, [1.0] * 3, 0, hpa.HpaParams(max_replicas=4))
    assert n == 4


def test_hpa_in_the_sim_scales_its_one_type(policy, capacity):
    rng = random.Random(7)
    workload = poisson(30.0, 0, 90, rng, "a", prompt=2048, output=32)
    scaler = build_autoscaler(
        "hpa",
        policy,
        capacity,
        peak_load([0.0], [1024], [64]),
        warm_start=False,
        hpa_params=hpa.HpaParams(target_utilisation=0.3),
    )
    run = run_autoscaled(workload, policy, scaler, ModelArch.llama3_8b(), startup_s=15.0)
    assert {life.itype for life in run.lifetimes} == {H100}
    assert max(sum(t.counts.values()) for t in run.ticks) > 1
    assert all(r.done for r in run.result.records)


def test_the_planned_prefill_chunk_keeps_answers_within_tpot_through_a_clump_of_long_prompts():
    """Answers decoding when 40 long prompts arrive at once: with vLLM's default chunk of 8,192
    tokens every step of the clump takes ~0.2 s on an H100 and they break a 50 ms TPOT target;
    with the chunk the planner picks for that target (and the fleet launches with) they keep it."""
    policy = parse_slo_policy(POLICY.replace("tpot: {percentile: 90, ms: 100}", "tpot: {percentile: 99, ms: 50}"))
    engines = engines_for(policy)
    chunk = engines[("h100-sxm", 1)].max_num_batched_tokens
    assert chunk < 8192
    answers = [SimRequest(f"answer{i}", 0.005 * i, 128, 120) for i in range(16)]
    clump = [SimRequest(f"long{i}", 0.3 + 0.001 * i, 6000, 2) for i in range(40)]
    workload = sorted(answers + clump, key=lambda r: r.arrival_s)

    def answers_tpot_ms(engine_args) -> float:
        scaler = Static({H100: 1}, policy.interval_s)
        scaler.initial = {H100: 1}
        run = run_autoscaled(workload, policy, scaler, ModelArch.llama3_8b(), engine_args=engine_args)
        assert all(r.done and not r.error for r in run.result.records)
        return max(
            request_metrics_ms(r)["tpot"] for r in run.result.records if r.request.request_id.startswith("answer")
        )

    planned = answers_tpot_ms(None)  # the policy's engines
    default = answers_tpot_ms({("h100-sxm", 1): {"max_num_batched_tokens": 8192}})
    assert planned <= 50.0 < default, (planned, default)


@pytest.mark.parametrize("name", ["tessera", "homogeneous", "hpa"])
def test_a_day_opens_with_the_fleet_for_its_opening_load_not_the_peak(policy, capacity, name):
    """A day's deployment at midnight runs what yesterday's loop left for midnight's load. Started
    from the evening peak's fleet, every autoscaler was billed for scaling it down; static keeps
    its one fleet either way."""
    peak = peak_load([i / 40.0 for i in range(2400)], [1024] * 2400, [64] * 2400)  # 40 req/s
    opening = peak.scaled(2.0)
    from_peak = build_autoscaler(name, policy, capacity, peak).initial
    opened = build_autoscaler(name, policy, capacity, peak, opening=opening).initial
    assert sum(from_peak.values()) > sum(opened.values()) >= 1
    assert {t.accelerator for t in opened} <= {t.accelerator for t in from_peak} or name == "tessera"
    static = build_autoscaler("static", policy, capacity, peak, opening=opening)
    assert static.initial == build_autoscaler("static", policy, capacity, peak).initial


def test_the_simulator_reports_each_types_latencies_in_its_role_as_the_live_service_does(policy):
    """A decode worker that prefilled a prompt itself (placement's fallback) has a TTFT in the
    simulator, but the live routers give a type only its role's percentiles; the planning loop
    sees the same in both."""
    times = tuple(0.1 * i for i in range(1, 21))
    seen = TypeObservation(1, 0, (0.5,), 20, times, times)
    roles = {r: InstanceType("h100-sxm", 1, r) for r in ("mixed", "prefill", "decode")}
    obs = Observation(30.0, 30.0, IntervalStats(30.0, 20), 0, {t: seen for t in roles.values()})
    fleet = planning_observation(obs, policy).fleet
    assert fleet[roles["decode"]].ttft_s is None and fleet[roles["decode"]].tpot_s is not None
    assert fleet[roles["prefill"]].tpot_s is None and fleet[roles["prefill"]].ttft_s is not None
    assert fleet[roles["mixed"]].ttft_s is not None and fleet[roles["mixed"]].tpot_s is not None
