"""What every Tessera service process does the same way: logging, tracing, uvloop, stop signals."""

from __future__ import annotations

import argparse
import asyncio
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from tessera.runtime.telemetry.logging import setup_logging
from tessera.runtime.telemetry.tracing import setup_tracing


def run_service(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    tracing: bool = True,
) -> int:
    """Set up logging (and OTLP tracing when configured), then run ``run(args)`` on uvloop."""
    import uvloop

    setup_logging(name, args.log_level)
    if tracing:
        setup_tracing(f"tessera-{name}")
    return uvloop.run(run(args))


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the service then shuts down in its own order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
