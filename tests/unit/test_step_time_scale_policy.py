"""The planner prices an accelerator at the speed this site measured for it (tessera calibrate or
what live workers learnt), written as the inventory row's step_time_scale."""

from __future__ import annotations

import pytest

from tessera.engine_model.perf.step_scale import StepScale
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType
from tessera.planning.load import LoadMix
from tessera.planning.planner import plan
from tessera.planning.slo_policy import SloPolicyError, parse_slo_policy

POLICY = """
model: smollm2-135m
targets:
  ttft: {percentile: 90, ms: 2000}
  tpot: {percentile: 90, ms: 200}
inventory:
  cpu: %s
roles: [mixed]
instances: {min: 0, max: 16}
"""
LOAD = LoadMix(2.0, input_mean=128, input_p90=192, output_mean=64)


def _policy(row: str):
    return parse_slo_policy(POLICY % row)


def test_a_slower_machine_is_priced_slower_and_needs_more_instances():
    modelled = _policy("{free: 16}")
    slow = _policy("{free: 16, step_time_scale: {prefill: 2.0, decode: 2.0}}")
    assert slow.step_time_scales() == {"cpu": StepScale(2.0, 2.0)} and modelled.step_time_scales() == {}
    itype = InstanceType("cpu")
    fast_rate = CapacityModel(engines_for(modelled)).capacity(itype, LOAD, modelled.targets).rate_rps
    slow_rate = CapacityModel(engines_for(slow)).capacity(itype, LOAD, slow.targets).rate_rps
    assert slow_rate < 0.7 * fast_rate
    as_modelled = plan(modelled, LOAD, CapacityModel(engines_for(modelled))).counts[itype]
    as_measured = plan(slow, LOAD, CapacityModel(engines_for(slow))).counts[itype]
    assert as_measured > as_modelled


def test_the_scale_survives_the_canonical_document():
    policy = _policy("{free: 4, step_time_scale: {prefill: 1.29, decode: 1.18}}")
    again = parse_slo_policy(policy.to_yaml())
    assert again == policy and again.step_time_scales()["cpu"] == StepScale(1.29, 1.18)
    assert "step_time_scale" not in _policy("{free: 4}").to_yaml()


@pytest.mark.parametrize(
    "row, named",
    [
        ("{free: 4, step_time_scale: {prefill: 0}}", "inventory.cpu.step_time_scale.prefill"),
        ("{free: 4, step_time_scale: {decode: .nan}}", "inventory.cpu.step_time_scale.decode"),
        ("{free: 4, step_time_scale: {gpu: 2}}", "inventory.cpu.step_time_scale"),
        ("{free: 4, step_time_scale: 2}", "inventory.cpu.step_time_scale"),
    ],
)
def test_a_bad_scale_is_refused_naming_its_key(row, named):
    with pytest.raises(SloPolicyError, match=named.replace(".", r"\.")):
        _policy(row)


def test_no_number_of_a_policy_may_be_nan_or_infinite():
    for value in (".nan", ".inf"):
        with pytest.raises(SloPolicyError, match="headroom"):
            parse_slo_policy(POLICY % "{free: 4}" + f"headroom: {value}\n")
