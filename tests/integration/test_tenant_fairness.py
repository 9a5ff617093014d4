"""A noisy tenant cannot starve a quiet one: the quiet tenant's p99 TTFT under a flood stays within 1.5x of alone.

The cluster: etcd, a scheduler, a router that requires API keys, and two
simulated L40S workers (Llama-3-8B timing) with 8 batch slots each. The noisy
tenant keeps 48 long generations open (three times the slots), so every slot
it may take is busy and the router's admission queue holds the rest; the
quiet tenant streams a short completion of a 700-token prompt of its own every 0.15 s.
Both are measured in this run, on this cluster, in 8 alternating rounds (the
quiet tenant alone, then under the flood, which then leaves), so that both
see the same machine: this one is small and shared, and its load comes and
goes.

Fair queueing puts the quiet tenant's request at the front of the queue, but
that alone still leaves it waiting for one of the noisy tenant's requests to
end (with the reserve turned off: p50 1.3 s, p99 3.0 s against 71 ms and 229 ms alone).
The router marks the noisy tenant as over its fair share, so the scheduler
keeps each worker's last slot for the quiet one
(services/router/fair_share.py, the saturation filter's reserve_slots), and a
request unlike every waiter is tried at once. What remains is the engine's:
the quiet prefill waits for the decode step in progress (any continuous-batching
engine's iteration) and shares its batch.
The noisy prompts are short, so the figure is about slots, not about prefill
interference inside a batch (chunked prefill's matter).
"""

from __future__ import annotations

import asyncio
import itertools
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
# About 700 tokens, each request's its own (a number first): a prompt the prefix cache already
# holds prefills in one short step, and then the decode step in progress that a new request waits
# for under load (up to 23 ms on this engine, any continuous-batching engine's iteration) alone
# makes 1.5x. A real prompt is prefilled: about 70 ms here.
PROMPT = "tell me about the weather in the mountains today " * 30
ROUNDS = 8
QUIET_PER_BLOCK = 15  # 120 alone and 120 flooded: each p99 is the third slowest
QUIET_INTERVAL_S = 0.15
QUIET_TOKENS = 2
NOISY_CONCURRENCY = 48  # three times the cluster's 16 batch slots
NOISY_PROMPT = "write a long story about a lighthouse keeper"
NOISY_TOKENS = 96  # about 2.5 s each: the slots stay held, and some finish in each flood
SLOTS = 16
_numbers = itertools.count()


