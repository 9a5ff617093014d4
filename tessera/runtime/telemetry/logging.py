"""One log format for all services, with one line per problem.

An exception logged with ``exc_info`` becomes ``... (ValueError: detail)`` on
the same line instead of a traceback; set ``TESSERA_DEBUG=1`` to see full
tracebacks while debugging.

``TESSERA_LOG_FORMAT=json`` makes every line one JSON object (for a log
pipeline: Loki, Elasticsearch, Cloud Logging), with the ``request_id`` and
``trace_id`` of the request being handled when there is one
(:mod:`tessera.runtime.telemetry.log_context`).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from datetime import UTC, datetime

from tessera.runtime.telemetry.log_context import current_request_id, current_trace_id

FORMAT_ENV = "TESSERA_LOG_FORMAT"


class OneLineFormatter(logging.Formatter):
    def __init__(self, service: str) -> None:
        super().__init__(f"%(asctime)s %(levelname)s {service}[%(process)d] %(name)s: %(message)s")
        self.full_tracebacks = os.environ.get("TESSERA_DEBUG") == "1"

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info and not self.full_tracebacks:
            exc = record.exc_info[1]
            record = logging.makeLogRecord(record.__dict__)
            record.msg = f"{record.getMessage()} ({type(exc).__name__}: {exc})"
            record.args = None
            record.exc_info = None
            record.exc_text = None
        return super().format(record).replace("\n", " | ")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, service, pid, logger, message; the request's ids if any."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service
        self.full_tracebacks = os.environ.get("TESSERA_DEBUG") == "1"

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "service": self.service,
            "pid": record.process,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id, trace_id = current_request_id(), current_trace_id()
        if request_id:
            out["request_id"] = request_id
        if trace_id:
            out["trace_id"] = trace_id
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            out["error"] = f"{type(exc).__name__}: {exc}"
            if self.full_tracebacks:
                out["traceback"] = self.formatException(record.exc_info)
        return json.dumps(out, ensure_ascii=False, default=str)


def make_formatter(service: str) -> logging.Formatter:
    """The formatter ``TESSERA_LOG_FORMAT`` asks for: ``json``, else the one-line text format."""
    if os.environ.get(FORMAT_ENV, "").strip().lower() == "json":
        return JsonFormatter(service)
    return OneLineFormatter(service)


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(make_formatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aetcd", "grpc", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A client's malformed traceparent/tracestate is ignored (tracing.client_context), which is no
    # problem of this service; OpenTelemetry's warning for each would let any client fill the log.
    for parser in ("opentelemetry.trace.span", "opentelemetry.trace.propagation.tracecontext"):
        logging.getLogger(parser).setLevel(logging.ERROR)
