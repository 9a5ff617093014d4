"""Keep keys alive in etcd under a lease for as long as the process lives.

Workers and services register this way, and services record their
acknowledgements of documents this way (so a dead service's vanish with it).
When etcd restarts (with or without its data) or is briefly unreachable, the
keep-alive fails; we then grant a new lease and put the keys again, so
membership catches up on its own within about one TTL of etcd coming back.
"""

from __future__ import annotations

import asyncio
import logging

import aetcd

from tessera.runtime.etcd.client import Backoff, EtcdConnector, OutageLog
from tessera.runtime.tasks import cancel_and_wait

log = logging.getLogger("tessera.runtime.etcd")

DEFAULT_TTL_S = 5


class LeasedKeys:
    """Any number of ``key = value`` under one lease of ``ttl`` seconds, refreshed every ttl/3."""

    def __init__(self, connector: EtcdConnector, what: str, ttl: int = DEFAULT_TTL_S) -> None:
        self.connector = connector
        self.what = what  # for log lines
        self.ttl = ttl
        self.values: dict[bytes, bytes] = {}
        self._dirty: set[bytes] = set()
        self._changed = asyncio.Event()
        self._stopping = False
        self._client: aetcd.Client | None = None
        self._lease: aetcd.Lease | None = None
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"lease:{self.what}")

    def set(self, key: str, value: bytes) -> None:
        """Set ``key``; written at once if etcd is reachable, else on reconnect."""
        self.values[key.encode()] = value
        self._dirty.add(key.encode())
        self._changed.set()

    async def _run(self) -> None:
        outage = OutageLog(f"registration {self.what}")
        backoff = Backoff()
        while not self._stopping:
            try:
                self._client = await self.connector.connect()
                self._lease = await self._client.lease(self.ttl)
                self._dirty.clear()
                for key, value in list(self.values.items()):
                    await self._client.put(key, value, lease=self._lease)
                outage.ok()
                backoff.reset()
                await self._keep_alive()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - any etcd failure means: re-register
                outage.failed(exc)
                await self.connector.discard(self._client)
                self._client, self._lease = None, None
                await backoff.sleep()

    async def _keep_alive(self) -> None:
        assert self._client is not None and self._lease is not None
        while not self._stopping:
            try:
                await asyncio.wait_for(self._changed.wait(), self.ttl / 3)
            except TimeoutError:
                pass
            if self._changed.is_set():
                self._changed.clear()
                dirty, self._dirty = self._dirty, set()
                for key in dirty:
                    await self._client.put(key, self.values[key], lease=self._lease)
            reply = await self._lease.refresh()
            # etcd answers TTL <= 0 when the lease is gone (expired during an
            # outage, or etcd lost its data): start over with a new lease.
            if reply is None or reply.TTL <= 0:
                raise LookupError("lease expired")

    async def close(self) -> None:
        """Stop refreshing and remove the keys at once (revoking the lease)."""
        self._stopping = True
        await cancel_and_wait(self._task)
        if self._client is not None and self._lease is not None:
            try:
                await asyncio.wait_for(self._lease.revoke(), 2.0)
            except Exception:  # noqa: BLE001 - the keys expire with their lease anyway
                pass
        await self.connector.discard(self._client)


class LeasedKey(LeasedKeys):
    """One ``key = value`` under its own lease: a registration."""

    def __init__(self, connector: EtcdConnector, key: str, value: bytes, ttl: int = DEFAULT_TTL_S) -> None:
        super().__init__(connector, key, ttl)
        self.key = key.encode()
        self.values[self.key] = value

    @property
    def value(self) -> bytes:
        return self.values[self.key]

    def update(self, value: bytes) -> None:
        """Change the value; written at once if etcd is reachable, else on reconnect."""
        self.set(self.key.decode(), value)
