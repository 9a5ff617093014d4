"""Which request the code running now is handling, for the log lines it writes.

A ``contextvars.ContextVar`` follows a request through the awaits of its asyncio task (and the
tasks it starts), so a log line written deep in the request's path carries its ``request_id``
without passing it down. The ``trace_id`` is the current OpenTelemetry span's, when tracing records
one.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from opentelemetry import trace

_request_id: ContextVar[str] = ContextVar("tessera_request_id", default="")
_trace_id: ContextVar[str] = ContextVar("tessera_trace_id", default="")  # the request's, past its span's end


def bind_request_id(request_id: str, span: trace.Span | None = None) -> None:
    """Set the request id for the rest of the current task and the tasks it starts.

    For a server that runs each request in a task of its own (uvicorn, grpc.aio): the task's
    context ends with it, so the id does not reach another request, and a streamed response
    written after the handler returned still carries it, as does ``span``'s trace id.
    """
    _request_id.set(request_id)
    if span is not None:
        _trace_id.set(_hex(span.get_span_context()))


@contextmanager
def request_context(request_id: str) -> Iterator[None]:
    """Log lines written inside carry ``request_id``: for a task that handles several requests in
    turn (a gRPC stream of them), where :func:`bind_request_id` would leak one into the next."""
    token = _request_id.set(request_id)
    try:
        yield
    finally:
        _request_id.reset(token)


def current_request_id() -> str:
    return _request_id.get()


def current_trace_id() -> str:
    """The current span's trace id (32 hex digits), else the bound request's, or "" when no span records one."""
    return _hex(trace.get_current_span().get_span_context()) or _trace_id.get()


def _hex(ctx: trace.SpanContext) -> str:
    return format(ctx.trace_id, "032x") if ctx.is_valid else ""
