"""Asking a scheduler where to run a request: one message each way, failing over between schedulers.

Placements go over one long-lived PlaceStream per scheduler (half the latency
of a unary call in grpc-python), matched to their requests by request_id.
If the stream breaks, pending placements fall back to the unary Place call and
the stream is reopened on next use; if a scheduler does not answer, the next
one is tried.
"""

from __future__ import annotations

import asyncio
import logging

import grpc

from services.router.errors import NoCapacity
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.records import ServiceRecord
from tessera.runtime.etcd.watch import PrefixMirror
from tessera.runtime.rpc.server import channel
from tessera.v1 import scheduler_pb2, scheduler_pb2_grpc

log = logging.getLogger("tessera.router")

PLACE_TIMEOUT_S = 2.0
FAILOVER_CODES = {
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.UNKNOWN,
    grpc.StatusCode.INTERNAL,
    grpc.StatusCode.CANCELLED,
}


class StreamBroken(ConnectionError):
    pass


class PlaceStream:
    """One open PlaceStream; many concurrent placements in flight on it."""

    def __init__(self, stub: scheduler_pb2_grpc.SchedulerStub) -> None:
        self._pending: dict[str, asyncio.Future] = {}
        self._write_lock = asyncio.Lock()  # grpc-aio allows one write in progress per call
        self.broken = False
        self._call = stub.PlaceStream()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        error: Exception = StreamBroken("place stream ended")
        try:
            async for response in self._call:
                future = self._pending.pop(response.request_id, None)
                if future is not None and not future.done():
                    future.set_result(response)
        except (grpc.aio.AioRpcError, asyncio.CancelledError) as exc:
            why = exc.code() if isinstance(exc, grpc.aio.AioRpcError) else "cancelled"
            error = StreamBroken(f"place stream broke: {why}")
        self.broken = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(error)
        self._pending.clear()

    async def place(self, request: scheduler_pb2.PlaceRequest) -> scheduler_pb2.PlaceResponse:
        if self.broken:
            raise StreamBroken("place stream is closed")
        future = asyncio.get_running_loop().create_future()
        self._pending[request.request_id] = future
        try:
            async with self._write_lock:
                await self._call.write(request)
            return await asyncio.wait_for(future, PLACE_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise StreamBroken(f"place stream broke: {exc.code().name}") from None
        except asyncio.InvalidStateError:
            raise StreamBroken("place stream is closed") from None
        finally:
            self._pending.pop(request.request_id, None)

    def close(self) -> None:
        self._call.cancel()


class SchedulerClient:
    def __init__(self, connector: EtcdConnector) -> None:
        self._stubs: dict[str, tuple[grpc.aio.Channel, scheduler_pb2_grpc.SchedulerStub]] = {}
        self._streams: dict[str, PlaceStream] = {}
        self._addresses: dict[str, str] = {}  # etcd key -> address
        self._preferred = 0
        self.mirror = PrefixMirror(connector, keys.services("scheduler"), on_change=self._on_change)

    def start(self) -> None:
        self.mirror.start()

    async def close(self) -> None:
        await self.mirror.close()
        for stream in self._streams.values():
            stream.close()
        for ch, _ in self._stubs.values():
            await ch.close()

    def _on_change(self, key: str, value: bytes | None) -> None:
        if value is None:
            self._addresses.pop(key, None)
        else:
            self._addresses[key] = ServiceRecord.from_json(value).address

    @property
    def addresses(self) -> list[str]:
        return sorted(set(self._addresses.values()))

    def _stub(self, address: str) -> scheduler_pb2_grpc.SchedulerStub:
        if address not in self._stubs:
            ch = channel(address, "scheduler")
            self._stubs[address] = (ch, scheduler_pb2_grpc.SchedulerStub(ch))
        return self._stubs[address][1]

    def _stream(self, address: str) -> PlaceStream:
        stream = self._streams.get(address)
        if stream is None or stream.broken:
            stream = self._streams[address] = PlaceStream(self._stub(address))
        return stream

    async def _place_on(
        self, address: str, request: scheduler_pb2.PlaceRequest, metadata: list[tuple[str, str]] | None
    ) -> scheduler_pb2.PlaceResponse:
        try:
            return await self._stream(address).place(request)
        except (TimeoutError, StreamBroken):
            # The stream is gone (scheduler restarted?): the unary call says for sure.
            return await self._stub(address).Place(request, timeout=PLACE_TIMEOUT_S, metadata=metadata)

    async def place(
        self, request: scheduler_pb2.PlaceRequest, metadata: list[tuple[str, str]] | None = None
    ) -> scheduler_pb2.PlaceResponse:
        addresses = self.addresses
        if not addresses:
            raise NoCapacity("no scheduler is registered", retry_after=2)
        last_error = ""
        for i in range(len(addresses)):
            address = addresses[(self._preferred + i) % len(addresses)]
            try:
                response = await self._place_on(address, request, metadata)
                self._preferred = (self._preferred + i) % len(addresses)
                return response
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in FAILOVER_CODES:
                    raise
                last_error = f"{address}: {exc.code().name}"
                log.warning("scheduler %s failed (%s); trying another", address, exc.code().name)
        raise NoCapacity(f"no scheduler answered ({last_error})", retry_after=1)
