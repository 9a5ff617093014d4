"""The worker's KV-cache events, relayed to every scheduler with resynchronisation.

Engines publish what enters and leaves their prefix cache (vLLM over ZMQ, the
sim engine by callback). The relay keeps a mirror of the blocks cached now, in
the order they were stored, and fans events out to one queue per scheduler
stream. A stream that (re)opens first gets the mirror as a snapshot (cleared,
then every cached block, parents before children), then live events: a
scheduler that restarts or reconnects is exact again at once, without asking.
Batches carry a per-stream sequence number so a gap would be visible.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable
from dataclasses import dataclass

from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.worker.kv_events")

MAX_EVENTS_PER_BATCH = 512
MAX_QUEUED_BATCHES = 10_000
_MASK = (1 << 64) - 1


def hash64(value: int | bytes) -> int:
    """An engine block hash as an unsigned 64-bit int (vLLM hashes may be bytes)."""
    if isinstance(value, bytes | bytearray):
        return int.from_bytes(bytes(value[:8]), "little")
    return int(value) & _MASK


@dataclass(frozen=True)
class Stored:
    block_hash: int
    parent: int | None
    token_ids: tuple[int, ...]


@dataclass(frozen=True)
class Removed:
    block_hash: int


@dataclass(frozen=True)
class Cleared:
    pass


Event = Stored | Removed | Cleared


class KVEventRelay:
    def __init__(self, block_size: int) -> None:
        self.block_size = block_size
        self._cached: dict[int, Stored] = {}  # insertion order: parents before children
        self._queues: set[asyncio.Queue] = set()
        self._wakes: dict[int, asyncio.Event] = {}
        self.dropped_streams = 0

    @property
    def cached_blocks(self) -> int:
        return len(self._cached)

    def publish(self, events: Iterable[Event]) -> None:
        """Apply engine events to the mirror and queue them for every open stream."""
        batch = []
        for ev in events:
            if isinstance(ev, Stored):
                if ev.block_hash in self._cached:
                    continue
                self._cached[ev.block_hash] = ev
            elif isinstance(ev, Removed):
                if self._cached.pop(ev.block_hash, None) is None:
                    continue
            else:
                self._cached.clear()
            batch.append(ev)
        if not batch:
            return
        for q in list(self._queues):
            if q.qsize() >= MAX_QUEUED_BATCHES:
                # A stream this far behind is useless: close it; the reporter reconnects and resyncs.
                self._queues.discard(q)
                q.put_nowait(None)
                self.dropped_streams += 1
                continue
            q.put_nowait(batch)
            wake = self._wakes.get(id(q))
            if wake is not None:
                wake.set()

    def subscribe(self, wake: asyncio.Event | None = None) -> asyncio.Queue:
        """A queue that starts with a snapshot of the cache, then receives live events (None: resync).
        `wake` is set whenever something is queued, so one loop can wait on load and events together."""
        q: asyncio.Queue = asyncio.Queue()
        q.put_nowait([Cleared(), *self._cached.values()])
        self._queues.add(q)
        if wake is not None:
            self._wakes[id(q)] = wake
            wake.set()
        return q

    def unsubscribe(self, q: asyncio.Queue) -> None:
        self._queues.discard(q)
        self._wakes.pop(id(q), None)


def to_batches(events: list[Event], block_size: int, seq_start: int) -> list[pb.KVEventBatch]:
    """Events as protobuf batches of at most MAX_EVENTS_PER_BATCH, numbered from seq_start."""
    out: list[pb.KVEventBatch] = []
    now = time.time()
    for i in range(0, len(events), MAX_EVENTS_PER_BATCH):
        msg = pb.KVEventBatch(seq=seq_start + len(out), timestamp=now)
        for ev in events[i : i + MAX_EVENTS_PER_BATCH]:
            if isinstance(ev, Stored):
                stored = pb.BlockStored(block_hashes=[ev.block_hash], token_ids=ev.token_ids, block_size=block_size)
                if ev.parent is not None:
                    stored.has_parent = True
                    stored.parent_block_hash = ev.parent
                msg.events.add(stored=stored)
            elif isinstance(ev, Removed):
                msg.events.add(removed=pb.BlockRemoved(block_hashes=[ev.block_hash]))
            else:
                msg.events.add(cleared=pb.AllBlocksCleared())
        out.append(msg)
    return out
