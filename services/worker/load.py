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

from services.worker import metrics
from services.worker.engine import EngineLoad
from services.worker.step_learning import StepObserver
from tessera.v1 import common_pb2 as pb


@dataclass
class _Book:
    prompt_tokens: int
    generated: int = 0
    rank: int | None = None  # the DP rank the request was pinned to, if any


class LoadTracker:
    def __init__(self, ranks: list[int] | None = None, stall_s: float = 0.0) -> None:
        """ranks: the DP ranks of a data-parallel instance, reported one by one as well as summed.
        stall_s: how long the engine may hold requests without producing a token before the
        worker calls it hung (0: never)."""
        self.stall_s = stall_s
        self._last_progress = time.monotonic()
        self._stuck = False  # found hung: stays so until the engine produces a token again
        self._subscribers: set[asyncio.Event] = set()
        self.draining = False
        self._active: dict[str, _Book] = {}
        self._started = 0
        self.ranks = list(ranks or [])
        self._engines: dict[int, EngineLoad] = {}  # DP rank -> its engine core's latest step
        self._hit_rate = 0.0
        # Learns this machine's step times from the requests in the book (None: no performance model).
        self.steps: StepObserver | None = None
        self.kv_pulls_failed = 0  # since start, as the engine counted them (EngineLoad.kv_pulls_failed)

    def subscribe(self) -> asyncio.Event:
        """An event set on every change of load; each report stream holds its own."""
        event = asyncio.Event()
        self._subscribers.add(event)
        return event

    def unsubscribe(self, event: asyncio.Event) -> None:
        self._subscribers.discard(event)

    def notify(self) -> None:
        """Send a report now (something the schedulers must hear of changed)."""
        self._notify()

    def _notify(self) -> None:
        for event in self._subscribers:
            event.set()

    # -- the worker's book ---------------------------------------------------
    def started(self, request_id: str, prompt_tokens: int, rank: int | None = None, timed: bool = True) -> None:
        if not self._active:
            self._last_progress = time.monotonic()  # an idle engine owes nothing yet
        self._active[request_id] = _Book(prompt_tokens, rank=rank)
        self._started += 1
        if self.steps is not None:
            self.steps.started(request_id, prompt_tokens, timed)
        self._notify()

    def progressed(self, request_id: str, new_tokens: int, cached_prompt_tokens: int = 0) -> None:
        book = self._active.get(request_id)
        if book is not None:
            book.generated += new_tokens
        if self.steps is not None:
            self.steps.tokens(request_id, new_tokens, cached_prompt_tokens)
        self.engine_progressed()

    def engine_progressed(self) -> None:
        """The engine produced a token (for a request, or for the watchdog's probe)."""
        self._last_progress = time.monotonic()
        self._stuck = False

    def finished(self, request_id: str) -> None:
        if self.steps is not None:
            self.steps.finished(request_id)
        if self._active.pop(request_id, None) is not None:
            self._notify()

    @property
    def in_flight(self) -> int:
        return len(self._active)

    def stalled(self, now: float | None = None) -> bool:
        """The engine held requests and produced no token for any of them for stall_s: hung, until
        it produces one again (the routers' cancelled streams leave it idle, not mended)."""
        if self._stuck:
            return True
        if not self.stall_s or not self._active:
            return False
        if (time.monotonic() if now is None else now) - self._last_progress > self.stall_s:
            self._stuck = True
        return self._stuck

    def seconds_since_progress(self) -> float:
        return time.monotonic() - self._last_progress

    # -- the engine's figures ------------------------------------------------
    def engine_stats(self, stats: EngineLoad) -> None:
        before = self._engines.get(stats.data_parallel_rank, EngineLoad())
        changed = (stats.num_running, stats.num_waiting) != (before.num_running, before.num_waiting)
        self._engines[stats.data_parallel_rank] = stats
        if stats.kv_pulls_failed:
            self.kv_pulls_failed += stats.kv_pulls_failed
            metrics.KV_PULLS_FAILED.inc(stats.kv_pulls_failed)
            changed = True
        if stats.prefix_cache_queries:
            rate = stats.prefix_cache_hits / stats.prefix_cache_queries
            self._hit_rate = 0.8 * self._hit_rate + 0.2 * rate
        if changed:
            self._notify()

    def set_draining(self, draining: bool) -> None:
        self.draining = draining
        self._notify()

    def report(self, seq: int) -> pb.LoadReport:
        books = list(self._active.values())
        engines = list(self._engines.values())
        out = self._figures(
            books,
            sum(e.num_running for e in engines),
            sum(e.num_waiting for e in engines),
            sum(e.kv_cache_usage for e in engines) / len(engines) if engines else 0.0,
        )
        out.seq, out.timestamp_unix_ms = seq, int(time.time() * 1000)
        out.prefix_cache_hit_rate, out.draining, out.requests_started = self._hit_rate, self.draining, self._started
        out.stalled = self.stalled()
        if self.steps is not None:
            out.prefill_time_scale = self.steps.learner.learnt("prefill") or 0.0
            out.decode_time_scale = self.steps.learner.learnt("decode") or 0.0
        out.kv_pulls_failed = self.kv_pulls_failed
        if len(self.ranks) > 1:
            for rank in self.ranks:
                engine = self._engines.get(rank, EngineLoad())
                part = self._figures(
                    [b for b in books if b.rank == rank], engine.num_running, engine.num_waiting, engine.kv_cache_usage
                )
                part.data_parallel_rank = rank
                out.ranks.append(part)
        return out

    @staticmethod
    def _figures(books: list[_Book], engine_running: int, engine_waiting: int, kv_usage: float) -> pb.LoadReport:
        """The engine's figures, corrected by the worker's book (exact now; the engine's lag a step)."""
        active = len(books)
        running = min(engine_running, active)
        return pb.LoadReport(
            num_waiting=max(engine_waiting if active else 0, active - running),
            num_running=running,
            kv_cache_usage=kv_usage if active else 0.0,
            tokens_in_flight=sum(b.prompt_tokens + b.generated for b in books),
            prefill_tokens_waiting=sum(b.prompt_tokens for b in books if b.generated == 0),
        )
