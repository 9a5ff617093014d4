"""The event loop's own gauge: how many asyncio tasks a service holds.

A task that is never finished (a stream nobody closes, a waiter nobody wakes)
is a leak that memory shows only slowly; the task count shows it at once. The
soak benchmark (benchmarks/soak.py) watches it, with the process collector's
resident memory and open file descriptors, for every service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

from prometheus_client import REGISTRY
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

TASKS = "tessera_event_loop_tasks"


class EventLoopCollector(Collector):
    """Counts the loop's tasks when scraped (from the metrics thread: all_tasks copies the set safely)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def collect(self) -> Iterator[GaugeMetricFamily]:
        try:
            n = len(asyncio.all_tasks(self.loop))
        except RuntimeError:  # the set changed size too often while copying: skip this scrape
            return
        yield GaugeMetricFamily(TASKS, "asyncio tasks alive in the service's event loop", value=n)


def watch_event_loop() -> None:
    """Export the running loop's task count (once per process)."""
    if not getattr(watch_event_loop, "registered", False):
        REGISTRY.register(EventLoopCollector(asyncio.get_running_loop()))
        watch_event_loop.registered = True  # type: ignore[attr-defined]
