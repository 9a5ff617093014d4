"""Worker gRPC servers that answer only ``Drain``, one per pod address the fake API server hands out.

The fake API server gives each pod its own loopback address (127.0.0.N); these servers listen on
those addresses at one port, so the Kubernetes actuator's drains reach "the pod" it chose. Each
has one request in flight when drained, finished by the next poll, and records when its drain
began and ended, next to the fake API's pod events.
"""

from __future__ import annotations

import time

import grpc

from tessera.v1 import worker_pb2, worker_pb2_grpc


class _Worker(worker_pb2_grpc.WorkerServicer):
    def __init__(self, ip: str, events: list) -> None:
        self.ip = ip
        self.events = events
        self.in_flight = 1
        self.draining = False

    async def Drain(self, request, context):
        if not self.draining:
            self.draining = True
            self.events.append((time.monotonic(), "drain-started", "", self.ip))
            return worker_pb2.DrainResponse(in_flight=self.in_flight)
        self.in_flight = 0  # the request in flight finished
        self.events.append((time.monotonic(), "drained", "", self.ip))
        return worker_pb2.DrainResponse(in_flight=0)


class FakeDrainWorkers:
    def __init__(self, events: list, count: int = 24) -> None:
        self.events = events
        self.count = count
        self.servers: list[grpc.aio.Server] = []
        self.workers: dict[str, _Worker] = {}
        self.port = 0

    async def start(self) -> int:
        for n in range(2, 2 + self.count):  # the fake API's pod addresses: 127.0.0.2, .3, ...
            ip = f"127.0.0.{n}"
            server = grpc.aio.server()
            worker = _Worker(ip, self.events)
            worker_pb2_grpc.add_WorkerServicer_to_server(worker, server)
            self.port = server.add_insecure_port(f"{ip}:{self.port}")
            await server.start()
            self.servers.append(server)
            self.workers[ip] = worker
        return self.port

    def drained(self) -> set[str]:
        return {ip for ip, w in self.workers.items() if w.draining}

    async def stop(self) -> None:
        for server in self.servers:
            await server.stop(None)
