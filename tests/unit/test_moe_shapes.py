"""DeepSeek-class MoE shapes: MLA's KV size, the expert all-to-all per vendor, DP/EP and CP shapes
the planner picks by cost, and start-up as a quantity (issue 18, items 3 and 4). Pure: no processes."""

from __future__ import annotations

import json
from dataclasses import replace
from importlib import resources

import pytest

from tessera.engine_model.build import instance_startup
from tessera.engine_model.catalog import accelerators
from tessera.engine_model.instance import InstanceSpec
from tessera.engine_model.perf.comm import expert_all_to_all_time, group_bandwidth
from tessera.engine_model.perf.efficiency import Efficiency
from tessera.engine_model.perf.memory import kv_bytes_per_token_per_device, kv_capacity_tokens
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import Batch, Parallelism
from tessera.engine_model.perf.roofline import step_time
from tessera.engine_model.perf.step_timer import StepTimer
from tessera.engine_model.startup import cold_start_s, startup_times
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType
from tessera.planning.load import LoadMix
from tessera.planning.planner import plan
from tessera.planning.slo_policy import parse_slo_policy

DS = ModelArch.deepseek_v3()


def test_deepseek_v3_config_reads_as_published():
    """The catalog's config.json: 671B parameters (without the MTP layer), fp8 weights, 3 dense layers,
    256 routed + 1 shared expert, 8 active."""
    assert DS.param_count() / 1e9 == pytest.approx(671, abs=1)
    assert (DS.layers, DS.dense_layers, DS.moe_layers) == (61, 3, 58)
    assert (DS.num_experts, DS.shared_experts, DS.top_k, DS.expert_intermediate) == (256, 1, 8, 2048)
    assert (DS.dtype_bytes, DS.kv_element_bytes) == (1, 2)  # block-fp8 weights, bf16 KV cache
    raw = json.loads(resources.files("tessera.engine_model.catalog").joinpath("models/deepseek-v3.json").read_text())
    assert ModelArch.from_hf_config(raw, name="x").kv_lora_rank == 512


def test_mla_kv_bytes_per_token_is_the_latent_not_per_head_k_and_v():
    """(kv_lora_rank 512 + qk_rope_head_dim 64) x 61 layers x 2 bytes, on every TP rank alike; the
    per-head K and V the model assumed before MLA would be 2 x 61 x 128 heads x 192 x 2: 85x more."""
    hand = (512 + 64) * 61 * 2
    assert DS.kv_bytes_per_token() == hand == 70_272
    assert DS.kv_bytes_per_token(1) == (512 + 64) * 61  # fp8 KV cache
    for par in (Parallelism(), Parallelism(tp=8, ep=8), Parallelism(tp=1, dp=8, ep=8)):
        assert kv_bytes_per_token_per_device(DS, par) == hand
    as_mha = replace(DS, kv_lora_rank=0, head_dim=192)
    assert as_mha.kv_bytes_per_token() / hand == pytest.approx(85.3, rel=0.01)


def test_dp_attention_holds_each_ranks_own_kv_and_does_not_fit_one_h100_node():
    """DP attention replicates the attention weights on every rank, so DeepSeek V3 at DP 8 does not fit
    8 x H100 (80 GB) but does fit 16 (two nodes) and 8 x MI300X (192 GB), with 8 ranks of KV cache."""
    h100, mi300x = accelerators.get("h100-sxm"), accelerators.get("mi300x")
    assert kv_capacity_tokens(DS, h100, Parallelism(tp=1, dp=8, ep=8)) == 0
    assert kv_capacity_tokens(DS, h100, Parallelism(tp=8, ep=8)) == 0
    assert kv_capacity_tokens(DS, h100, Parallelism(tp=1, dp=16, ep=16)) > 1_000_000
    one_rank = kv_capacity_tokens(DS, mi300x, Parallelism(tp=1, dp=8, ep=8)) / 8
    assert one_rank == pytest.approx((192e9 * 0.9 - 98.86e9) / 70_272, rel=0.01)


