"""Stream this worker's load and KV-cache events to every scheduler.

Schedulers are discovered by watching /tessera/v1/services/scheduler/. Each
gets its own client stream: the identity first, then a LoadReport on every
change (at most every 10 ms) and at least every 250 ms, with the engine's
KV-cache events before each (a snapshot of the whole cache first, see
kv_events.py). A scheduler that
restarts gets a fresh stream, with the identity again, within a backoff.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator

import grpc

from services.worker.kv_events import KVEventRelay, to_batches
from services.worker.load import LoadTracker
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import Backoff, EtcdConnector
from tessera.runtime.etcd.records import ServiceRecord
from tessera.runtime.etcd.watch import PrefixMirror
from tessera.runtime.rpc.server import channel
from tessera.v1 import common_pb2 as pb
from tessera.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger("tessera.worker.reporter")

REPORT_INTERVAL_S = 0.25
MIN_GAP_S = 0.01


class SchedulerReporter:
    def __init__(
        self,
        connector: EtcdConnector,
        identity: pb.WorkerIdentity,
        tracker: LoadTracker,
        kv_relay: KVEventRelay | None = None,
    ) -> None:
        self.identity = identity
        self.tracker = tracker
        self.kv_relay = kv_relay
        self._streams: dict[str, tuple[str, asyncio.Task]] = {}
        self.mirror = PrefixMirror(connector, keys.services("scheduler"), on_change=self._on_change)

    def start(self) -> None:
        self.mirror.start()

    async def close(self) -> None:
        await self.mirror.close()
        for _, task in self._streams.values():
            task.cancel()
        await asyncio.gather(*(t for _, t in self._streams.values()), return_exceptions=True)
        self._streams.clear()

    def _on_change(self, key: str, value: bytes | None) -> None:
        current = self._streams.get(key)
        address = ServiceRecord.from_json(value).address if value else None
        if current and current[0] == address:
            return
        if current:
            current[1].cancel()
            del self._streams[key]
        if address:
            self._streams[key] = (address, asyncio.create_task(self._stream(address), name=f"report:{address}"))

    async def _stream(self, address: str) -> None:
        backoff = Backoff()
        complained = False
        while True:
            ch = channel(address, "scheduler")
            try:
                stub = scheduler_pb2_grpc.SchedulerStub(ch)
                await stub.ReportLoad(self._messages())
            except asyncio.CancelledError:
                raise
            except grpc.aio.AioRpcError as exc:
                if not complained:
                    log.warning("load stream to scheduler %s broke (%s); reconnecting", address, exc.code().name)
                    complained = True
            finally:
                await ch.close()
            await backoff.sleep()

    async def _messages(self) -> AsyncIterator[scheduler_pb2.WorkerReport]:
        wid = self.identity.id
        yield scheduler_pb2.WorkerReport(worker_id=wid, hello=self.identity)
        changed = self.tracker.subscribe()
        kv = self.kv_relay.subscribe(changed) if self.kv_relay is not None else None
        seq = 0
        kv_seq = 0
        last = 0.0
        try:
            while True:
                seq += 1
                last = time.monotonic()
                changed.clear()
                while kv is not None and not kv.empty():
                    events = kv.get_nowait()
                    if events is None:
                        return  # fell too far behind: end the stream; the next one resyncs
                    for batch in to_batches(events, self.identity.kv_block_size, kv_seq):
                        kv_seq += 1
                        yield scheduler_pb2.WorkerReport(worker_id=wid, kv_events=batch)
                yield scheduler_pb2.WorkerReport(worker_id=wid, load=self.tracker.report(seq))
                try:
                    await asyncio.wait_for(changed.wait(), REPORT_INTERVAL_S)
                except TimeoutError:
                    pass
                gap = MIN_GAP_S - (time.monotonic() - last)
                if gap > 0:
                    await asyncio.sleep(gap)
        finally:
            self.tracker.unsubscribe(changed)
            if kv is not None and self.kv_relay is not None:
                self.kv_relay.unsubscribe(kv)
