"""A hand-computable simulator: every step takes a constant time, so timelines can be worked out on paper."""

from __future__ import annotations

from tessera.engine_model.batching import EngineConfig
from tessera.engine_model.instance import InstanceSpec, find_accelerator
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.placement.pipeline import load_profile
from tessera.sim.simulator import Simulator

# An SLO policy for one model on up to 8 H100s, planned every 10 s (tests of the simulated autoscaler).
POLICY = """
model: llama3-8b
targets:
  ttft: {percentile: 90, ms: 1000}
  tpot: {percentile: 90, ms: 100}
inventory:
  h100: {free: 8, cost_per_hour: 2.0}
roles: [mixed]
interval_s: 10
scale_to_zero_idle_s: 60
headroom: 0.1
hysteresis: {scale_down_stable_intervals: 3, scale_down_cooldown_s: 30, max_scale_down_fraction: 1}
"""


class ConstantTimer:
    """Every step takes `seconds`, whatever it holds: makes the timeline computable by hand."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __call__(self, prefill=(), decode=()) -> float:
        return self.seconds if (prefill or decode) else 0.0


def make_sim(n: int = 1, step_s: float = 0.01, budget: int = 8192, blocks: int = 1000, policy: str = "least_loaded"):
    spec = InstanceSpec(find_accelerator("h100"))
    cfg = EngineConfig(num_blocks=blocks, block_size=16, max_num_batched_tokens=budget)
    return Simulator(
        ModelArch.llama3_8b(),
        "m",
        [(spec, cfg, ConstantTimer(step_s)) for _ in range(n)],
        load_profile(policy, seed=0),
        sample_interval_s=0.05,
    )