def test_mla_decode_reads_the_latent_once_for_all_heads():
    """Absorbed MLA decode: attention bytes per context token are the 576-value latent, so a long
    context costs far less than MHA-sized K/V would."""
    eff = Efficiency()
    mi300x = accelerators.get("mi300x")
    short = step_time(DS, Batch(decode=(1000,) * 64), mi300x, Parallelism(tp=8, ep=8), eff)
    long_ = step_time(DS, Batch(decode=(8000,) * 64), mi300x, Parallelism(tp=8, ep=8), eff)
    latent_bytes = 64 * 7000 * 576 * 2 * 61
    extra = long_.by_op["attention_decode"] - short.by_op["attention_decode"]
    assert extra == pytest.approx(latent_bytes / (mi300x.memory_bw_bytes_s * eff.attention_memory), rel=0.05)


def test_step_timer_equals_roofline_under_dp_attention_and_context_parallelism():
    """The memoised timer the simulator and planner use and the itemised roofline agree for the new shapes."""
    eff = Efficiency()
    for accel, par in (
        ("mi300x", Parallelism(tp=1, dp=8, ep=8)),
        ("h100-sxm", Parallelism(tp=1, dp=16, ep=16)),
        ("a100-80gb-sxm", Parallelism(tp=2, cp=4)),
    ):
        arch = DS if par.dp > 1 else ModelArch.llama3_8b()
        timer = StepTimer(arch, accelerators.get(accel), par, eff)
        for batch in (Batch(decode=(2000,) * 37), Batch(prefill=((4096, 0), (300, 100)), decode=(500,) * 9)):
            expect = step_time(arch, batch, accelerators.get(accel), par, eff).total_s
            assert timer(prefill=batch.prefill, decode=batch.decode) == pytest.approx(expect, rel=1e-9)


def test_expert_all_to_all_is_priced_per_vendor_fabric():
    """NVSwitch gives any EP group the full per-GPU rate; MI300X's Infinity Fabric mesh gives a group of
    4 only the 3 links to its peers; Tenstorrent's Ethernet ring forwards through neighbours; an EP
    group beyond one node pays the scale-out NIC for the share bound elsewhere."""
    h100, mi300x, n300 = (accelerators.get(n) for n in ("h100-sxm", "mi300x", "wormhole-n300"))
    assert group_bandwidth(h100, 4) == group_bandwidth(h100, 8) == h100.scale_up_bytes_s
    assert group_bandwidth(mi300x, 8) == pytest.approx(448e9)
    assert group_bandwidth(mi300x, 4) == pytest.approx(3 * 64e9)
    assert group_bandwidth(n300, 4) < n300.scale_up_bytes_s
    # dispatch volume per token = hidden x top_k x bytes
    nbytes = 256 * 7168 * 8 * 1
    one_node = expert_all_to_all_time(nbytes, 8, h100, 1.0, 0.0)
    assert one_node == pytest.approx(nbytes * 7 / 8 / 450e9)
    two_nodes = expert_all_to_all_time(nbytes, 16, h100, 1.0, 0.0)
    assert two_nodes == pytest.approx(nbytes * 8 / 16 / 50e9)  # half of it crosses the 50 GB/s NIC
    assert two_nodes > 5 * one_node


DS_POLICY = """
model: deepseek-v3
targets: {ttft: {percentile: 90, ms: 3000}, tpot: {percentile: 90, ms: 100}}
inventory: {mi300x: 16}
roles: [mixed]
tp: [1, 8]
dp: %s
"""
DS_LOAD = LoadMix(15.0, input_mean=2000, input_p90=3000, output_mean=1000)


