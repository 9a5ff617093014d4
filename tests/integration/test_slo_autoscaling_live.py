"""SLO-driven autoscaling, live: `tessera up --slo-policy` with simulated workers, a load step up and back down.

The autoscaler reads the routers' metrics, forecasts, plans the cheapest fleet
that meets the policy's TTFT and TPOT targets, and the local actuator starts
and drains sim workers. Sim workers (SmolLM2's timings on one CPU core) make a
fleet of many instances affordable on this machine.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import httpx

from tests.support.harness import cluster_status, tessera_up, up_etcd, wait_for

MODEL = "smollm2-sim"
POLICY = f"""
model: smollm2-135m            # the capacity model's architecture
targets:
  ttft: {{percentile: 90, ms: 2000}}
  tpot: {{percentile: 90, ms: 100}}
inventory: {{cpu: {{free: 24}}}}
roles: [mixed]
instances: {{min: 1, max: 24}}
headroom: 0.2
interval_s: 2
scale_to_zero_idle_s: 3600
hysteresis: {{scale_down_stable_intervals: 3, scale_down_cooldown_s: 6, max_scale_down_fraction: 1}}
forecast: {{alpha: 0.7, beta: 0.2, burst_window: 2, peak_window_s: 1}}   # arrivals counted each second
deployment:
  served_model: {MODEL}
  worker_model: tiny           # the tokenizer the sim workers serve with
  engine: sim
  engine_args: {{sim_arch: smollm2-135m}}
"""


def workers(etcd: str, model: str = MODEL) -> int:
    return sum(1 for w in cluster_status(etcd)["workers"] if w["model"] == model and w["healthy"])


async def offer(
    url: str, rate: float, seconds: float, results: list[int], model: str = MODEL, max_tokens: int = 48
) -> None:
    """Arrivals at `rate` req/s for `seconds`; every status code goes into `results`."""
    async with httpx.AsyncClient(timeout=600) as client:

        async def one() -> None:
            try:
                r = await client.post(
                    url + "/v1/completions",
                    json={
                        "model": model,
                        "prompt": "Count the apples in the basket, one by one.",
                        "max_tokens": max_tokens,
                        "ignore_eos": True,
                    },
                )
                results.append(r.status_code)
            except httpx.HTTPError:
                results.append(-1)

        tasks = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            tasks.append(asyncio.create_task(one()))
            await asyncio.sleep(1.0 / rate)
        await asyncio.gather(*tasks)


def test_the_fleet_follows_a_load_step_up_and_down_without_failing_a_request(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with tessera_up(tmp_path, "--slo-policy", str(policy)) as (_, port, lines):
        url = f"http://127.0.0.1:{port}"
        etcd = up_etcd(lines)
        wait_for(lambda: workers(etcd) >= 1, 60, interval=0.5, what="the policy's one warm instance")

        results: list[int] = []
        peak = 0

        async def step_up() -> None:
            nonlocal peak
            load = asyncio.create_task(offer(url, 8.0, 40, results))
            while not load.done():
                peak = max(peak, await asyncio.to_thread(workers, etcd))
                await asyncio.sleep(2)
            await load

        asyncio.run(step_up())
        assert peak >= 3, f"the fleet grew only to {peak} under a load several instances need"

        asyncio.run(offer(url, 0.3, 30, results))  # back down: the fleet drains what it no longer needs
        wait_for(lambda: workers(etcd) <= max(1, peak // 2), 60, interval=1, what="the fleet to shrink")
        assert results and all(code == 200 for code in results), (
            f"{sum(code != 200 for code in results)} of {len(results)} requests failed: {set(results)}"
        )

        status = subprocess.run(
            [sys.executable, "-m", "tessera.cli", "status", "--etcd", etcd],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout
        assert "binding" in status and "forecast" in status, status
