"""Asking a scheduler where to run a request: one unary call, failing over between schedulers."""

from __future__ import annotations

import logging

import grpc

from tessera.etcd import keys
from tessera.etcd.client import EtcdConnector
from tessera.etcd.records import ServiceRecord
from tessera.etcd.watch import PrefixMirror
from tessera.rpc.server import channel
from tessera.v1 import scheduler_pb2, scheduler_pb2_grpc
from services.router.errors import NoCapacity

log = logging.getLogger("tessera.router")

PLACE_TIMEOUT_S = 2.0
FAILOVER_CODES = {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.UNKNOWN,
                  grpc.StatusCode.INTERNAL, grpc.StatusCode.CANCELLED}


class SchedulerClient:
    def __init__(self, connector: EtcdConnector) -> None:
        self._stubs: dict[str, tuple[grpc.aio.Channel, scheduler_pb2_grpc.SchedulerStub]] = {}
        self._addresses: dict[str, str] = {}  # etcd key -> address
        self._preferred = 0
        self.mirror = PrefixMirror(connector, keys.services("scheduler"), on_change=self._on_change)

    def start(self) -> None:
        self.mirror.start()

    async def close(self) -> None:
        await self.mirror.close()
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
            ch = channel(address)
            self._stubs[address] = (ch, scheduler_pb2_grpc.SchedulerStub(ch))
        return self._stubs[address][1]

    async def place(self, request: scheduler_pb2.PlaceRequest,
                    metadata: list[tuple[str, str]] | None = None) -> scheduler_pb2.PlaceResponse:
        addresses = self.addresses
        if not addresses:
            raise NoCapacity("no scheduler is registered", retry_after=2)
        last_error = ""
        for i in range(len(addresses)):
            address = addresses[(self._preferred + i) % len(addresses)]
            try:
                response = await self._stub(address).Place(request, timeout=PLACE_TIMEOUT_S, metadata=metadata)
                self._preferred = (self._preferred + i) % len(addresses)
                return response
            except grpc.aio.AioRpcError as exc:
                if exc.code() not in FAILOVER_CODES:
                    raise
                last_error = f"{address}: {exc.code().name}"
                log.warning("scheduler %s failed (%s); trying another", address, exc.code().name)
        raise NoCapacity(f"no scheduler answered ({last_error})", retry_after=1)

    async def list_workers(self) -> scheduler_pb2.ListWorkersResponse:
        for address in self.addresses:
            try:
                return await self._stub(address).ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=2)
            except grpc.aio.AioRpcError:
                continue
        return scheduler_pb2.ListWorkersResponse()
