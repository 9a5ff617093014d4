"""One model's live autoscaling step: the interval it plans for, as the routers' metrics gave it."""

from __future__ import annotations

from services.autoscaler.load_observer import ModelInterval
from services.autoscaler.model_autoscaler import ModelAutoscaler
from tessera.planning.slo_policy import parse_slo_policy

POLICY = """
model: llama3-8b
targets:
  ttft: {percentile: 99, ms: 500}
  tpot: {percentile: 99, ms: 50}
inventory: {h100: {free: 16}}
roles: [mixed]
interval_s: 30
forecast: {peak_window_s: 10}
"""


def quiet_then(seen: ModelInterval, peak_rps: float | None) -> int:
    """Instances planned after a quiet interval and then `seen`."""
    me = ModelAutoscaler.for_policy(parse_slo_policy(POLICY))
    me.step(ModelInterval(30.0, 30, 0, 1500, 30, {}, {}, 3000, 6000), now_s=0.0)
    return sum(me.step(seen, now_s=30.0, peak_rps=peak_rps).values())


def test_a_burst_inside_the_interval_is_planned_for_at_its_peak_rate():
    """600 requests in 30 s is 20 req/s on average; if they came within 10 s, the fleet must serve
    60 req/s to keep a sub-second TTFT, and the live loop sizes for that, as the simulator's does."""
    seen = ModelInterval(30.0, 600, 0, 1500, 30, {}, {}, 3000, 6000)
    mean = quiet_then(seen, None)
    burst = quiet_then(seen, 60.0)
    assert burst >= 2 * mean >= 2
    assert quiet_then(seen, 10.0) == mean  # a peak below the mean changes nothing


def test_the_measured_prompt_tail_sets_the_size():
    """Same mean and p90 prompt, a longer p99 (from the routers' prompt-length histogram): more
    instances, since the longest prompts' own time is most of a p99 TTFT. (A p99 whose prompt alone
    takes longer than the target on every type gets the best-effort fleet, whatever its length.)"""
    short = quiet_then(ModelInterval(30.0, 1200, 0, 1500, 30, {}, {}, 3000, 4000), None)
    long = quiet_then(ModelInterval(30.0, 1200, 0, 1500, 30, {}, {}, 3000, 8000), None)
    assert long > short


def test_status_says_which_prefill_chunk_the_planned_types_run_with():
    me = ModelAutoscaler.for_policy(parse_slo_policy(POLICY))
    me.step(ModelInterval(30.0, 300, 0, 1500, 30, {}, {}, 3000, 6000), now_s=0.0)
    chunk = me.capacity.engines[("h100-sxm", 1)].max_num_batched_tokens
    assert chunk < 8192
    assert f"prefill chunk (max_num_batched_tokens, for TPOT 50 ms): h100-sxm {chunk}" in "\n".join(me.status_lines())
