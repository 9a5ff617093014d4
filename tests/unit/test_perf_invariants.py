"""Invariants every accelerator's performance model must keep, checked over many random cases.

A scheduler or planner that trusts the model would make absurd choices if
more work could be faster, a faster memory slower, or a bigger model fit more
KV; these hold for every catalog row with its calibrated factors.
"""

from __future__ import annotations

import dataclasses
import random

import pytest

from tessera.engine_model.catalog import accelerators
from tessera.engine_model.perf.efficiency import efficiency_for, efficiency_table, read_calibration_file
from tessera.engine_model.perf.memory import kv_capacity_tokens
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import Batch, Parallelism
from tessera.engine_model.perf.roofline import step_time
from tessera.engine_model.perf.step_timer import StepTimer

ARCHS = [
    ModelArch.llama2_7b(),
    ModelArch.llama3_8b(),
    ModelArch.llama2_70b(),
    ModelArch.qwen3_30b_a3b(),
    ModelArch.smollm2_135m(),
]
TABLE = efficiency_table(read_calibration_file())


def _random_batch(rng: random.Random) -> Batch:
    prefill = tuple((rng.randint(1, 2048), rng.choice([0, 0, rng.randint(0, 8192)])) for _ in range(rng.randint(0, 3)))
    decode = tuple(rng.randint(1, 16384) for _ in range(rng.randint(0, 64)))
    if not prefill and not decode:
        decode = (rng.randint(1, 4096),)
    return Batch(prefill, decode)


def _cases(n: int = 60, seed: int = 7):
    rng = random.Random(seed)
    for accel in accelerators.all():
        for _ in range(n):
            yield accel, rng.choice(ARCHS), _random_batch(rng), rng.choice([1, 2, 4, 8])


def _par(arch: ModelArch, tp: int) -> Parallelism:
    return Parallelism(tp=tp, ep=tp if arch.is_moe and tp > 1 else 1)


def test_more_tokens_are_never_faster():
    rng = random.Random(1)
    for accel, arch, batch, tp in _cases():
        eff = efficiency_for(accel.name, TABLE)
        par = _par(arch, tp)
        base = step_time(arch, batch, accel, par, eff).total_s
        more_decode = Batch(batch.prefill, batch.decode + (rng.randint(1, 8192),))
        longer_context = Batch(batch.prefill, tuple(c + rng.randint(1, 4096) for c in batch.decode))
        more_prefill = Batch(batch.prefill + ((rng.randint(1, 1024), 0),), batch.decode)
        for bigger in (more_decode, longer_context, more_prefill):
            assert step_time(arch, bigger, accel, par, eff).total_s >= base - 1e-12, (accel.name, arch.name, batch)


def test_more_bandwidth_or_compute_is_never_slower():
    for accel, arch, batch, tp in _cases(30):
        eff = efficiency_for(accel.name, TABLE)
        par = _par(arch, tp)
        base = step_time(arch, batch, accel, par, eff).total_s
        for faster in (
            dataclasses.replace(accel, memory_bw_tb_s=accel.memory_bw_tb_s * 1.5),
            dataclasses.replace(accel, bf16_tflops=accel.bf16_tflops * 1.5),
            dataclasses.replace(accel, scale_up_gb_s=accel.scale_up_gb_s * 2),
        ):
            assert step_time(arch, batch, faster, par, eff).total_s <= base + 1e-12, (accel.name, arch.name, batch)


def test_a_bigger_model_never_fits_more_kv():
    """Bigger in every dimension (layers, width, KV heads, MLP, vocabulary): never more KV tokens.
    (Across families it can: Llama-2-70B's 8 KV heads hold more tokens than 7B's 32.)"""
    rng = random.Random(3)
    for accel in accelerators.all():
        for _ in range(40):
            base = rng.choice(ARCHS)
            grow = rng.choice([1, 1, 2])
            big = dataclasses.replace(
                base,
                layers=base.layers + rng.randint(0, 16),
                hidden=base.hidden * grow,
                heads=base.heads * grow,
                kv_heads=base.kv_heads * grow,
                intermediate=base.intermediate + rng.randint(0, 4096),
                vocab=base.vocab + rng.randint(0, 30000),
            )
            for tp in (1, 2, 8):
                par = _par(base, tp)
                assert kv_capacity_tokens(big, accel, par) <= kv_capacity_tokens(base, accel, par), (accel.name, big)


def test_more_memory_never_fits_less_kv():
    for accel in accelerators.all():
        bigger = dataclasses.replace(accel, memory_gb=accel.memory_gb * 2)
        for arch in ARCHS:
            assert kv_capacity_tokens(arch, bigger) >= kv_capacity_tokens(arch, accel)


@pytest.mark.parametrize("seed", range(3))
def test_step_timer_equals_step_time(seed):
    """The simulators' memoised timer is the roofline, not an approximation of it."""
    for accel, arch, batch, tp in list(_cases(10, seed)):
        eff = efficiency_for(accel.name, TABLE)
        par = _par(arch, tp)
        timer = StepTimer(arch, accel, par, eff)
        for _ in range(2):  # the second call comes from the cache
            assert timer(batch.prefill, batch.decode) == pytest.approx(
                step_time(arch, batch, accel, par, eff).total_s, rel=1e-12
            )
    assert StepTimer(ARCHS[0], accelerators.get("h100-sxm"))() == 0.0
