"""SLO-driven autoscaling with real vLLM CPU workers: `tessera up --slo-policy`, a load step up and back down.

SmolLM2 in float32 on one core each, planned by the calibrated CPU row of the
performance model; the machine's two cores are the inventory. The fleet must
go from one instance to two under load and back to one, with every request
answered.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.test_slo_autoscaling_live import offer, workers
from tests.support.harness import tessera_up, wait_for

MODEL = "SmolLM2-135M-Instruct"
POLICY = f"""
model: smollm2-135m              # the capacity model's architecture (float32 on CPU)
targets:
  ttft: {{percentile: 90, ms: 3000}}
  tpot: {{percentile: 90, ms: 80}}   # tight enough that 3 req/s needs both cores
inventory: {{cpu: {{free: 2}}}}   # this machine's two cores, one per worker
roles: [mixed]
instances: {{min: 1, max: 2}}
headroom: 0.2
interval_s: 3
scale_to_zero_idle_s: 3600
hysteresis: {{scale_down_stable_intervals: 5, scale_down_cooldown_s: 20, max_scale_down_fraction: 1}}
forecast: {{alpha: 0.7, beta: 0.2, burst_window: 2}}
deployment:
  served_model: {MODEL}
  worker_model: smollm2
  engine: vllm
  engine_args: {{max_model_len: 1024}}
"""


@pytest.mark.slow  # two real engine starts within a load step: in the full suite, next to its five engines, too slow
def test_real_workers_are_added_under_load_and_drained_after_it(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with tessera_up(tmp_path, "--engine", "vllm", "--slo-policy", str(policy), ready_timeout=300) as (_, port, lines):
        url = f"http://127.0.0.1:{port}"
        etcd = next(line.split("--etcd")[1].split()[0] for line in lines if "tessera status --etcd" in line)
        wait_for(lambda: workers(etcd, MODEL) >= 1, 300, interval=1, what="the policy's warm instance")
        results: list[int] = []

        async def step_up() -> int:
            load = asyncio.create_task(offer(url, 3.0, 60, results, MODEL, max_tokens=24))
            peak = 0
            while not load.done():
                peak = max(peak, await asyncio.to_thread(workers, etcd, MODEL))
                await asyncio.sleep(2)
            await load
            return peak

        peak = asyncio.run(step_up())
        if peak < 2:  # the second engine may still be starting when the load ends: give it its start-up
            peak = wait_for(lambda: workers(etcd, MODEL) >= 2 and 2, 240, interval=2, what="a second instance")
        asyncio.run(offer(url, 0.2, 20, results, MODEL, max_tokens=24))
        wait_for(lambda: workers(etcd, MODEL) == 1, 180, interval=2, what="the fleet to drain back to one instance")
        assert results and all(code == 200 for code in results), (
            f"{sum(code != 200 for code in results)} of {len(results)} requests failed: {set(results)}"
        )
