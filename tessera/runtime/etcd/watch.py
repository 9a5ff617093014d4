"""A local mirror of every key under an etcd prefix, kept by list-then-watch.

Services discover each other this way. If etcd goes away, the mirror keeps its
last contents (serving continues on the last known view) and, once etcd is
back, lists again and reports only what changed.

A key missing from that re-listing is not dropped at once: if etcd lost its
data (or leases expired during the outage), the owners are re-registering
right now. Such keys get ``resync_grace_s`` to reappear before they are
reported deleted, so a restarted etcd does not empty anyone's view.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable

import aetcd
from aetcd.rtypes import EventKind

from tessera.runtime.etcd.client import Backoff, EtcdConnector, OutageLog
from tessera.runtime.tasks import cancel_and_wait

log = logging.getLogger("tessera.runtime.etcd")

# Called with (key, value) for a put, (key, None) for a delete.
ChangeHandler = Callable[[str, bytes | None], Awaitable[None] | None]


class PrefixMirror:
    """``items`` holds key -> value for everything under ``prefix``."""

    def __init__(
        self,
        connector: EtcdConnector,
        prefix: str,
        on_change: ChangeHandler | None = None,
        resync_grace_s: float = 10.0,
    ) -> None:
        self.connector = connector
        self.prefix = prefix
        self.items: dict[str, bytes] = {}
        self.revisions: dict[str, int] = {}  # key -> mod_revision of the value in items, set before on_change
        self.on_change = on_change
        self.resync_grace_s = resync_grace_s
        self._expiring: dict[str, asyncio.Task] = {}
        self.synced = asyncio.Event()  # set after the first successful listing
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"watch:{self.prefix}")

    async def close(self) -> None:
        for task in self._expiring.values():
            task.cancel()
        await cancel_and_wait(self._task)

    async def _emit(self, key: str, value: bytes | None) -> None:
        if self.on_change is None:
            return
        try:
            result = self.on_change(key, value)
            if asyncio.iscoroutine(result):
                await result
        except Exception as exc:  # noqa: BLE001 - one bad entry must not stop the watch
            log.warning("watch %s: handler failed on %s: %s", self.prefix, key, exc)

    async def _run(self) -> None:
        outage = OutageLog(f"watch {self.prefix}")
        backoff = Backoff()
        while True:
            client: aetcd.Client | None = None
            try:
                client = await self.connector.connect()
                listing = await client.get_prefix(self.prefix.encode())
                revision = listing.header.revision
                self.revisions.update({kv.key.decode(): kv.mod_revision for kv in listing})
                await self._replace_all({kv.key.decode(): kv.value for kv in listing})
                self.synced.set()
                outage.ok()
                backoff.reset()
                watch = await client.watch_prefix(self.prefix.encode(), start_revision=revision + 1)
                async for event in watch:
                    key = event.kv.key.decode()
                    if event.kind == EventKind.PUT:
                        self._cancel_expiry(key)
                        self.revisions[key] = event.kv.mod_revision
                        if self.items.get(key) != event.kv.value:
                            self.items[key] = event.kv.value
                            await self._emit(key, event.kv.value)
                    elif self.items.pop(key, None) is not None:
                        self.revisions.pop(key, None)
                        self._cancel_expiry(key)
                        await self._emit(key, None)
                raise ConnectionError("watch stream ended")
            except asyncio.CancelledError:
                await self.connector.discard(client)
                raise
            except Exception as exc:  # noqa: BLE001 - keep the last view, retry
                outage.failed(exc)
                await self.connector.discard(client)
                await backoff.sleep()

    async def _replace_all(self, fresh: dict[str, bytes]) -> None:
        first = not self.synced.is_set()
        for key in [k for k in self.items if k not in fresh]:
            if first or self.resync_grace_s <= 0:
                del self.items[key]
                self.revisions.pop(key, None)
                await self._emit(key, None)
            elif key not in self._expiring:
                self._expiring[key] = asyncio.create_task(self._expire_later(key))
        for key, value in fresh.items():
            self._cancel_expiry(key)
            if self.items.get(key) != value:
                self.items[key] = value
                await self._emit(key, value)

    def _cancel_expiry(self, key: str) -> None:
        task = self._expiring.pop(key, None)
        if task is not None:
            task.cancel()

    async def _expire_later(self, key: str) -> None:
        """Drop a key that did not come back within the grace period after a re-listing."""
        await asyncio.sleep(self.resync_grace_s)
        self._expiring.pop(key, None)
        if self.items.pop(key, None) is not None:
            self.revisions.pop(key, None)
            await self._emit(key, None)