@pytest.fixture(scope="module")
def fair(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("fairness")
    with SimCluster.running(
        log_dir,
        router_args=("--require-api-key",),
        worker_args=("--accelerator", "l40s", "--engine-arg", "max_num_seqs=8"),
    ) as c:
        yield c, {name: _new_tenant(c, name) for name in ("quiet", "noisy")}


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


async def _noisy(client: httpx.AsyncClient, key: str) -> None:
    """One of the noisy tenant's requests: a long generation, not streamed (a batch job's)."""
    body = {"model": TINY, "prompt": NOISY_PROMPT, "max_tokens": NOISY_TOKENS, "ignore_eos": True}
    resp = await client.post("/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    assert resp.status_code == 200, resp.text


async def _ttft(client: httpx.AsyncClient, key: str, max_tokens: int) -> float:
    """Seconds to the first streamed token of one completion (the stream is read to its end)."""
    prompt = f"{next(_numbers)} {PROMPT}"
    body = {"model": TINY, "prompt": prompt, "max_tokens": max_tokens, "stream": True, "ignore_eos": True}
    start = time.perf_counter()
    first = None
    async with client.stream("POST", "/v1/completions", json=body, headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status_code == 200, (await resp.aread()).decode()
        async for line in resp.aiter_lines():
            if first is None and line.startswith("data: {") and '"text":""' not in line.replace(" ", ""):
                first = time.perf_counter() - start
    assert first is not None
    return first


async def _queue_depth(client: httpx.AsyncClient) -> float:
    text = (await client.get("/metrics")).text
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("tessera_router_queue_depth{")
    )


async def _quiet_block(client: httpx.AsyncClient, key: str, depths: list[float] | None = None) -> list[float]:
    """QUIET_PER_BLOCK requests of the quiet tenant, one every QUIET_INTERVAL_S: their TTFTs (and
    the admission queue's depth at every third, into `depths`)."""
    quiet = []
    for i in range(QUIET_PER_BLOCK):
        quiet.append(asyncio.create_task(_ttft(client, key, QUIET_TOKENS)))
        await asyncio.sleep(QUIET_INTERVAL_S)
        if depths is not None and i % 3 == 0:
            depths.append(await _queue_depth(client))
    return await asyncio.gather(*quiet)


async def _rounds(c: SimCluster, quiet_key: str, noisy_key: str) -> tuple[list[float], list[float], int, list[float]]:
    """ROUNDS of: the quiet tenant alone, then the same under the noisy tenant's flood (which then
    leaves). Alternating, both see the same machine: this one is small and shared. Returns the quiet
    TTFTs alone and flooded, the noisy requests served, and the admission queue's depths sampled
    during the floods."""
    alone: list[float] = []
    flooded: list[float] = []
    depths: list[float] = []
    served = 0
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    async with httpx.AsyncClient(base_url=c.base_url, timeout=120, limits=limits) as client:

        async def flood() -> None:
            nonlocal served
            while True:
                await _noisy(client, noisy_key)
                served += 1

        await asyncio.gather(*(_ttft(client, quiet_key, QUIET_TOKENS) for _ in range(3)))  # warm: connections
        for _ in range(ROUNDS):
            alone += await _quiet_block(client, quiet_key)
            noisy = [asyncio.create_task(flood()) for _ in range(NOISY_CONCURRENCY)]
            # every slot the noisy tenant may take is busy and the rest of it waits in the queue
            await _until(lambda: _queue_depth(client), NOISY_CONCURRENCY - SLOTS, 10)
            flooded += await _quiet_block(client, quiet_key, depths)
            for task in noisy:  # the noisy clients leave: their waiters go and their streams are aborted
                task.cancel()
            await asyncio.gather(*noisy, return_exceptions=True)
            await asyncio.sleep(0.5)
    return sorted(alone), sorted(flooded), served, depths


async def _until(measure, at_least: float, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while await measure() < at_least:
        assert time.monotonic() < deadline, "the noisy tenant's flood did not fill the admission queue"
        await asyncio.sleep(0.1)


def _p(ttfts: list[float], q: float) -> float:
    return ttfts[int(q * (len(ttfts) - 1))]


def test_a_quiet_tenants_p99_ttft_holds_while_a_noisy_tenant_floods(fair):
    c, keys = fair
    alone, flooded, noisy_served, depths = asyncio.run(_rounds(c, keys["quiet"], keys["noisy"]))
    print(
        f"quiet tenant TTFT over {len(alone)} requests each: alone p50 {_p(alone, 0.5) * 1000:.0f} ms, p99 "
        f"{_p(alone, 0.99) * 1000:.0f} ms; under the flood p50 {_p(flooded, 0.5) * 1000:.0f} ms, p99 "
        f"{_p(flooded, 0.99) * 1000:.0f} ms ({_p(flooded, 0.99) / _p(alone, 0.99):.2f}x); noisy requests served "
        f"meanwhile: {noisy_served}, admission queue during the floods {min(depths):.0f} to {max(depths):.0f}; "
        "slowest alone "
        f"{[round(t * 1000) for t in alone[-4:]]} ms, under the flood {[round(t * 1000) for t in flooded[-4:]]} ms"
    )
    assert len(alone) == len(flooded) >= 60
    # the flood really ran: the noisy tenant was served too, and kept requests waiting throughout
    assert noisy_served >= SLOTS
    assert min(depths) >= SLOTS
    assert _p(flooded, 0.99) <= 1.5 * _p(alone, 0.99)
