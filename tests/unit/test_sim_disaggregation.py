"""Disaggregated prefill/decode in the discrete-event simulator, against hand-computed timelines."""

from __future__ import annotations

import pytest
import yaml

from tessera.engine_model.batching import EngineConfig
from tessera.engine_model.catalog import accelerators
from tessera.engine_model.instance import InstanceSpec, find_accelerator
from tessera.engine_model.perf.comm import kv_transfer_time
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.placement.pipeline import PROFILES_DIR, build_pipeline, load_profile
from tessera.sim import workloads as wl
from tessera.sim.report import parse_slo, summarize_sim
from tessera.sim.simulator import Simulator
from tests.support.sim import ConstantTimer


def pair_sim(budget: int = 256, decode_blocks: int = 1000, kv_transfer=None, policy: str = "tessera_disagg"):
    """One H100 prefill instance and one A100 decode instance, 10 ms a step."""
    cfg = EngineConfig(num_blocks=1000, block_size=16, max_num_batched_tokens=budget)
    dec = EngineConfig(num_blocks=decode_blocks, block_size=16, max_num_batched_tokens=budget)
    instances = [
        (InstanceSpec(find_accelerator("h100"), role="prefill"), cfg, ConstantTimer(0.01)),
        (InstanceSpec(find_accelerator("a100"), role="decode"), dec, ConstantTimer(0.01)),
    ]
    return Simulator(
        ModelArch.llama3_8b(),
        "m",
        instances,
        load_profile(policy, seed=0),
        sample_interval_s=0.05,
        kv_transfer=kv_transfer,
    )


def test_one_disaggregated_request_timeline_by_hand():
    result = pair_sim().run([wl.SimRequest("r", 1.0, prompt_tokens=600, output_tokens=3)])
    rec = result.records[0]
    assert rec.prefill_instance.startswith("h100-sxm:prefill") and rec.instance.startswith("a100-80gb-sxm:decode")
    # prefill: chunks of 256, 256 and 88 tokens, 3 steps of 10 ms on the H100 (its token is not the user's)
    assert rec.prefill_done_s == pytest.approx(1.03)
    # the KV of 600 tokens crosses the A100's 25 GB/s scale-out link at 80%, after 50 us of setup
    transfer = 50e-6 + 600 * ModelArch.llama3_8b().kv_bytes_per_token() / (25e9 * 0.8)
    assert rec.kv_transfer_s == pytest.approx(transfer)
    assert rec.kv_transfer_s == pytest.approx(
        kv_transfer_time(ModelArch.llama3_8b(), 600, accelerators.find("h100"), accelerators.find("a100"))
    )
    # the decode instance computes the last prompt token in one step: the user's first token
    first = 1.03 + transfer + 0.01
    assert rec.first_token_s == pytest.approx(first)
    assert rec.token_times == pytest.approx([first, first + 0.01, first + 0.02])
    s = summarize_sim(result, parse_slo("ttft_p90=50,tpot_p90=11"))
    assert s["p50_ttft_ms"] == pytest.approx((first - 1.0) * 1000) and s["p50_tpot_ms"] == pytest.approx(10.0)
    assert s["slo_attainment"] == 1.0
    # the prefill instance took 3 steps, the decode instance 3 (last prompt token + 2 decodes)
    busy = {i.spec.role: i.steps for i in result.instances}
    assert busy == {"prefill": 3, "decode": 3}


def test_short_prompt_runs_on_the_decode_instance_alone():
    rec = pair_sim().run([wl.SimRequest("s", 0.0, prompt_tokens=100, output_tokens=2)]).records[0]
    assert rec.prefill_instance == "" and rec.instance.startswith("a100-80gb-sxm:decode")
    assert rec.token_times == pytest.approx([0.01, 0.02])