def test_planner_picks_the_dp_ep_shape_for_deepseek_where_it_is_cheaper():
    """With DP/EP shapes on offer the planner serves 15 req/s of DeepSeek V3 on one 8 x MI300X DP 8
    instance; with TP 8 (EP over the TP group) only it needs more nodes for the same load."""
    with_dp = parse_slo_policy(DS_POLICY % "[1, 8]")
    tp_only = parse_slo_policy(DS_POLICY % "[1]")
    ep = plan(with_dp, DS_LOAD, CapacityModel(engines_for(with_dp)))
    tp = plan(tp_only, DS_LOAD, CapacityModel(engines_for(tp_only)))
    assert ep.feasible and ep.counts == {InstanceType("mi300x", 1, "mixed", dp=8): 1}
    assert ep.capacities[InstanceType("mi300x", 8)] < ep.capacities[InstanceType("mi300x", 1, "mixed", dp=8)]
    assert ep.cost_per_hour < tp.cost_per_hour or not tp.feasible
    assert ep.devices == {"mi300x": 8}


def test_dense_models_get_no_dp_shape():
    policy = parse_slo_policy(
        "model: llama3-8b\ntargets: {ttft: {percentile: 90, ms: 500}, tpot: {percentile: 90, ms: 50}}\n"
        "inventory: {h100: 8}\ndp: [1, 8]\n"
    )
    assert set(engines_for(policy)) == {("h100-sxm", 1)}


def test_planner_splits_a_long_prefill_over_older_gpus_with_context_parallelism():
    """32k-token prompts under a 1.5-s TTFT: no A100 shape meets it alone (a lone prompt takes 2-4 s);
    with CP 4 on offer the planner buys a context-parallel prefill instance and a decode instance."""
    doc = (
        "model: llama3-8b\ntargets: {ttft: {percentile: 90, ms: 1500}, tpot: {percentile: 90, ms: 60}}\n"
        "inventory: {a100: 32}\nroles: [mixed, prefill, decode]\ntp: [1, 2]\ncp: %s\n"
    )
    load = LoadMix(0.5, input_mean=24000, input_p90=32000, output_mean=200)
    without = parse_slo_policy(doc % "[1]")
    with_cp = parse_slo_policy(doc % "[1, 4]")
    assert not plan(without, load, CapacityModel(engines_for(without))).feasible
    chosen = plan(with_cp, load, CapacityModel(engines_for(with_cp)))
    assert chosen.feasible
    assert any(t.cp == 4 and t.role == "prefill" for t in chosen.counts)


def test_startup_scales_with_model_size_and_load_bandwidth():
    """cold start = weights per device / load bandwidth + the engine's warm-up; not a constant."""
    h100 = accelerators.get("h100-sxm")
    small, big = ModelArch.llama3_8b(), ModelArch.llama3_70b()
    a = startup_times(small, h100, Parallelism(), 40.0)
    b = startup_times(big, h100, Parallelism(tp=4), 40.0)
    assert a.load_s == pytest.approx(small.weight_bytes() / 2e9)
    assert b.load_s / a.load_s == pytest.approx(big.weight_bytes() / 4 / small.weight_bytes(), rel=1e-6)
    fast = replace(h100, load_gb_s=8.0)
    assert cold_start_s(big, fast, Parallelism(tp=4), 40.0) - 40.0 == pytest.approx(b.load_s / 4)
    assert a.wake_s < a.cold_s  # sleep mode: weights back over PCIe, no warm-up
    # the vendor table's warm-up: the CPU engine's measured ~25 s, on top of a 135M model's load
    cpu = instance_startup(ModelArch.smollm2_135m(), InstanceSpec(accelerators.get("cpu")))
    assert cpu.warmup_s == 25.0 and cpu.cold_s == pytest.approx(25.0 + cpu.load_s) and cpu.load_s < 1.0


