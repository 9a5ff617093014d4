"""One log format for all services, with one line per problem.

An exception logged with ``exc_info`` becomes ``... (ValueError: detail)`` on
the same line instead of a traceback; set ``TESSERA_DEBUG=1`` to see full
tracebacks while debugging.
"""

from __future__ import annotations

import logging
import os
import sys


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


def setup_logging(service: str, level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(OneLineFormatter(service))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aetcd", "grpc", "httpx", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    # A client's malformed traceparent/tracestate is ignored (tracing.client_context), which is no
    # problem of this service; OpenTelemetry's warning for each would let any client fill the log.
    for parser in ("opentelemetry.trace.span", "opentelemetry.trace.propagation.tracecontext"):
        logging.getLogger(parser).setLevel(logging.ERROR)
