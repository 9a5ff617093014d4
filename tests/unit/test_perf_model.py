"""The accelerator catalog and the roofline performance model (pure code, no cluster).

Expected values are worked out by hand in the comments, so a test fails when the
model drifts from physics, not only when it drifts from itself.
"""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import yaml

from tessera.engine_model.catalog import accelerators
from tessera.engine_model.catalog.vendors import vendor_settings
from tessera.engine_model.perf.comm import SCALE_OUT, SCALE_UP, kv_transfer_time
from tessera.engine_model.perf.efficiency import (
    Efficiency,
    efficiency_for,
    efficiency_from_dict,
    efficiency_table,
    read_calibration_file,
)
from tessera.engine_model.perf.memory import kv_capacity_tokens
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import GEMM, Batch, Parallelism, step_ops
from tessera.engine_model.perf.roofline import op_time, step_time
from tessera.engine_model.perf.vidur import VIDUR_OPS, arch_from_vidur_row, measured_seconds, vidur_op_costs
from tests.support.paths import REPO, SHARED

PROFILES = SHARED / "data" / "profiles"
CPU_STEPS = REPO / "benchmarks" / "results" / "cpu_engine_steps.csv"
LLAMA7 = ModelArch.llama2_7b()
LLAMA70 = ModelArch.llama2_70b()


@pytest.fixture(scope="module")
def calibrated() -> dict[str, Efficiency]:
    return efficiency_table(read_calibration_file())


def h100() -> accelerators.Accelerator:
    return accelerators.get("h100-sxm")


def a100() -> accelerators.Accelerator:
    return accelerators.get("a100-80gb-sxm")


def gemm_seconds(
    arch: ModelArch, batch: Batch, accel: accelerators.Accelerator, eff: Efficiency, par: Parallelism = Parallelism()
) -> float:
    return sum(op_time(op, accel, eff, arch.dtype_bytes) for op in step_ops(arch, batch, par) if op.kind == GEMM)


# -- catalog -----------------------------------------------------------------------------


def test_catalog_rows_are_complete_and_vendors_known():
    rows = accelerators.all()
    names = {r.name for r in rows}
    assert {
        "a100-80gb-sxm",
        "h100-sxm",
        "h200",
        "b200",
        "l40s",
        "mi250x",
        "mi300x",
        "mi325x",
        "mi355x",
        "wormhole-n300",
        "blackhole-p150",
        "rubin-cpx",
        "cpu",
    } <= names
    for r in rows:
        vendor_settings(r.vendor)  # raises for a vendor missing from vendors.yaml
        assert r.bf16_tflops > 0 and r.memory_gb > 0 and r.memory_bw_tb_s > 0 and r.cost_per_hour_usd > 0
        assert r.sources, f"{r.name} has no sources"
        if r.fp8_tflops is not None:
            assert r.fp8_tflops >= r.bf16_tflops


def test_catalog_published_figures_and_units():
    h = h100()
    assert h.peak_bf16_flops == pytest.approx(989.5e12)
    assert h.memory_bw_bytes_s == pytest.approx(3.35e12)
    assert a100().bf16_tflops == 312 and a100().fp8_tflops is None
    mi = accelerators.get("mi300x")
    assert (mi.bf16_tflops, mi.memory_gb, mi.memory_bw_tb_s) == (1307.4, 192, 5.3)


def test_cpu_row_is_one_measured_core():
    cpu = accelerators.get("cpu")
    assert cpu.measured is True
    # one Zen 4 core: fp32 ~2 x 256-bit FMA x 8 lanes x 2 FLOP x ~3 GHz = ~96 GFLOP/s; bf16 (VDPBF16PS)
    # twice that; one core streams a few tens of GB/s
    assert 0.05 < cpu.fp32_tflops < 0.2
    assert cpu.bf16_tflops == pytest.approx(2 * cpu.fp32_tflops, rel=0.15)
    assert 0.005 < cpu.memory_bw_tb_s < 0.1
    assert "measure_cpu_peaks.py" in cpu.sources["compute_memory"] and "2026-11-27" in cpu.sources["compute_memory"]


