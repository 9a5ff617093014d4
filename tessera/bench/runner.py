"""Send requests at a Poisson (or gamma, with burstiness) rate, or as fast as a concurrency cap allows."""

from __future__ import annotations

import asyncio
import math
import random
import time

from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed (types-tqdm)

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

    # A progress bar on stderr as vLLM's (tqdm); off for warm-ups and with --disable-tqdm.
    bar = tqdm(total=len(requests), desc=label, unit="req", disable=not progress, dynamic_ncols=True)
    failed = 0

    async def one(i: int, req: BenchRequest) -> None:
        nonlocal failed
        queued = time.perf_counter()
        if limit:
            async with limit:
                waited = time.perf_counter() - queued
                outcome = await client.send(req, f"{label}-{i}")
        else:
            waited = 0.0
            outcome = await client.send(req, f"{label}-{i}")
        outcome.queue_time = waited
        outcomes[i] = outcome
        failed += not outcome.success
        bar.update(1)
        if failed:
            bar.set_postfix(failed=failed, refresh=False)

    start = time.perf_counter()
    tasks = []
    for i, req in enumerate(requests):
        tasks.append(asyncio.create_task(one(i, req)))
        if math.isfinite(request_rate) and i < len(requests) - 1:
            # Gamma-distributed gaps with mean 1/rate; shape = burstiness (1: Poisson).
            theta = 1.0 / (request_rate * burstiness)
            await asyncio.sleep(rng.gammavariate(burstiness, theta))
    try:
        await asyncio.gather(*tasks)
    finally:
        bar.close()
    duration = time.perf_counter() - start
    return [o for o in outcomes if o is not None], duration
