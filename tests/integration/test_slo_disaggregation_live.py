"""Disaggregation chosen by the autoscaler, live: `tessera up --slo-policy` with sim workers whose
inventory allows mixed, prefill and decode instances, under a shift from short to long prompts.

The sim workers are SmolLM2-135M on one CPU core each (the `cpu` row of the performance model, as
tests/integration/test_slo_autoscaling_live.py). Short prompts are served by one mixed instance. Long
prompts (past the default profile's 512-token threshold) at the same rate change the cheapest fleet
that meets TPOT p90 <= 100 ms: a mixed instance prefilling 600+ tokens stalls every stream decoding
beside it, so the planner splits the work into prefill instances and a decode instance. The router
then prefills long prompts on the prefill workers (the default `tessera` profile pairs them where the
pair beats local prefill), which its metrics count, and no request fails. Nothing here forces a role:
the policy offers all three and the planner chooses.
"""

from __future__ import annotations

import asyncio
import time
import urllib.request

import openai

from tests.support.harness import cluster_status, tessera_up, up_etcd, wait_for

MODEL = "smollm2-sim"
POLICY = f"""
model: smollm2-135m            # the capacity model's architecture
targets:
  ttft: {{percentile: 90, ms: 6000}}
  tpot: {{percentile: 90, ms: 100}}
inventory: {{cpu: {{free: 12}}}}
roles: [mixed, prefill, decode]
instances: {{min: 1, max: 12}}
headroom: 0.2
interval_s: 2
scale_to_zero_idle_s: 3600
hysteresis: {{scale_down_stable_intervals: 3, scale_down_cooldown_s: 6, max_scale_down_fraction: 1}}
forecast: {{alpha: 0.7, beta: 0.2, burst_window: 2, length_alpha: 0.7, peak_window_s: 1}}
deployment:
  served_model: {MODEL}
  worker_model: tiny           # the tokenizer the sim workers serve with
  engine: sim
  engine_args: {{sim_arch: smollm2-135m}}
"""
TRANSFERRED = "tessera_router_remote_prefills_by_worker_total"


def roles(etcd: str) -> dict[str, int]:
    """Healthy workers of the model by role, as registered."""
    out: dict[str, int] = {}
    for w in cluster_status(etcd)["workers"]:
        if w["model"] == MODEL and w["healthy"]:
            out[w["role"]] = out.get(w["role"], 0) + 1
    return out


def remote_prefills(url: str) -> float:
    """Prompts the router prefilled on a prefill worker and whose KV reached the decode worker."""
    text = urllib.request.urlopen(url + "/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(TRANSFERRED + "{") and 'outcome="transferred"' in line
    )


def short_prompt(i: int) -> str:
    return f"Request {i}: count the apples in the basket, one by one."


def long_prompt(i: int) -> str:
    """Several hundred tokens no other prompt shares: past the 512-token threshold, cached nowhere."""
    return f"Request {i}. " + " ".join(f"item{1000 + i}x{j} is {j * 7 % 13}." for j in range(42))


async def offer(client: openai.AsyncOpenAI, prompt, rate: float, seconds: float, results: list) -> None:
    """Arrivals at `rate` req/s for `seconds`; each outcome (prompt tokens, or the error) into `results`."""

    async def one(i: int) -> None:
        try:
            r = await client.completions.create(
                model=MODEL, prompt=prompt(i), max_tokens=32, extra_body={"ignore_eos": True}
            )
            results.append(r.usage.prompt_tokens if r.usage.completion_tokens == 32 else f"short answer {r.usage}")
        except openai.OpenAIError as exc:
            results.append(repr(exc))

    tasks, i = [], 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        i += 1
        tasks.append(asyncio.create_task(one(i)))
        await asyncio.sleep(1.0 / rate)
    await asyncio.gather(*tasks)


def test_long_prompts_make_the_autoscaler_split_prefill_from_decode(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    with tessera_up(tmp_path, "--slo-policy", str(policy)) as (_, port, lines):
        url = f"http://127.0.0.1:{port}"
        etcd = up_etcd(lines)
        wait_for(lambda: roles(etcd).get("mixed", 0) >= 1, 60, interval=0.5, what="the policy's warm instance")
        client = openai.AsyncOpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=300)
        short: list = []
        long: list = []
        seen: list[dict[str, int]] = []

        async def run() -> None:
            async def watch(load: asyncio.Task) -> None:
                while not load.done():
                    seen.append(await asyncio.to_thread(roles, etcd))
                    timeline.append((round(time.monotonic() - t0, 1), seen[-1], remote_prefills(url)))
                    await asyncio.sleep(2)
                await load

            await watch(asyncio.create_task(offer(client, short_prompt, 1.0, 20, short)))
            before.update(remote=remote_prefills(url), roles=dict(seen[-1]))
            await watch(asyncio.create_task(offer(client, long_prompt, 1.0, 45, long)))

        before: dict = {}
        timeline: list = []
        t0 = time.monotonic()
        try:
            asyncio.run(run())
        finally:
            (tmp_path / "up.log").write_text("".join(lines))
            (tmp_path / "timeline.txt").write_text("\n".join(map(str, timeline)))

        failed = [r for r in short + long if not isinstance(r, int)]
        assert not failed, f"{len(failed)} of {len(short) + len(long)} requests failed: {failed[:5]}"
        assert min(long) > 512 and max(short) < 64, (min(long), max(short))
        # Short prompts: mixed instances only, and nothing prefilled remotely.
        assert before["roles"].get("prefill", 0) == 0 and before["remote"] == 0, before
        # Long prompts: the autoscaler started prefill instances beside a decode instance, and its plan
        # now splits the model into a P/D pool where one mixed instance served it before.
        assert max(r.get("prefill", 0) for r in seen) >= 1 and max(r.get("decode", 0) for r in seen) >= 1, timeline
        plan = {g["role"]: g.get("replicas", 0) for g in cluster_status(etcd)["plan"]["groups"] if g["model"] == "tiny"}
        assert plan.get("ROLE_PREFILL", 0) >= 1 and plan.get("ROLE_DECODE", 0) >= 1, plan
        assert plan.get("ROLE_MIXED", 0) == 0, plan
        # The router prefilled most long prompts on the prefill workers (the first ones arrived while
        # the pool was starting), and the decode worker received their KV.
        moved = remote_prefills(url)
        assert moved >= len(long) // 2, f"{moved} of {len(long)} long prompts were prefilled remotely: {timeline}"
