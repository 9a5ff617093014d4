"""Requests and tokens per minute per tenant, held across every router that shares one etcd.

Windows are fixed minutes of wall-clock time (window ``w`` is ``[w * 60, (w + 1) * 60)`` in Unix
seconds), so every router agrees on them without talking (their clocks must be NTP-synced; a
skew of a second moves a window's edge by a second, nothing more).

For each tenant, limit kind ("rpm" or "tpm") and window, one etcd key counts the units that
routers have *reserved* so far. A router that needs units reserves a chunk with a
compare-and-swap transaction (the key's mod revision must be the one it read) and then admits
requests from that chunk locally, without a round trip, until it is spent. The key never goes
above the limit, so the routers together never admit more than the limit in a window. The
price is that units one router reserved and did not use are lost to the others until the
window ends; chunks shrink as the window fills (``reservation_size``) so little is stranded,
and with small limits every request is its own exact round trip.

Tokens are charged at admission as prompt tokens + max_tokens (the most the request can cost):
a tenant never exceeds its TPM limit, and unused completion tokens are not refunded.

If etcd cannot be reached, a tenant with limits is refused with 503 (fail closed); tenants
without limits never touch etcd here.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import aetcd

from services.router.errors import LimiterUnavailable, RateLimited
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector

log = logging.getLogger("tessera.router")

WINDOW_S = 60.0
# A reservation takes this share of what is left in the window (at least what is needed now).
RESERVE_FRACTION = 1 / 16
MAX_CAS_ATTEMPTS = 40  # lost compare-and-swaps (other routers reserving) before giving up with 503


def window_of(now: float, window_s: float = WINDOW_S) -> int:
    """The index of the window holding Unix time `now`."""
    return int(now // window_s)


def seconds_to_window_end(now: float, window_s: float = WINDOW_S) -> float:
    return (window_of(now, window_s) + 1) * window_s - now


def retry_after_s(now: float, window_s: float = WINDOW_S) -> int:
    """Retry-After for a refused request: whole seconds until the window ends, at least 1."""
    return max(1, math.ceil(seconds_to_window_end(now, window_s)))


def reservation_size(limit: int, reserved: int, need: int, fraction: float = RESERVE_FRACTION) -> int:
    """How many units to reserve from a window whose `limit` has `reserved` units taken, when `need`
    more are wanted now: `need` plus headroom (a `fraction` of what remains), never past the limit.
    0 when `need` does not fit: the request is refused.
    """
    if need <= 0:
        return 0
    remaining = limit - reserved
    if need > remaining:
        return 0
    return min(remaining, max(need, int(remaining * fraction)))


@dataclass
class _Pool:
    """Units this router holds for one tenant, kind and window."""

    window: int
    available: int = 0


class RateLimiter:
    """Admits a tenant's request if its requests and tokens fit the current window, else 429."""

    def __init__(
        self,
        connector: EtcdConnector,
        window_s: float = WINDOW_S,
        fraction: float = RESERVE_FRACTION,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.connector = connector
        self.window_s = window_s
        self.fraction = fraction
        self.clock = clock
        self._pools: dict[tuple[str, str], _Pool] = {}
        self._locks: dict[tuple[str, str], asyncio.Lock] = {}
        self._client: aetcd.Client | None = None
        self._lease: tuple[int, int] | None = None  # (window, lease id) the window keys are written under

    async def admit(self, tenant: str, rpm: int, tpm: int, tokens: int) -> None:
        """Charge one request and `tokens` tokens to `tenant` (0 limits: unlimited); RateLimited if
        either does not fit, LimiterUnavailable if etcd cannot be reached."""
        now = self.clock()
        window = window_of(now, self.window_s)
        if rpm > 0:
            await self._take(tenant, "rpm", rpm, 1, window, now)
        if tpm > 0:
            try:
                await self._take(tenant, "tpm", tpm, tokens, window, now)
            except Exception:
                if rpm > 0:
                    self._give_back(tenant, "rpm", 1, window)  # the request was not admitted after all
                raise

    def _give_back(self, tenant: str, kind: str, units: int, window: int) -> None:
        pool = self._pools.get((tenant, kind))
        if pool is not None and pool.window == window:
            pool.available += units

    async def _take(self, tenant: str, kind: str, limit: int, need: int, window: int, now: float) -> None:
        what = "requests" if kind == "rpm" else "tokens"
        if need > limit:
            raise RateLimited(
                f"This request needs {need} {what}, more than tenant {tenant}'s limit of {limit} {what} per "
                "minute; lower max_tokens or the prompt.",
                retry_after=retry_after_s(now, self.window_s),
            )
        slot = (tenant, kind)
        lock = self._locks.setdefault(slot, asyncio.Lock())
        async with lock:
            pool = self._pools.get(slot)
            if pool is None or pool.window != window:
                pool = self._pools[slot] = _Pool(window)
            if pool.available < need:
                got = await self._reserve(tenant, kind, limit, need - pool.available, window)
                if got == 0:
                    raise RateLimited(
                        f"Rate limit reached for tenant {tenant}: {limit} {what} per minute. "
                        f"Try again in {retry_after_s(self.clock(), self.window_s)} s.",
                        retry_after=retry_after_s(self.clock(), self.window_s),
                    )
                pool.available += got
            pool.available -= need

    async def _reserve(self, tenant: str, kind: str, limit: int, short: int, window: int) -> int:
        """Reserve at least `short` units of the window in etcd (compare-and-swap); 0 if they do not fit."""
        key = keys.rate_window(tenant, kind, window).encode()
        try:
            client = self._client = self._client or await self.connector.connect()
            tx = client.transactions
            current = await client.get(key)
            for attempt in range(MAX_CAS_ATTEMPTS):
                if attempt:
                    await asyncio.sleep(random.uniform(0, 0.002 * min(attempt, 10)))  # spread the contenders out
                reserved = int(current.value) if current else 0
                revision = current.mod_revision if current else 0
                grant = reservation_size(limit, reserved, short, self.fraction)
                if grant == 0:
                    return 0
                lease = await self._window_lease(client, window)
                won, responses = await client.transaction(
                    compare=[tx.mod(key) == revision],
                    success=[tx.put(key, str(reserved + grant).encode(), lease)],
                    failure=[tx.get(key)],
                )
                if won:
                    return grant
                current = responses[0][0][1] if responses and responses[0] else None
            raise LimiterUnavailable("rate limiter: too much contention on the shared counters; retry")
        except LimiterUnavailable:
            raise
        except Exception as exc:  # noqa: BLE001 - etcd unreachable or failing: refuse (fail closed)
            log.warning("rate limiter: etcd failed (%s: %s); refusing limited tenants", type(exc).__name__, exc)
            await self.connector.discard(self._client)
            self._client, self._lease = None, None
            raise LimiterUnavailable(
                "The rate limiter cannot reach its store (etcd); requests of tenants with limits are refused "
                "until it is back."
            ) from None

    async def _window_lease(self, client: aetcd.Client, window: int) -> int:
        """A lease that removes a window's counters a while after the window ended."""
        if self._lease is None or self._lease[0] != window:
            ttl = int(self.window_s * 2) + 60
            lease = await client.lease(ttl)
            self._lease = (window, lease.id)
        return self._lease[1]

    async def close(self) -> None:
        await self.connector.discard(self._client)
        self._client = None
