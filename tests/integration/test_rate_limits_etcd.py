"""The rate limiter's compare-and-swap reservations against a real etcd, under contention."""

from __future__ import annotations

import asyncio
import random

import pytest

from services.router.errors import LimiterUnavailable, RateLimited
from services.router.rate_limits import RateLimiter
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector

NOW = 1_800_000_010.0  # 10 s into a window: a fixed clock, so no window ends under the test


async def test_concurrent_routers_never_admit_more_than_the_limit(local_etcd):
    """Four limiters (four routers) each racing 60 requests of random sizes at one tenant's 20,000 tokens."""
    limiters = [RateLimiter(EtcdConnector(local_etcd.endpoint), clock=lambda: NOW) for _ in range(4)]
    rng = random.Random(3)
    admitted: list[int] = []
    refused: list[RateLimited] = []

    async def one(limiter: RateLimiter, tokens: int) -> None:
        try:
            await limiter.admit("acme", rpm=0, tpm=20_000, tokens=tokens)
            admitted.append(tokens)
        except RateLimited as exc:
            refused.append(exc)

    try:
        await asyncio.gather(*(one(limiters[i % 4], rng.randint(50, 400)) for i in range(240)))
        assert refused, "240 requests of ~225 tokens must overrun 20,000 tokens"
        assert sum(admitted) <= 20_000
        # what the routers reserved and could not use is small next to the limit
        assert sum(admitted) >= 20_000 * 0.9, sum(admitted)
        assert all(exc.status == 429 and exc.retry_after == 50 for exc in refused)

        connector = EtcdConnector(local_etcd.endpoint)
        client = await connector.connect()
        try:
            counter = await client.get(keys.rate_window("acme", "tpm", int(NOW // 60)).encode())
            assert counter is not None and int(counter.value) <= 20_000
            assert counter.lease  # the window's counter goes away by itself
        finally:
            await connector.discard(client)
    finally:
        for limiter in limiters:
            await limiter.close()


async def test_requests_and_tokens_are_both_charged_and_a_refusal_costs_no_request(local_etcd):
    limiter = RateLimiter(EtcdConnector(local_etcd.endpoint), clock=lambda: NOW)
    try:
        await limiter.admit("t", rpm=3, tpm=100, tokens=60)
        with pytest.raises(RateLimited, match="100 tokens per minute"):
            await limiter.admit("t", rpm=3, tpm=100, tokens=60)  # tokens refused: its request is given back
        await limiter.admit("t", rpm=3, tpm=100, tokens=40)
        await limiter.admit("t", rpm=3, tpm=0, tokens=999)
        with pytest.raises(RateLimited, match="3 requests per minute"):
            await limiter.admit("t", rpm=3, tpm=0, tokens=1)
    finally:
        await limiter.close()


async def test_an_unreachable_etcd_refuses_limited_tenants(local_etcd):
    limiter = RateLimiter(EtcdConnector(local_etcd.endpoint), clock=lambda: NOW)
    try:
        await limiter.admit("t", rpm=5, tpm=0, tokens=1)
        local_etcd.kill()
        with pytest.raises(LimiterUnavailable) as down:
            await limiter.admit("t", rpm=5, tpm=0, tokens=1)
        assert down.value.status == 503 and down.value.code == "rate_limiter_unavailable"
    finally:
        await limiter.close()
