"""Admission control: when every worker of a model is saturated, requests wait here, in order.

The scheduler says a model is saturated when no worker passes its
`saturation` filter. The router then queues the request per model: a higher
priority class first, and within a class the earliest TTFT deadline first
(EDF). A request whose expected wait would already break its deadline is
refused at once with 429 and Retry-After, so the requests that are admitted
keep their SLO under overload instead of everyone missing it. The queue is
worked whenever a request finishes (a slot may have opened) and on a short
tick; its depth, waits and refusals are metrics.

The expected wait is the number of requests ahead divided by the recent rate
at which this router has admitted requests of the model (an EWMA), which
tracks what the fleet actually absorbs without a model of it.

Tenants share a priority class fairly (start-time fair queueing): each
waiting request of a named tenant gets a virtual start tag, one past the
later of the queue's virtual time and that tenant's last tag, and tags
order the class before deadlines do. A tenant that floods the queue thus
waits behind its own backlog, while a quiet tenant's next request goes to
the front of its class. Requests without a tenant (an open router) keep
pure deadline order.

Nobody waits behind a request that cannot be placed for reasons of its own:
each model's queue is worked by its own task, so one model's slow placement
holds up no other model; a waiter whose client left is taken out at once;
and when the head is still saturated, up to MAX_PROBES waiters with other
placement signatures (profile, objective, excluded workers) are tried
behind it in the same pass.
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from services.router import metrics
from services.router.errors import ApiError

log = logging.getLogger("tessera.router.admission")

T = TypeVar("T")  # what a placement attempt returns (the scheduler's PlaceResponse)

TICK_S = 0.025
RATE_HALF_LIFE_S = 5.0
MAX_PROBES = 4  # saturated placement attempts per queue per pass (the head and three behind it)


class Overloaded(ApiError):
    """The model is saturated and this request would miss its deadline (or the queue is full)."""

    status = 429
    type = "rate_limit_error"

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, code="overloaded", retry_after=float(min(60, max(1, round(min(retry_after, 60))))))


class Saturated(Exception):
    """Raised by a placement attempt when the scheduler found every worker saturated (its reason
    as the message): the request waits in the queue instead of failing."""


@dataclass(order=True)
class _Waiter:
    key: tuple[int, float, float, int]  # (-priority, fair-queueing tag, deadline, arrival)
    future: asyncio.Future = field(compare=False)
    deadline: float = field(compare=False)
    enqueued: float = field(compare=False)
    signature: Hashable = field(compare=False, default=None)  # requests alike in where they may be placed


class _ModelQueue:
    def __init__(self) -> None:
        self.heap: list[_Waiter] = []
        self.admit_rate = 0.0  # requests admitted per second while saturated (EWMA)
        self.last_admit = 0.0
        self.service_s = 0.0  # placement to first token (EWMA): what an admitted request still needs
        self.vtime = 0.0  # fair queueing: the tag of the last request admitted
        self.tags: dict[str, float] = {}  # tenant -> the tag of its last request queued

    def tag(self, tenant: str) -> float:
        """The virtual start tag of a new request of `tenant` (0 without a tenant: deadline order)."""
        if not tenant:
            return 0.0
        tag = max(self.vtime, self.tags.get(tenant, 0.0)) + 1.0
        self.tags[tenant] = tag
        if len(self.tags) > 4096:  # forget tenants that fell behind the virtual time
            self.tags = {t: v for t, v in self.tags.items() if v > self.vtime}
        return tag

    def note_admitted(self, now: float) -> None:
        if self.last_admit:
            gap = max(1e-3, now - self.last_admit)
            if self.admit_rate == 0.0:
                self.admit_rate = 1.0 / gap
            else:
                weight = 1.0 - 0.5 ** (gap / RATE_HALF_LIFE_S)
                self.admit_rate = (1 - weight) * self.admit_rate + weight * (1.0 / gap)
        self.last_admit = now

    def note_service(self, seconds: float) -> None:
        self.service_s = seconds if self.service_s == 0.0 else 0.8 * self.service_s + 0.2 * seconds

    def expected_wait(self, ahead: int) -> float:
        """Seconds until a request with `ahead` requests before it is admitted. Without a measured
        rate yet there is no evidence either way: 0, and the deadline check while waiting decides."""
        if ahead == 0 or self.admit_rate <= 0:
            return 0.0
        return (ahead + 1) / self.admit_rate


class AdmissionControl:
    """Per-model queues in front of placement. `place` is the router's placement call: it
    returns a placement or raises Saturated."""

    def __init__(self, ttft_slo_s: float = 0.0, max_queue: int = 1024) -> None:
        self.ttft_slo_s = ttft_slo_s
        self.max_queue = max_queue
        self._queues: dict[str, _ModelQueue] = {}
        self._seq = itertools.count()
        self._kick = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._placers: dict[int, Callable[[], Awaitable[object]]] = {}
        self._draining: dict[str, asyncio.Task] = {}  # model -> the task working its queue now

    def start(self) -> None:
        self._task = asyncio.create_task(self._work(), name="admission")

    async def close(self) -> None:
        tasks = [t for t in (self._task, *self._draining.values()) if t is not None]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for q in self._queues.values():
            for w in q.heap:
                if not w.future.done():
                    w.future.set_exception(Overloaded("the router is shutting down", 1.0))

    def first_token(self, model: str, since_placed_s: float) -> None:
        """How long a placed request of `model` took to its first token (feeds the wait budget)."""
        q = self._queues.get(model)
        if q is not None:
            q.note_service(since_placed_s)

    def released(self) -> None:
        """A request finished: capacity may have opened."""
        if any(q.heap for q in self._queues.values()):
            self._kick.set()

    def depth(self, model: str) -> int:
        q = self._queues.get(model)
        return len(q.heap) if q else 0

    async def admit(
        self,
        model: str,
        priority: int,
        place: Callable[[], Awaitable[T]],
        slo_s: float | None = None,
        signature: Hashable = None,
        tenant: str = "",
    ) -> T:
        """A placement for the request, now or after waiting its turn; Overloaded if it cannot be in time."""
        q = self._queues.setdefault(model, _ModelQueue())
        now = time.monotonic()
        if not q.heap:
            try:
                result = await place()
                q.note_admitted(time.monotonic())
                return result
            except Saturated:
                pass
        slo = self.ttft_slo_s if slo_s is None else slo_s
        # The latest moment it can still be placed and meet its objective: after placement the
        # request still needs its prefill and first token (measured), so waiting until the
        # objective itself would admit requests only to miss it.
        deadline = now + slo - q.service_s if slo > 0 else float("inf")
        ahead = sum(1 for w in q.heap if w.key[0] <= -priority)
        wait = q.expected_wait(ahead)
        if len(q.heap) >= self.max_queue:
            metrics.REJECTED.labels(model, "queue_full").inc()
            raise Overloaded(f"{model} is saturated and {len(q.heap)} requests are already waiting", wait or 1.0)
        if now + wait > deadline:
            metrics.REJECTED.labels(model, "deadline").inc()
            raise Overloaded(
                f"{model} is saturated: the expected wait of {wait:.1f}s would break the "
                f"{slo:.1f}s time-to-first-token objective",
                wait,
            )
        future = asyncio.get_running_loop().create_future()
        waiter = _Waiter((-priority, q.tag(tenant), deadline, next(self._seq)), future, deadline, now, signature)
        self._placers[id(future)] = place
        heapq.heappush(q.heap, waiter)
        metrics.QUEUE_DEPTH.labels(model).set(len(q.heap))
        if self._task is None:
            self.start()
        self._kick.set()
        try:
            return await future
        finally:
            self._placers.pop(id(future), None)
            if not future.done():
                future.cancel()
            if future.cancelled():  # the client left: it no longer counts against max_queue
                _remove(q, waiter)
                metrics.QUEUE_DEPTH.labels(model).set(len(q.heap))

    async def _work(self) -> None:
        while True:
            try:
                await asyncio.wait_for(self._kick.wait(), TICK_S)
            except TimeoutError:
                pass
            self._kick.clear()
            for model, q in self._queues.items():
                if q.heap and model not in self._draining:
                    task = asyncio.create_task(self._drain(model, q), name=f"admission:{model}")
                    self._draining[model] = task
                    task.add_done_callback(functools.partial(self._drained, model))

    def _drained(self, model: str, _task: asyncio.Task) -> None:
        self._draining.pop(model, None)

    async def _drain(self, model: str, q: _ModelQueue) -> None:
        """Admit what can be placed now, in queue order, trying past a saturated head."""
        saturated: set[Hashable] = set()  # signatures found saturated in this pass
        probes = 0
        for waiter in sorted(q.heap):
            if probes >= MAX_PROBES:
                break
            now = time.monotonic()
            if waiter.future.done():
                _remove(q, waiter)
                continue
            if now > waiter.deadline:
                _remove(q, waiter)
                metrics.REJECTED.labels(model, "deadline").inc()
                waiter.future.set_exception(
                    Overloaded(
                        f"{model} stayed saturated past this request's time-to-first-token objective",
                        q.expected_wait(len(q.heap)),
                    )
                )
                continue
            if waiter.signature is not None and waiter.signature in saturated:
                continue  # placed alike to one that just found no room
            place = self._placers.get(id(waiter.future))
            if place is None:
                _remove(q, waiter)
                continue
            probes += 1
            try:
                result = await place()
            except Saturated:
                if waiter.signature is None:
                    break  # nothing says the others would fare better
                saturated.add(waiter.signature)
                continue
            except Exception as exc:  # noqa: BLE001 - the waiting request gets the error, not the loop
                _remove(q, waiter)
                if not waiter.future.done():
                    waiter.future.set_exception(exc)
                continue
            _remove(q, waiter)
            q.vtime = max(q.vtime, waiter.key[1])
            q.note_admitted(time.monotonic())
            metrics.QUEUE_WAIT.labels(model).observe(time.monotonic() - waiter.enqueued)
            if not waiter.future.done():
                waiter.future.set_result(result)
            probes -= 1  # a placement is progress, not a probe
        metrics.QUEUE_DEPTH.labels(model).set(len(q.heap))


def _remove(q: _ModelQueue, waiter: _Waiter) -> None:
    """Take a waiter out of its queue wherever it stands (O(n): queues are short, removals rare)."""
    for i, w in enumerate(q.heap):
        if w is waiter:
            q.heap[i] = q.heap[-1]
            q.heap.pop()
            if i < len(q.heap):
                heapq.heapify(q.heap)
            return