def test_fp32_peak_is_the_catalog_figure_or_half_the_bf16_peak():
    cpu = accelerators.get("cpu")
    assert cpu.peak_flops(4) == pytest.approx(cpu.fp32_tflops * 1e12)
    assert cpu.peak_flops(2) == pytest.approx(cpu.bf16_tflops * 1e12)
    assert cpu.peak_flops(1) == cpu.peak_flops(2)  # no fp8 units: bf16
    # GPUs give no fp32 figure: fp32 matmuls run at the TF32 tensor rate, half of bf16
    assert h100().fp32_tflops is None and h100().peak_flops(4) == pytest.approx(989.5e12 / 2)
    assert h100().peak_flops(1) == pytest.approx(1979e12) and a100().peak_flops(1) == pytest.approx(312e12)
    row = {
        "vendor": "cpu",
        "bf16_tflops": 1.0,
        "memory_gb": 1,
        "memory_bw_tb_s": 0.1,
        "scale_up_gb_s": 1,
        "scale_out_gb_s": 1,
        "cost_per_hour_usd": 1,
    }
    parsed = accelerators.parse_catalog({"a": row, "b": {**row, "fp32_tflops": 0.25}}, {"cpu"})
    assert parsed["a"].peak_fp32_flops == 0.5e12 and parsed["b"].peak_fp32_flops == 0.25e12
    # an fp32 model on the CPU row is timed against the fp32 peak: 2x the bf16 model's GEMM time
    fp32 = replace(ModelArch.smollm2_135m(), dtype_bytes=4)
    eff = Efficiency(gemm_memory=1e9)  # compute roof only
    big = Batch(prefill=((4096, 0),))
    ratio = gemm_seconds(fp32, big, cpu, eff) / gemm_seconds(ModelArch.smollm2_135m(), big, cpu, eff)
    assert ratio == pytest.approx(cpu.bf16_tflops / cpu.fp32_tflops, rel=0.01)


def test_unknown_accelerator_lists_known_names():
    with pytest.raises(ValueError, match="unknown accelerator 'h800'.*h100-sxm.*mi300x"):
        accelerators.get("h800")


# -- architecture ------------------------------------------------------------------------


def test_llama_param_counts_match_published_sizes():
    assert LLAMA7.param_count() == pytest.approx(6.74e9, rel=0.005)
    assert LLAMA70.param_count() == pytest.approx(68.98e9, rel=0.005)
    assert ModelArch.smollm2_135m().param_count() == pytest.approx(134.5e6, rel=0.01)


def test_from_hf_config_matches_constructor_and_reads_moe():
    llama = {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 32,
        "intermediate_size": 11008,
        "vocab_size": 32000,
        "torch_dtype": "float16",
        "model_type": "llama",
    }
    assert ModelArch.from_hf_config(llama, name="Llama-2-7b-hf") == LLAMA7
    mixtral = {
        "num_hidden_layers": 32,
        "hidden_size": 4096,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "intermediate_size": 14336,
        "vocab_size": 32000,
        "num_local_experts": 8,
        "num_experts_per_tok": 2,
        "torch_dtype": "bfloat16",
        "model_type": "mixtral",
    }
    moe = ModelArch.from_hf_config(mixtral)
    assert moe.is_moe and moe.top_k == 2 and moe.expert_intermediate == 14336
    assert moe.param_count() == pytest.approx(46.7e9, rel=0.01)  # Mixtral-8x7B


# -- roofline ----------------------------------------------------------------------------


def test_decode_on_h100_is_memory_bound_and_tracks_weight_bytes(calibrated):
    eff = calibrated["h100-sxm"]
    batch = Batch(decode=(512,) * 8)
    st = step_time(LLAMA7, batch, h100(), eff=eff)
    assert st.memory_bound_fraction > 0.95
    # Streaming 13.5 GB of weights at 3.35 TB/s takes 4.02 ms. Vidur's small-batch GEMMs
    # reach ~2.7 TB/s effective (kernel fixed costs included), so 13.5 GB / 2.7 TB/s = 5.0 ms:
    # the model's GEMMs should take 1.15-1.35x the floor.
    floor = LLAMA7.weight_bytes() / h100().memory_bw_bytes_s
    assert floor == pytest.approx(4.02e-3, rel=0.01)
    assert 1.15 * floor < gemm_seconds(LLAMA7, batch, h100(), eff) < 1.35 * floor
    # The whole step also reads the KV cache (8 x 512 tokens x 0.5 MiB = 2.15 GB) and pays the
    # per-step overhead: within 2x of (weights + KV) / bandwidth = 4.66 ms.
    kv_floor = (LLAMA7.weight_bytes() + 8 * 512 * LLAMA7.kv_bytes_per_token()) / h100().memory_bw_bytes_s
    assert kv_floor < st.total_s < 2.0 * kv_floor
    # doubling the decode batch barely moves a memory-bound step
    st16 = step_time(LLAMA7, Batch(decode=(512,) * 16), h100(), eff=eff)
    assert st16.total_s / st.total_s < 1.15


