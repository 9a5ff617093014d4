"""OpenTelemetry spans from router through scheduler to worker.

Trace context travels in gRPC metadata (W3C ``traceparent``). Spans are
exported over OTLP/gRPC when ``OTEL_EXPORTER_OTLP_ENDPOINT`` (or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``) is set; otherwise the no-op tracer is
kept and tracing costs nothing on the request path.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace

_configured = False


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
