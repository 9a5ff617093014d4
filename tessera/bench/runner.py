"""Send requests at a Poisson (or gamma, with burstiness) rate, or as fast as a concurrency cap allows."""

from __future__ import annotations

import asyncio
import math
import random
import sys
import time

from tessera.bench.clients import Client
from tessera.bench.datasets import BenchRequest
from tessera.bench.results import Outcome


async def run_load(
    client: Client,
    requests: list[BenchRequest],
    request_rate: float = math.inf,
    burstiness: float = 1.0,
    max_concurrency: int | None = None,
    seed: int = 0,
    label: str = "bench",
    progress: bool = True,
) -> tuple[list[Outcome], float]:
    """Return the outcomes (in request order) and the wall-clock duration."""
    rng = random.Random(seed)
    limit = asyncio.Semaphore(max_concurrency) if max_concurrency else None
    outcomes: list[Outcome | None] = [None] * len(requests)
    done = 0

    async def one(i: int, req: BenchRequest) -> None:
        nonlocal done
        if limit:
            async with limit:
                outcomes[i] = await client.send(req, f"{label}-{i}")
        else:
            outcomes[i] = await client.send(req, f"{label}-{i}")
        done += 1

    async def report() -> None:
        while True:
            await asyncio.sleep(2.0)
            failed = sum(1 for o in outcomes if o is not None and not o.success)
            print(
                f"[{label}] {done}/{len(requests)} done, {failed} failed, {time.perf_counter() - start:.0f}s",
                file=sys.stderr,
                flush=True,
            )

    start = time.perf_counter()
    reporter = asyncio.create_task(report()) if progress else None
    tasks = []
    for i, req in enumerate(requests):
        tasks.append(asyncio.create_task(one(i, req)))
        if math.isfinite(request_rate) and i < len(requests) - 1:
            # Gamma-distributed gaps with mean 1/rate; shape = burstiness (1: Poisson).
            theta = 1.0 / (request_rate * burstiness)
            await asyncio.sleep(rng.gammavariate(burstiness, theta))
    await asyncio.gather(*tasks)
    duration = time.perf_counter() - start
    if reporter:
        reporter.cancel()
    return [o for o in outcomes if o is not None], duration
