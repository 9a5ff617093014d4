"""A noisy tenant cannot starve a quiet one: the quiet tenant's p99 TTFT under a flood stays within 1.5x of alone.

The cluster: etcd, a scheduler, a router that requires API keys, and two
simulated L40S workers (Llama-3-8B timing) with 8 batch slots each, so a flood
saturates them and the router's admission queue holds the excess. The noisy
tenant keeps 48 requests open at all times (three times the slots); the quiet
tenant sends a few requests a second. Without fair queueing the quiet tenant's
requests would wait behind the noisy backlog (seconds); with it each waits
for one slot to free.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.harness import wait_for
from tests.support.models import TINY
from tests.support.sim_cluster import SimCluster

REPO = Path(__file__).resolve().parents[2]
PROMPT = "tell me about the weather in the mountains today " * 30  # about 300 tokens
QUIET_REQUESTS = 60
QUIET_INTERVAL_S = 0.25
NOISY_CONCURRENCY = 48  # three times the cluster's 16 batch slots


@pytest.fixture(scope="module")
def fair(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("fairness")
    c = SimCluster(
        log_dir,
        router_args=("--require-api-key",),
        worker_args=("--accelerator", "l40s", "--engine-arg", "max_num_seqs=8"),
    )
    try:
        c.wait_ready()
        keys = {name: _new_tenant(c, name) for name in ("quiet", "noisy")}
    except BaseException:
        c.close()
        raise
    yield c, keys
    c.close()


def _new_tenant(c: SimCluster, name: str) -> str:
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "tenant", "put", name, "--new-key", "--etcd", c.etcd.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    wait_for(
        lambda: httpx.get(c.base_url + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200,
        15,
        what=f"the router to learn tenant {name}",
    )
    return key


async def _ttft(client: httpx.AsyncClient, key: str, max_tokens: int) -> float:
    """Seconds to the first streamed token of one completion (the stream is read to its end)."""
    body = {"model": TINY, "prompt": PROMPT, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    start = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status_code == 200, (await resp.aread()).decode()
        async for line in resp.aiter_lines():
            if first is None and line.startswith("data: {") and '"text":""' not in line.replace(" ", ""):
                first = time.perf_counter() - start
    assert first is not None
    return first


async def _quiet_p99(c: SimCluster, key: str, noisy_key: str | None) -> tuple[float, int]:
    """The quiet tenant's p99 TTFT, with or without the noisy tenant flooding; and the noisy requests served."""
    served = 0
    stop = asyncio.Event()
    async with httpx.AsyncClient(base_url=c.base_url, timeout=120, limits=httpx.Limits(max_connections=200)) as client:

        async def flood() -> None:
            nonlocal served
            while not stop.is_set():
                await _ttft(client, noisy_key, 32)
                served += 1

        flooders = [asyncio.create_task(flood()) for _ in range(NOISY_CONCURRENCY)] if noisy_key else []
        if flooders:
            await asyncio.sleep(5)  # the queue fills and stays full
        quiet = []
        for _ in range(QUIET_REQUESTS):
            quiet.append(asyncio.create_task(_ttft(client, key, 8)))
            await asyncio.sleep(QUIET_INTERVAL_S)
        ttfts = sorted(await asyncio.gather(*quiet))
        stop.set()
        await asyncio.gather(*flooders)
    return ttfts[int(0.99 * (len(ttfts) - 1))], served


def test_a_quiet_tenants_p99_ttft_holds_while_a_noisy_tenant_floods(fair):
    c, keys = fair
    alone, _ = asyncio.run(_quiet_p99(c, keys["quiet"], None))
    flooded, noisy_served = asyncio.run(_quiet_p99(c, keys["quiet"], keys["noisy"]))
    print(
        f"quiet tenant p99 TTFT: alone {alone * 1000:.0f} ms, under the flood {flooded * 1000:.0f} ms "
        f"({flooded / alone:.2f}x); noisy requests served meanwhile: {noisy_served}"
    )
    assert noisy_served > 2 * NOISY_CONCURRENCY  # the flood really ran: the noisy tenant was served too
    assert flooded <= 1.5 * alone
