"""What every Tessera service process does the same way: logging, TLS, tracing, uvloop, stop signals."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from collections.abc import Callable, Coroutine
from typing import Any

from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.rpc import tls
from tessera.runtime.telemetry.event_loop import watch_event_loop
from tessera.runtime.telemetry.logging import setup_logging
from tessera.runtime.telemetry.tracing import setup_tracing


def run_service(
    name: str,
    args: argparse.Namespace,
    run: Callable[[argparse.Namespace], Coroutine[Any, Any, int]],
    tracing: bool = True,
    internal: bool = True,
) -> int:
    """Set up logging, TLS (and OTLP tracing when configured), then run ``run(args)`` on uvloop.

    An ``internal`` service's API is for the cluster only: without TLS it may bind only loopback
    unless ``--insecure`` is given (exit code 2 otherwise). The router's is public (``internal=False``).
    """
    import uvloop

    setup_logging(name, args.log_level)
    try:
        tls.configure(args, args.host if internal else None)
        etcd_tls.configure(args)
    except (tls.TLSConfigError, etcd_tls.EtcdTLSError) as exc:
        logging.getLogger(f"tessera.{name}").error("%s", exc)
        return 2
    if tracing:
        setup_tracing(f"tessera-{name}")

    async def main() -> int:
        watch_event_loop()
        return await run(args)

    return uvloop.run(main())


def stop_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT: the service then shuts down in its own order."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    return stop