def test_prefill_4096_on_h100_is_compute_bound(calibrated):
    eff = calibrated["h100-sxm"]
    batch = Batch(prefill=((4096, 0),))
    st = step_time(LLAMA7, batch, h100(), eff=eff)
    assert st.memory_bound_fraction < 0.25
    # GEMM FLOPs ~ 2 * 6.48e9 (non-embedding params) * 4096 = 53 TFLOP; at ~75% of
    # 989.5 TFLOP/s that is ~72 ms. Vidur's layer tables put it at ~70 ms.
    gemm_flops = 2 * (LLAMA7.param_count() - 2 * LLAMA7.vocab * LLAMA7.hidden) * 4096
    expected = gemm_flops / (h100().peak_bf16_flops * 0.75)
    assert gemm_seconds(LLAMA7, batch, h100(), eff) == pytest.approx(expected, rel=0.12)
    # attention adds something but the causal 4096^2 part is far from dominant for 7B
    assert 0.02 < st.by_op["attention_prefill"] / st.total_s < 0.25


def test_tp2_roughly_halves_gemms_but_adds_all_reduce(calibrated):
    eff = calibrated["h100-sxm"]
    batch = Batch(prefill=((2048, 0),), decode=(1000,) * 16)
    one = step_time(LLAMA7, batch, h100(), Parallelism(tp=1), eff)
    two = step_time(LLAMA7, batch, h100(), Parallelism(tp=2), eff)
    ratio = gemm_seconds(LLAMA7, batch, h100(), eff, Parallelism(2)) / gemm_seconds(LLAMA7, batch, h100(), eff)
    assert 0.45 < ratio < 0.62
    assert one.communication_s == 0.0
    # 2 all-reduces x 32 layers of 2064 tokens x 4096 x 2 B = 16.9 MB each; ring moves 1x at
    # 0.8 x 450 GB/s: 47 us + 10 us latency each -> ~3.6 ms in all
    assert two.communication_s == pytest.approx(64 * (16.9e6 / 360e9 + 10e-6), rel=0.05)
    assert two.total_s < one.total_s


def test_h100_beats_a100_and_mi300x_beats_a100(calibrated):
    for batch in (
        Batch(decode=(2000,) * 32),
        Batch(prefill=((3000, 1000),)),
        Batch(prefill=((512, 0),), decode=(64,) * 4),
    ):
        t_h = step_time(LLAMA7, batch, h100(), eff=efficiency_for("h100-sxm", calibrated)).total_s
        t_a = step_time(LLAMA7, batch, a100(), eff=efficiency_for("a100-80gb-sxm", calibrated)).total_s
        t_mi = step_time(LLAMA7, batch, accelerators.get("mi300x"), eff=efficiency_for("mi300x", calibrated)).total_s
        assert t_h < 0.8 * t_a
        assert t_mi < t_a


def test_decode_time_grows_with_context_and_prefill_with_cached_prefix(calibrated):
    eff = calibrated["h100-sxm"]
    short = step_time(LLAMA7, Batch(decode=(128,) * 16), h100(), eff=eff).total_s
    long = step_time(LLAMA7, Batch(decode=(4096,) * 16), h100(), eff=eff).total_s
    # 16 sequences x 3,968 more tokens x 524,288 B of KV (all layers) = 33.3 GB more to read:
    # at 0.7 x 3.35 TB/s that is ~14.2 ms more per step
    extra_kv = 16 * (4096 - 128) * LLAMA7.kv_bytes_per_token()
    assert extra_kv == pytest.approx(33.3e9, rel=0.01)
    assert long - short == pytest.approx(extra_kv / (h100().memory_bw_bytes_s * eff.attention_memory), rel=0.05)
    assert (
        step_time(LLAMA7, Batch(prefill=((512, 4096),)), h100(), eff=eff).total_s
        > step_time(LLAMA7, Batch(prefill=((512, 0),)), h100(), eff=eff).total_s
    )


