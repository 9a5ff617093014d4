"""OpenTelemetry spans from router through scheduler to worker.

Trace context travels in gRPC metadata (W3C ``traceparent``). A client's own
``traceparent``/``tracestate`` (an HTTP header, or gRPC metadata on Router.Generate)
is joined: the router's span becomes a child of the caller's. Spans are
exported over OTLP/gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; otherwise the no-op tracer is
kept and tracing costs nothing on the request path.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from tessera.runtime.telemetry.genai import ERROR_TYPE

_configured = False
# What a client may hand in: W3C trace context only. Baggage is not taken from outside: it would
# ride along to every internal call, and nothing here reads it.
_CLIENT_PROPAGATOR = TraceContextTextMapPropagator()
CLIENT_TRACE_HEADERS = ("traceparent", "tracestate")


def setup_tracing(service_name: str) -> bool:
    """Install an exporting tracer provider if an OTLP endpoint is configured."""
    global _configured
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    if not endpoint or _configured:
        return _configured
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    insecure = not endpoint.startswith("https://")
    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=endpoint, insecure=insecure)))
    trace.set_tracer_provider(provider)
    _configured = True
    return True


def shutdown_tracing() -> None:
    provider = trace.get_tracer_provider()
    if hasattr(provider, "shutdown"):
        provider.shutdown()


def tracer(name: str) -> trace.Tracer:
    return trace.get_tracer(name)


def outgoing_metadata(
    extra: Iterable[tuple[str, str]] = (), context: otel_context.Context | None = None
) -> list[tuple[str, str]]:
    """gRPC metadata carrying a span context (default: the current one) to the callee."""
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=context)
    return list(extra) + list(carrier.items())


def incoming_context(invocation_metadata: Iterable | None) -> otel_context.Context:
    """The caller's trace context from a gRPC call's metadata."""
    carrier = {item[0]: item[1] for item in (invocation_metadata or ())}
    return propagate.extract(carrier)


def client_context(values: Callable[[str], list[str]]) -> otel_context.Context:
    """The trace context a client sent (``values(name)``: the header's or metadata's values).

    A malformed ``traceparent`` (bad hex, all-zero ids, version ff, over 512 characters) is
    ignored and the request starts a trace of its own, as W3C Trace Context asks; a malformed
    ``tracestate`` is dropped and the ``traceparent`` kept. Neither is ever an error for the
    client. When the caller's span is not sampled (flags 00), neither are Tessera's.
    """
    carrier = {name: found for name in CLIENT_TRACE_HEADERS if (found := values(name))}
    if not carrier:
        return otel_context.Context()
    return _CLIENT_PROPAGATOR.extract(carrier)


def metadata_values(invocation_metadata: Iterable | None) -> Callable[[str], list[str]]:
    """``values`` for client_context over gRPC metadata (text values only)."""
    items = [(item[0], item[1]) for item in (invocation_metadata or ())]
    return lambda name: [value for key, value in items if key == name and isinstance(value, str)]


def record_error(span: trace.Span, error_type: str, message: str, server_fault: bool = True) -> None:
    """Mark how a request ended in error: ``error.type`` always (a status code, or a short name);
    the span's ERROR status only for the server's own faults (HTTP 5xx, gRPC UNAVAILABLE...),
    not for a client's bad request, as the HTTP and gRPC conventions ask of server spans."""
    span.set_attribute(ERROR_TYPE, error_type)
    if server_fault:
        span.set_status(trace.Status(trace.StatusCode.ERROR, message))
