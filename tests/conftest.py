"""Fixtures every kind of test may use (the integration tests' cluster fixtures are in tests/integration)."""

from __future__ import annotations

import grpc
import pytest

from services.worker.load import LoadTracker
from services.worker.servicer import WorkerServicer
from tessera.v1 import common_pb2 as pb
from tessera.v1 import worker_pb2_grpc


@pytest.fixture
async def worker():
    """A Worker gRPC service without an engine, in this process: (its address, its load tracker)."""
    tracker = LoadTracker()
    server = grpc.aio.server()
    worker_pb2_grpc.add_WorkerServicer_to_server(WorkerServicer(None, tracker, pb.WorkerIdentity(id="w1")), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    yield f"127.0.0.1:{port}", tracker
    await server.stop(0)