def test_moe_decode_reads_only_the_experts_it_hits():
    moe = ModelArch(
        "moe",
        layers=32,
        hidden=4096,
        heads=32,
        kv_heads=8,
        head_dim=128,
        intermediate=14336,
        vocab=32000,
        num_experts=8,
        top_k=2,
        expert_intermediate=14336,
    )
    one = step_time(moe, Batch(decode=(100,)), h100())
    many = step_time(moe, Batch(decode=(100,) * 64), h100())
    # one token touches 2 of 8 experts; 64 tokens touch ~all 8: expert bytes grow ~4x
    assert 2.5 < many.by_op["moe_experts"] / one.by_op["moe_experts"] < 4.5
    ep = step_time(moe, Batch(decode=(100,) * 64), h100(), Parallelism(tp=2, ep=2))
    tp = step_time(moe, Batch(decode=(100,) * 64), h100(), Parallelism(tp=2))
    assert ep.communication_s > 0 and tp.communication_s > 0
    with pytest.raises(ValueError):
        Parallelism(tp=2, ep=4)


# -- memory and transfers ----------------------------------------------------------------


def test_kv_capacity_llama7b_on_80gb():
    # By hand: 80e9 B x 0.9 = 72.0e9 usable; weights 6.738e9 params x 2 B = 13.48e9;
    # KV per token = 2 (K,V) x 32 layers x 32 heads x 128 x 2 B = 524,288 B;
    # (72.0e9 - 13.48e9) / 524,288 = ~111,630 tokens (~3,490 blocks of 32).
    tokens = kv_capacity_tokens(LLAMA7, h100())
    assert tokens == pytest.approx(111_630, rel=0.005)
    # H200: (141e9 x 0.9 - 13.48e9) / 524,288 = ~216,300 tokens, 1.94x the H100.
    # 70B does not fit one 80 GB GPU but fits on 4.
    assert kv_capacity_tokens(LLAMA7, accelerators.get("h200")) == pytest.approx(216_300, rel=0.005)
    assert kv_capacity_tokens(LLAMA70, h100()) == 0
    # TP=4: (72e9 - 137.96e9/4) / (2 x 80 x 2 kv heads x 128 x 2 B = 81,920 B) = ~457,900
    assert kv_capacity_tokens(LLAMA70, h100(), Parallelism(tp=4)) == pytest.approx(457_900, rel=0.01)


def test_kv_transfer_time():
    # 4,096 tokens x 524,288 B = 2.147 GB over 50 GB/s x 0.8 = 53.7 ms (+ 50 us)
    t = kv_transfer_time(LLAMA7, 4096, h100(), h100(), network=SCALE_OUT)
    assert t == pytest.approx(2.147e9 / 40e9 + 50e-6, rel=0.01)
    assert kv_transfer_time(LLAMA7, 4096, h100(), h100(), network=SCALE_UP) < t / 8
    # the slower end limits; more parallel links help
    assert kv_transfer_time(LLAMA7, 4096, h100(), a100()) > t
    assert kv_transfer_time(LLAMA7, 4096, h100(), h100(), src_devices=2, dst_devices=2) < 0.6 * t
    assert kv_transfer_time(LLAMA7, 0, h100(), h100()) == 0.0


# -- calibration -------------------------------------------------------------------------


def test_efficiency_parsing_rejects_unknown_keys_and_defaults_the_rest():
    eff = efficiency_from_dict({"gemm_memory": 0.5})
    assert eff.gemm_memory == 0.5 and eff.attention_memory == Efficiency().attention_memory
    with pytest.raises(ValueError, match="gemm_memroy"):
        efficiency_from_dict({"gemm_memroy": 0.5})
    assert efficiency_for("b200", {}) == Efficiency()


def test_calibration_file_names_catalog_rows(calibrated):
    assert {"h100-sxm", "a100-80gb-sxm", "cpu"} <= set(calibrated)
    for name in calibrated:
        accelerators.get(name)


