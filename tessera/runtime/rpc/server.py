"""A gRPC aio server with health checking and reflection, as every service serves.

Health (grpc.health.v1) lets probes and load balancers ask whether a service
is SERVING; reflection lets grpcurl and any language's tooling discover the
API without our .proto files.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from tessera.runtime.rpc import tls
from tessera.runtime.rpc.authz import AuthorizationInterceptor

# Large enough for long token-id prompts; the default 4 MiB is too tight for
# 1M-token contexts of some models.
MAX_MESSAGE_BYTES = 64 * 1024 * 1024
OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]


@dataclass
class ServiceBinding:
    """One servicer and how to add it: ``add(servicer, server)`` from the generated _pb2_grpc module."""

    add: Callable[[object, grpc.aio.Server], None]
    servicer: object
    full_name: str  # e.g. "tessera.v1.Worker"


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer

    async def set_serving(self, serving: bool) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set("", status)

    async def stop(self, grace: float = 2.0) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)


async def start_server(
    bindings: Sequence[ServiceBinding], host: str = "127.0.0.1", port: int = 0, public: bool = False
) -> RunningServer:
    """Start serving ``bindings`` plus health and reflection; ``port=0`` picks a free port.

    With TLS configured (``tls.configure``), an internal server requires a client certificate
    and authorizes each call by the role it names (``authz.POLICY``); a ``public`` one (the
    router's API, the front door for clients) serves TLS without asking for a certificate.
    """
    config = tls.active()
    interceptors = [AuthorizationInterceptor()] if config is not None and not public else []
    server = grpc.aio.server(options=OPTIONS, interceptors=interceptors)
    for b in bindings:
        b.add(b.servicer, server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    names = [b.full_name for b in bindings]
    reflection.enable_server_reflection(names + [health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = f"{host}:{port}"
    if config is None:
        bound = server.add_insecure_port(address)
    else:
        bound = server.add_secure_port(address, config.server_credentials(require_client_cert=not public))
    if bound == 0:
        raise OSError(f"cannot bind gRPC server to {host}:{port}")
    await server.start()
    for name in ["", *names]:
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return RunningServer(server, bound, health_servicer)


def channel(address: str, role: str) -> grpc.aio.Channel:
    """A client channel to the ``role`` service at ``address``, with the same message limits and keepalive
    as our servers. When TLS is configured it presents this process's certificate and accepts only a
    server certificate of the cluster CA naming ``role`` (``tls.TLSConfig.channel_options``)."""
    config = tls.active()
    if config is None:
        return grpc.aio.insecure_channel(address, options=OPTIONS)
    return grpc.aio.secure_channel(
        address, config.channel_credentials(), options=OPTIONS + config.channel_options(role)
    )
