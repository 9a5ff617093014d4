"""Who may call which internal gRPC method: roles from client certificates, one allow list.

A certificate names its holder's role in a URI subject alternative name,
``spiffe://tessera/<role>``. TLS proves the holder has the key of a
certificate our CA signed; this module decides what that role may do, so a
leaked worker certificate cannot drain the fleet and a router certificate
cannot pose as a worker on the scheduler's report stream.

The table is the whole policy: a method not in it is refused, so adding an
RPC means deciding who may call it.
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

import grpc

log = logging.getLogger("tessera.authz")

SPIFFE_PREFIX = "spiffe://tessera/"
ROUTER, SCHEDULER, AUTOSCALER, WORKER, CLI = "router", "scheduler", "autoscaler", "worker", "cli"
ROLES = (ROUTER, SCHEDULER, AUTOSCALER, WORKER, CLI)
ANY_ROLE = frozenset(ROLES)
# The DNS domain of role names: every certificate of a role lists ``<role>.<domain>`` as a DNS SAN,
# and a client channel verifies the server's certificate against the name of the role it dials.
ROLE_DOMAIN = "tessera.internal"


def role_name(role: str, domain: str = ROLE_DOMAIN) -> str:
    """The DNS name a server certificate of ``role`` carries, and the one a client dialing that role checks."""
    return f"{role}.{domain or ROLE_DOMAIN}"


# Full method name -> the roles allowed to call it.
POLICY: Mapping[str, frozenset[str]] = {
    # Placement is the router's; the CLI may ask for one (debugging a profile).
    "/tessera.v1.Scheduler/Place": frozenset({ROUTER, CLI}),
    "/tessera.v1.Scheduler/PlaceStream": frozenset({ROUTER}),
    # The report stream makes a worker placeable: only a worker may open it.
    "/tessera.v1.Scheduler/ReportLoad": frozenset({WORKER}),
    "/tessera.v1.Scheduler/ListWorkers": frozenset({ROUTER, AUTOSCALER, CLI}),
    # Requests reach engines only through the router, which placed them.
    "/tessera.v1.Worker/Generate": frozenset({ROUTER}),
    "/tessera.v1.Worker/GetInfo": frozenset({ROUTER, SCHEDULER, AUTOSCALER, CLI}),
    # Draining takes capacity away: the autoscaler's decision, or an operator's (`drain` command).
    "/tessera.v1.Worker/Drain": frozenset({AUTOSCALER, CLI}),
    "/tessera.v1.Autoscaler/GetPlan": frozenset({CLI, ROUTER, SCHEDULER}),
}
# Health and reflection are harmless to any holder of a cluster certificate.
OPEN_SERVICES = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/")


def role_from_uris(uris: list[str]) -> str | None:
    """The role named by the first ``spiffe://tessera/<role>`` URI that names a known role."""
    for uri in uris:
        if uri.startswith(SPIFFE_PREFIX):
            role = uri[len(SPIFFE_PREFIX) :]
            if role in ROLES:
                return role
    return None


@functools.lru_cache(maxsize=256)
def role_from_pem(pem: bytes) -> str | None:
    """The role a PEM certificate names (None: none, or not a certificate). Cached: one per peer."""
    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(pem)
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except (ValueError, x509.ExtensionNotFound):
        return None
    return role_from_uris(san.get_values_for_type(x509.UniformResourceIdentifier))


def allowed(method: str, role: str | None, policy: Mapping[str, frozenset[str]] = POLICY) -> bool:
    """Whether ``role`` may call ``method`` (a full name, ``/package.Service/Method``)."""
    if role is None:
        return False
    if method.startswith(OPEN_SERVICES):
        return True
    return role in policy.get(method, frozenset())


def peer_role(context: grpc.aio.ServicerContext) -> str | None:
    """The role of the certificate the peer presented on this call's connection."""
    pems = context.auth_context().get("x509_pem_cert") or []
    return role_from_pem(pems[0]) if pems else None


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):
    """Checks each call's peer role against ``policy`` before the handler runs.

    The peer's certificate is only visible from the call's context, not from
    the interceptor's call details, so the interceptor wraps the handler.
    """

    def __init__(self, policy: Mapping[str, frozenset[str]] = POLICY) -> None:
        self.policy = policy

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method: str = handler_call_details.method
        return _guarded(handler, functools.partial(self._check, method))

    async def _check(self, method: str, context: grpc.aio.ServicerContext) -> None:
        role = peer_role(context)
        if role is None:
            log.warning("refused %s from %s: no Tessera role in its certificate", method, context.peer())
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "a client certificate naming a Tessera role is needed")
        if not allowed(method, role, self.policy):
            log.warning("refused %s from %s: role %s may not call it", method, context.peer(), role)
            await context.abort(grpc.StatusCode.PERMISSION_DENIED, f"role {role} may not call {method}")


Check = Callable[[grpc.aio.ServicerContext], Awaitable[None]]


async def _results(behavior: Callable[..., Any], request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
    """A streaming handler's responses, whichever way it is written (async generator, or writes then returns)."""
    result = behavior(request, context)
    if inspect.isasyncgen(result):
        async for item in result:
            yield item
        return
    if inspect.isawaitable(result):
        result = await result
    if result is not None:
        for item in result:
            yield item


def _guarded(handler: grpc.RpcMethodHandler, check: Check) -> grpc.RpcMethodHandler:
    """The same handler, running ``check(context)`` first."""
    h: Any = handler
    serializers = {"request_deserializer": h.request_deserializer, "response_serializer": h.response_serializer}
    if h.unary_unary:
        uu = h.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            result = uu(request, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.unary_unary_rpc_method_handler(unary_unary, **serializers)
    if h.stream_unary:
        su = h.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            await check(context)
            result = su(requests, context)
            return await result if inspect.isawaitable(result) else result

        return grpc.stream_unary_rpc_method_handler(stream_unary, **serializers)
    streaming = h.unary_stream or h.stream_stream

    async def streamed(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await check(context)
        async for item in _results(streaming, request, context):
            yield item

    if h.unary_stream:
        return grpc.unary_stream_rpc_method_handler(streamed, **serializers)
    return grpc.stream_stream_rpc_method_handler(streamed, **serializers)