def test_decode_blocks_are_held_from_admission_through_the_copy():
    sim = pair_sim(kv_transfer=lambda p, d, tokens: 0.5)
    usage = []
    original = sim._start_transfer

    def spy(dec, ereq):
        original(dec, ereq)
        usage.append((dec.engine.pool.num_free, dec.engine.num_waiting, dec.engine.num_running))

    sim._start_transfer = spy
    rec = sim.run([wl.SimRequest("r", 0.0, prompt_tokens=600, output_tokens=2)]).records[0]
    # 38 blocks of 16 for 600 tokens, taken when the copy starts; queued, not running, until it lands
    assert usage == [(1000 - 38, 1, 0)]
    assert rec.first_token_s == pytest.approx(0.03 + 0.5 + 0.01)


def test_a_full_decode_instance_starts_the_copy_only_when_blocks_free_up():
    # 50 blocks: room for one 600-token prompt (38 blocks) and its output, not two
    sim = pair_sim(decode_blocks=50, kv_transfer=lambda p, d, tokens: 0.1)
    result = sim.run([wl.SimRequest("a", 0.0, 600, 3), wl.SimRequest("b", 0.0, 600, 3)])
    a, b = sorted(result.records, key=lambda r: r.first_token_s)
    assert a.done and b.done and b.prefill_instance and a.prefill_instance
    # b's copy starts when a finishes and frees its blocks
    assert b.first_token_s == pytest.approx(a.finish_s + 0.1 + 0.01)


def test_prefill_saturated_falls_back_to_prefilling_on_the_decode_instance(tmp_path):
    profile = tmp_path / "d.yaml"
    profile.write_text(
        "name: d\nfilters: [model, health, serves_whole_requests]\npicker: max_score\n"
        "disaggregation:\n  prefill:\n    filters: [{name: saturation, max_waiting: 0}]\n"
    )
    sim = pair_sim(budget=8192, policy=str(profile))
    result = sim.run([wl.SimRequest(f"r{i}", 0.0, 600, 2) for i in range(3)])
    places = sorted(bool(r.prefill_instance) for r in result.records)
    # the first runs on the prefill instance at once, the second queues there, the third sees a
    # queue (saturated at max_waiting 0) and is prefilled on the decode instance
    assert places == [False, True, True] and all(r.done for r in result.records)


def test_mixed_cluster_is_unchanged_by_the_disaggregation_section():
    reqs = wl.shared_prefix(
        groups=4, prompts_per_group=8, prefix_tokens=1024, question_tokens=64, output_tokens=8, rate=20.0, seed=1
    )
    spec = InstanceSpec(find_accelerator("h100"))
    cfg = EngineConfig(num_blocks=2000, block_size=16, max_num_batched_tokens=512)
    with_section = yaml.safe_load((PROFILES_DIR / "tessera_disagg.yaml").read_text())
    without = {k: v for k, v in with_section.items() if k != "disaggregation"}

    def run(profile):
        sim = Simulator(
            ModelArch.llama3_8b(),
            "m",
            [(spec, cfg, ConstantTimer(0.01))] * 2,
            build_pipeline(profile, seed=0),
            sample_interval_s=0.05,
        )
        return [(r.instance, r.token_times) for r in sim.run(reqs).records]

    assert run(with_section) == run(without)


def test_the_default_profile_pairs_in_the_simulator_once_the_decode_instance_is_busy():
    sim = pair_sim(policy="tessera")
    first, second = sim.run(
        [
            wl.SimRequest("idle", 0.0, prompt_tokens=600, output_tokens=50),
            wl.SimRequest("busy", 0.3, prompt_tokens=600, output_tokens=3),
        ]
    ).records
    # alone on the decode instance, the prompt is prefilled there: a copy would only add to it
    assert first.prefill_instance == "" and first.instance.startswith("a100-80gb-sxm:decode")
    # with a stream decoding there, prefilling the next prompt among it would stall it: paired
    assert second.prefill_instance.startswith("h100-sxm:prefill") and second.kv_transfer_s > 0