def test_sleep_mode_instances_are_kept_and_charged():
    """With sleep_mode the plan keeps one sleeping instance per planned type (its wake-up beats its cold
    start) and its cost includes their full device price; without it, none."""
    doc = (
        "model: llama3-8b\ntargets: {ttft: {percentile: 90, ms: 500}, tpot: {percentile: 90, ms: 50}}\n"
        "inventory: {h100: 8}\nroles: [mixed]\nsleep_mode: %s\n"
    )
    load = LoadMix(10.0, 1024, 2048, 256)
    awake = parse_slo_policy(doc % "false")
    asleep = parse_slo_policy(doc % "true")
    plain = plan(awake, load, CapacityModel(engines_for(awake)))
    warm = plan(asleep, load, CapacityModel(engines_for(asleep)))
    assert plain.sleeping == {} and warm.counts == plain.counts
    assert warm.sleeping == {InstanceType("h100-sxm"): 1}
    assert warm.sleeping_cost_per_hour == pytest.approx(2.99)
    assert warm.cost_per_hour == pytest.approx(plain.cost_per_hour + 2.99)
    assert any("asleep" in r and "$2.99/h" in r for r in warm.reasons)


def test_dp_and_cp_shapes_launch_as_their_own_worker_groups():
    """The live autoscaler turns a DP/EP type into its own group with the worker's DP/EP flags, and a
    CP type into one with vLLM's prefill_context_parallel_size, so neither collides with the plain type."""
    from services.autoscaler.model_autoscaler import groups_for
    from services.autoscaler.worker_command import shape_flags

    policy = parse_slo_policy(DS_POLICY % "[1, 8]")
    dp8, plain = InstanceType("mi300x", 1, "mixed", dp=8), InstanceType("mi300x", 1)
    cp4 = InstanceType("mi300x", 2, "prefill", cp=4)
    groups = {g.name: g for g in groups_for(policy, {dp8: 1, plain: 1, cp4: 1})}
    assert len(groups) == 3
    dp_group = next(g for g in groups.values() if "-dp8-" in g.name)
    flags = shape_flags(dp_group)
    assert flags[flags.index("--data-parallel-size") + 1] == "8" and "--expert-parallel" in flags
    cp_group = next(g for g in groups.values() if "-cp4-" in g.name)
    assert cp_group.engine_args == {"tensor_parallel_size": 2, "prefill_context_parallel_size": 4}


def test_simulated_instances_start_after_their_modelled_cold_start():
    """startup_s=None (tessera sim --startup-s model): an H100 asked for at t=10 serves from t=10 plus
    Llama-3.1-8B's 16 GB over 2 GB/s and NVIDIA's 40-s warm-up, not after a fixed 60 s; and it is
    billed from the ask."""
    from tessera.cli.sim_autoscaling import _startup_s
    from tessera.sim.autoscalers import Autoscaler, Observation, ScalingDecision
    from tessera.sim.autoscaling import run_autoscaled
    from tessera.sim.workloads import SimRequest
    from tests.support.sim import POLICY

    h100 = InstanceType("h100-sxm")

    class AskAtTen(Autoscaler):
        name, interval_s = "ask-at-ten", 10.0

        def decide(self, obs: Observation) -> ScalingDecision:
            return ScalingDecision({h100: 1} if obs.now_s >= 10 else {})

    arch = ModelArch.llama3_8b()
    workload = [SimRequest("r0", 5.0, 256, 8), SimRequest("r1", 70.0, 256, 8)]
    run = run_autoscaled(workload, parse_slo_policy(POLICY), AskAtTen(), arch, startup_s=None)
    [life] = run.lifetimes
    cold = instance_startup(arch, InstanceSpec(accelerators.get("h100-sxm"))).cold_s
    assert cold == pytest.approx(arch.weight_bytes() / 2e9 + 40.0)
    assert (life.requested_s, life.ready_s) == pytest.approx((10.0, 10.0 + cold))
    assert all(r.done for r in run.result.records)
    assert _startup_s("model") is None and _startup_s("30") == 30.0
