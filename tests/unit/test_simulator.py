"""The discrete-event simulator against hand-computed cases, workloads, and the `tessera sim` command."""

from __future__ import annotations

import pytest

from tessera.engine_model.batching import EngineConfig
from tessera.engine_model.instance import ClusterSpecError, InstanceSpec, find_accelerator, parse_cluster
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.placement.pipeline import load_profile
from tessera.sim import workloads as wl
from tessera.sim.report import SloError, parse_slo, summarize_sim
from tessera.sim.simulator import Simulator
from tests.support.sim import ConstantTimer, make_sim


def test_one_request_timeline_by_hand():
    sim = make_sim(step_s=0.01, budget=64)
    result = sim.run([wl.SimRequest("r", 1.0, prompt_tokens=100, output_tokens=4)])
    rec = result.records[0]
    # prefill chunks of 64 and 36 tokens (2 steps), the second emits token 1; then 3 decode steps
    assert rec.first_token_s == pytest.approx(1.02)
    assert rec.token_times == pytest.approx([1.02, 1.03, 1.04, 1.05])
    assert rec.finish_s == pytest.approx(1.05)
    s = summarize_sim(result, parse_slo("ttft_p90=25,tpot_p90=11"))
    assert s["completed"] == 1 and s["p50_ttft_ms"] == pytest.approx(20.0)
    assert s["p50_tpot_ms"] == pytest.approx(10.0)
    assert s["slo_attainment"] == 1.0 and s["slo_met"] is True
    assert summarize_sim(result, parse_slo("ttft_p90=15"))["slo_attainment"] == 0.0
    assert s["utilization"]["h100-sxm"] == pytest.approx(0.05 / 1.05)


def test_requests_queue_behind_a_busy_engine_and_spread_over_free_ones():
    # two simultaneous arrivals, token budget fits one prompt per step
    reqs = [wl.SimRequest("a", 0.0, 64, 2), wl.SimRequest("b", 0.0, 64, 2)]
    one = make_sim(n=1, budget=64).run(reqs)
    ttfts = sorted(r.first_token_s - r.arrival_s for r in one.records)
    # step 1: a's prompt fills the budget; step 2: a's decode + 63 of b's tokens; step 3: b's last token
    assert ttfts[0] == pytest.approx(0.01) and ttfts[1] == pytest.approx(0.03)
    two = make_sim(n=2, budget=64).run([wl.SimRequest("a", 0.0, 64, 2), wl.SimRequest("b", 0.0, 64, 2)])
    assert sorted(r.instance for r in two.records) == sorted(i.id for i in two.instances)
    assert all(r.first_token_s == pytest.approx(0.01) for r in two.records)


def test_shared_prefix_hits_the_cache_after_the_first_prompt_of_each_group():
    reqs = wl.shared_prefix(
        groups=4, prompts_per_group=8, prefix_tokens=512, question_tokens=64, output_tokens=4, rate=5.0, seed=1
    )
    result = make_sim(n=1).run(reqs)
    s = summarize_sim(result)
    # each group's first prompt misses; the others hit the 512-token prefix of a 576-token prompt
    assert s["prefix_cache_hit_rate"] == pytest.approx(28 * 512 / (32 * 576))


def test_multi_turn_sessions_wait_for_the_previous_answer():
    reqs = wl.multi_turn(
        sessions=3, turns=3, system_tokens=64, user_tokens=32, output_tokens=8, think_time_s=2.0, rate=1.0, seed=0
    )
    result = make_sim(n=1).run(reqs)
    by_id = {r.request.request_id: r for r in result.records}
    assert len(by_id) == 9 and all(r.done for r in by_id.values())
    for s in range(3):
        for k in (1, 2):
            prev, cur = by_id[f"chat-{s}-{k - 1}"], by_id[f"chat-{s}-{k}"]
            assert cur.arrival_s == pytest.approx(prev.finish_s + 2.0)
            # the conversation so far was cached by the previous turn (all but the partial last block)
            assert cur.cached_prompt_tokens >= prev.request.prompt_tokens + 8 - 16


def test_a_request_no_worker_can_hold_fails_alone():
    sim = make_sim(n=1, blocks=8)
    result = sim.run([wl.SimRequest("huge", 0.0, 500, 10), wl.SimRequest("ok", 0.0, 50, 10)])
    by_id = {r.request.request_id: r for r in result.records}
    assert by_id["huge"].error and not by_id["huge"].done
    assert by_id["ok"].done
    assert summarize_sim(result)["failed"] == 1


