"""``python -m tessera.runtime.rpc.healthcheck HOST:PORT``: exit 0 when that gRPC server is SERVING.

Container healthchecks (deploy/compose) ask each service the standard grpc.health.v1 question
with the client the image already has, instead of shipping grpc_health_probe.
"""

from __future__ import annotations

import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def serving(target: str, timeout_s: float = 3.0) -> bool:
    """Whether the plaintext gRPC server at ``target`` answers SERVING for the whole server."""
    with grpc.insecure_channel(target) as channel:
        try:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout_s)
        except grpc.RpcError:
            return False
    return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)


def main() -> None:
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tessera.runtime.rpc.healthcheck HOST:PORT")
    sys.exit(0 if serving(sys.argv[1]) else 1)


if __name__ == "__main__":
    main()
