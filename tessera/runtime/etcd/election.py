"""Leader election on an etcd lease, so two autoscalers never both act.

A candidate creates the election key only if it does not exist (a
transaction on create_revision == 0), attached to its own lease. The holder
leads while it keeps the lease alive; when it dies or loses etcd for longer
than the TTL, the key expires and another candidate takes it. A leader that
cannot refresh its lease steps down at once, before the TTL runs out, so
there is never a moment with two leaders acting.
"""

from __future__ import annotations

import asyncio
import logging
import time

import aetcd

from tessera.runtime.etcd.client import Backoff, EtcdConnector, OutageLog
from tessera.runtime.tasks import cancel_and_wait

log = logging.getLogger("tessera.runtime.etcd")


class LeaderElection:
    def __init__(self, connector: EtcdConnector, key: str, candidate_id: str, ttl: int = 5) -> None:
        self.connector = connector
        self.key = key.encode()
        self.candidate_id = candidate_id
        self.ttl = ttl
        self._is_leader = False
        self._valid_until = 0.0
        self.leader_id = ""
        self.changed = asyncio.Event()  # set on every change of is_leader
        self._task: asyncio.Task | None = None
        self._client: aetcd.Client | None = None
        self._lease: aetcd.Lease | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="election")

    @property
    def is_leader(self) -> bool:
        """True while this candidate holds the key under a lease known to be alive."""
        return self._is_leader and time.monotonic() < self._valid_until

    def _set_leader(self, value: bool) -> None:
        if value != self._is_leader:
            self._is_leader = value
            log.info("%s %s leadership of %s", self.candidate_id, "took" if value else "lost", self.key.decode())
            self.changed.set()

    async def _run(self) -> None:
        outage = OutageLog(f"election {self.key.decode()}")
        backoff = Backoff()
        while True:
            try:
                self._client = await self.connector.connect()
                self._lease = await self._client.lease(self.ttl)
                outage.ok()
                backoff.reset()
                await self._campaign()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001
                self._set_leader(False)
                outage.failed(exc)
                await self.connector.discard(self._client)
                self._client, self._lease = None, None
                await backoff.sleep()

    async def _campaign(self) -> None:
        client, lease = self._client, self._lease
        assert client is not None and lease is not None
        tx = client.transactions
        while True:
            started = time.monotonic()
            if not self._is_leader:
                won, _ = await client.transaction(
                    compare=[tx.create(self.key) == 0],
                    success=[tx.put(self.key, self.candidate_id.encode(), lease)],
                    failure=[],
                )
                if won:
                    self.leader_id = self.candidate_id
                    self._valid_until = started + self.ttl * 0.8
                    self._set_leader(True)
                else:
                    current = await client.get(self.key)
                    self.leader_id = current.value.decode() if current else ""
            reply = await lease.refresh()
            if reply is None or reply.TTL <= 0:
                raise LookupError("election lease expired")
            # Leadership is only trusted until a safety margin before the
            # lease could have expired on etcd's side.
            self._valid_until = started + self.ttl * 0.8
            if self._is_leader:
                # Still ours? (etcd could have lost its data and another took it.)
                current = await client.get(self.key)
                if not current or current.value.decode() != self.candidate_id:
                    self._set_leader(False)
            await asyncio.sleep(max(0.0, self.ttl / 3 - (time.monotonic() - started)))

    async def close(self) -> None:
        await cancel_and_wait(self._task)
        if self._is_leader and self._lease is not None:
            try:
                await asyncio.wait_for(self._lease.revoke(), 2.0)  # hand over at once
            except Exception:  # noqa: BLE001
                pass
        self._set_leader(False)
        await self.connector.discard(self._client)