def test_rescale_and_limit():
    reqs = [wl.SimRequest(f"r{i}", float(i), 10, 10) for i in range(100)]
    faster = wl.rescale(reqs, time_scale=0.5)
    assert faster[-1].arrival_s == pytest.approx(49.5) and len(faster) == 100
    doubled = wl.rescale(reqs, rate_scale=2.0)
    assert len(doubled) == 200 and len({r.request_id for r in doubled}) == 200
    assert doubled[-1].arrival_s <= 99.0 + 1e-9
    half = wl.rescale(reqs, rate_scale=0.5, seed=3)
    assert 30 < len(half) < 70
    assert len(wl.limit(reqs, duration_s=10.0)) == 10 and len(wl.limit(reqs, max_requests=5)) == 5


def test_poisson_arrivals_scale_one_draw_with_the_rate():
    reqs = [wl.SimRequest(f"r{i}", 0.0, 10, 10) for i in range(2000)]
    slow, fast = wl.poisson_arrivals(reqs, 5.0, seed=2), wl.poisson_arrivals(reqs, 20.0, seed=2)
    assert [r.request_id for r in fast] == [r.request_id for r in reqs] and slow[0].arrival_s == 0.0
    assert all(f.arrival_s == pytest.approx(s.arrival_s / 4) for s, f in zip(slow, fast))
    assert len(reqs) / fast[-1].arrival_s == pytest.approx(20.0, rel=0.1)


def test_trace_readers(tmp_path):
    azure = tmp_path / "a.csv"
    azure.write_text(
        "TIMESTAMP,ContextTokens,GeneratedTokens\n2023-11-16 18:17:04.0319600,3180,8\n"
        "2023-11-16 18:17:03.9799600,4808,10\n"
    )
    reqs = wl.azure_csv(azure)
    assert [(r.prompt_tokens, r.output_tokens) for r in reqs] == [(4808, 10), (3180, 8)]
    assert reqs[1].arrival_s == pytest.approx(0.052)
    moon = tmp_path / "m.jsonl"
    moon.write_text(
        '{"timestamp": 1500, "input_length": 700, "output_length": 5, "hash_ids": [0, 1]}\n'
        '{"timestamp": 500, "input_length": 600, "output_length": 2, "hash_ids": [0, 2]}\n'
    )
    reqs = wl.mooncake_jsonl(moon)
    assert reqs[0].arrival_s == 0.0 and reqs[1].arrival_s == pytest.approx(1.0)
    assert reqs[0].content_ids == (0, 2) and reqs[0].content_block_tokens == 512
    bad = tmp_path / "bad.csv"
    bad.write_text("TIMESTAMP,ContextTokens\nx,1\n")
    with pytest.raises(wl.WorkloadError, match="line 2"):
        wl.azure_csv(bad)


def test_cluster_and_slo_parsing():
    arch = ModelArch.llama3_70b()
    specs = parse_cluster("h100:8,a100x4:8:decode", arch)
    # 70B in bf16 needs 4 H100s to leave room for KV (2 would hold the weights with ~2 GB spare)
    assert [s.label for s in specs] == ["h100-sxm-tp4"] * 2 + ["a100-80gb-sxm-tp4:decode"] * 2
    with pytest.raises(ClusterSpecError, match="unknown accelerator"):
        parse_cluster("z900:8", arch)
    with pytest.raises(ClusterSpecError, match="cannot be split"):
        parse_cluster("h100x4:6", arch)
    assert parse_slo("ttft_p90=500,tpot_p99=50") == {"ttft": (90.0, 500.0), "tpot": (99.0, 50.0)}
    with pytest.raises(SloError):
        parse_slo("latency=5")


def test_saturated_instances_leave_requests_waiting_at_the_router(tmp_path):
    profile = tmp_path / "sat.yaml"
    profile.write_text("name: sat\nfilters: [model, health, {name: saturation, max_waiting: 1}]\npicker: max_score\n")
    spec = InstanceSpec(find_accelerator("h100"))
    cfg = EngineConfig(num_blocks=1000, block_size=16, max_num_seqs=2)
    sim = Simulator(
        ModelArch.llama3_8b(),
        "m",
        [(spec, cfg, ConstantTimer(0.01))],
        load_profile(str(profile), seed=0),
        sample_interval_s=0.01,
    )
    result = sim.run([wl.SimRequest(f"r{i}", 0.0, 32, 4) for i in range(20)])
    assert all(r.done and not r.error for r in result.records)
    # with both batch slots taken the rest waited at the router: at most the one placed mid-step
    # waits in the engine for the next step
    assert max(s.waiting for s in result.samples) <= 1
    assert max(s.running for s in result.samples) <= 2
