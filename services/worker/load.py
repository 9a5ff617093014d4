"""The worker's load, as the schedulers see it.

Two sources are combined: the engine's per-step scheduler figures (running,
waiting, KV-cache usage, prefix-cache hits) and the worker's own book of
requests it has accepted. The engine's figures lag by a step and stop coming
when it is idle; the book is exact at every instant, so a burst of requests
shows up in the next report even before the engine has stepped.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

from tessera.v1 import common_pb2 as pb
from services.worker.engine import EngineLoad


@dataclass
class _Book:
    prompt_tokens: int
    generated: int = 0


class LoadTracker:
    def __init__(self) -> None:
        self._subscribers: set[asyncio.Event] = set()
        self.draining = False
        self._active: dict[str, _Book] = {}
        self._started = 0
        self._engine = EngineLoad()
        self._hit_rate = 0.0

    def subscribe(self) -> asyncio.Event:
        """An event set on every change of load; each report stream holds its own."""
        event = asyncio.Event()
        self._subscribers.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._subscribers.discard(event)

    def _notify(self) -> None:
        for event in self._subscribers:
            event.set()

    # -- the worker's book ---------------------------------------------------
    def started(self, request_id: str, prompt_tokens: int) -> None:
        self._active[request_id] = _Book(prompt_tokens)
        self._started += 1
        self._notify()

    def progressed(self, request_id: str, new_tokens: int) -> None:
        book = self._active.get(request_id)
        if book is not None:
            book.generated += new_tokens

    def finished(self, request_id: str) -> None:
        if self._active.pop(request_id, None) is not None:
            self._notify()

    @property
    def in_flight(self) -> int:
        return len(self._active)

    # -- the engine's figures ------------------------------------------------
    def engine_stats(self, stats: EngineLoad) -> None:
        changed = (stats.num_running, stats.num_waiting) != (self._engine.num_running, self._engine.num_waiting)
        self._engine = stats
        if stats.prefix_cache_queries:
            rate = stats.prefix_cache_hits / stats.prefix_cache_queries
            self._hit_rate = 0.8 * self._hit_rate + 0.2 * rate
        if changed:
            self._notify()

    def set_draining(self, draining: bool) -> None:
        self.draining = draining
        self._notify()

    def report(self, seq: int) -> pb.LoadReport:
        active = len(self._active)
        running = min(self._engine.num_running, active)
        waiting = max(self._engine.num_waiting if active else 0, active - running)
        return pb.LoadReport(
            seq=seq,
            timestamp_unix_ms=int(time.time() * 1000),
            num_waiting=waiting,
            num_running=running,
            kv_cache_usage=self._engine.kv_cache_usage if active else 0.0,
            tokens_in_flight=sum(b.prompt_tokens + b.generated for b in self._active.values()),
            prefill_tokens_waiting=sum(b.prompt_tokens for b in self._active.values() if b.generated == 0),
            prefix_cache_hit_rate=self._hit_rate,
            draining=self.draining,
            requests_started=self._started,
        )