@pytest.mark.skipif(not PROFILES.exists(), reason="shared Vidur profiles not present")
@pytest.mark.parametrize("gpu,name", [("h100", "h100-sxm"), ("a100", "a100-80gb-sxm")])
def test_calibrated_model_within_10_percent_of_vidur(calibrated, gpu, name):
    accel, eff = accelerators.get(name), calibrated[name]
    apes: dict[str, list[float]] = {op: [] for op in VIDUR_OPS}
    for model in ("Llama-2-7b-hf", "Llama-2-70b-hf"):
        with open(PROFILES / f"vidur_{gpu}_{model}_mlp.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        arch = arch_from_vidur_row(rows[0], model)
        for row in rows:
            for op_name, op in vidur_op_costs(row, arch).items():
                apes[op_name].append(abs(op_time(op, accel, eff) / measured_seconds(row, op_name) - 1.0))
    everything = np.concatenate([np.array(v) for v in apes.values()])
    assert np.median(everything) < 0.10
    # the GEMMs, which dominate a step, are each within 10% on median
    for op in ("attn_pre_proj", "attn_post_proj", "mlp_up_proj", "mlp_down_proj"):
        assert np.median(apes[op]) < 0.10, op


def test_calibration_scripts_merge_their_entries(tmp_path):
    pytest.importorskip("scipy")
    from benchmarks.calibration_common import calibration_entry, merge_calibration

    path = tmp_path / "calibration.yaml"
    path.write_text("generated_by: old.py\naccelerators:\n  h100-sxm:\n    factors: {gemm_memory: 0.9}\n")
    merge_calibration(
        {"cpu": calibration_entry({"gemm_memory": 0.5}, {"median_ape": 0.05, "mape": 0.06}, generated_by="new.py")},
        path,
    )
    table = efficiency_table(yaml.safe_load(path.read_text()))
    assert table["h100-sxm"].gemm_memory == 0.9 and table["cpu"].gemm_memory == 0.5
    merge_calibration({"h100-sxm": calibration_entry({"gemm_memory": 0.8}, {"median_ape": 0.1, "mape": 0.1})}, path)
    doc = yaml.safe_load(path.read_text())
    assert list(doc["accelerators"]) == ["h100-sxm", "cpu"]
    assert doc["accelerators"]["h100-sxm"]["factors"] == {"gemm_memory": 0.8}
    assert doc["accelerators"]["cpu"]["generated_by"] == "new.py"


# -- the cpu row against real vLLM engine steps (benchmarks/measure_cpu_steps.py) ----------


def _cpu_steps() -> list[tuple[str, Batch, float]]:
    with open(CPU_STEPS, newline="") as f:
        return [
            (
                r["label"],
                Batch(prefill=tuple(tuple(c) for c in json.loads(r["prefill"])), decode=tuple(json.loads(r["decode"]))),
                float(r["seconds"]),
            )
            for r in csv.DictReader(f)
        ]


@pytest.mark.skipif(not CPU_STEPS.exists(), reason="benchmarks/results/cpu_engine_steps.csv not present")
def test_calibrated_cpu_model_within_15_percent_of_vllm_engine_steps(calibrated):
    """SmolLM2-135M in float32 on one core: the calibrated `cpu` row against measured EngineCore steps.
    Each check compares medians over the matching steps (repetitions; decode contexts drift by a
    token per step), since single decode steps on this VM scatter by ~10%."""
    cpu, eff = accelerators.get("cpu"), calibrated["cpu"]
    arch = replace(ModelArch.smollm2_135m(), dtype_bytes=4)
    steps = _cpu_steps()

    def check(what, select):
        rows = [(b, t) for label, b, t in steps if select(label, b)]
        assert rows, what
        measured = float(np.median([t for _, t in rows]))
        predicted = float(np.median([step_time(arch, b, cpu, eff=eff).total_s for b, _ in rows]))
        assert predicted == pytest.approx(measured, rel=0.15), (
            f"{what}: model {predicted:.4f} s, measured {measured:.4f} s"
        )

    # one prompt, nothing cached (the 16-token prompt is the worst group, +20%: see docs/perf-model.md)
    for n in (32, 256, 1024, 4096):
        check(f"prefill {n}", lambda label, b, n=n: b.prefill == ((n, 0),) and not b.decode)
    check("8 prompts of 512", lambda label, b: b.prefill == ((512, 0),) * 8 and not b.decode)
    check("64 new tokens after 4096 cached", lambda label, b: b.prefill == ((64, 4096),))
    check("1024 new tokens after 2048 cached", lambda label, b: b.prefill == ((1024, 2048),))
    check("decode 1 sequence", lambda label, b: not b.prefill and len(b.decode) == 1)
    check("decode 64 x ~128", lambda label, b: not b.prefill and len(b.decode) == 64 and b.decode[0] < 200)
    check("decode 32 x ~1024", lambda label, b: not b.prefill and len(b.decode) == 32 and b.decode[0] > 1000)
    check(
        "8 decodes + 512-token prompt",
        lambda label, b: label == "mixed" and b.prefill == ((512, 0),) and len(b.decode) == 8,
    )
    # and over every measured step
    apes = [abs(step_time(arch, b, cpu, eff=eff).total_s / t - 1.0) for _, b, t in steps]
    assert np.median(apes) < 0.15
