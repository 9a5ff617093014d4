"""Admission control: when every worker of a model is saturated, requests wait here, in order.

The scheduler says a model is saturated when no worker passes its
`saturation` filter. The router then queues the request per model: a higher
priority class first, and within a class the earliest TTFT deadline first
(EDF). A request whose expected wait would already break its deadline is
refused at once with 429 and Retry-After, so the requests that are admitted
keep their SLO under overload instead of everyone missing it. The queue is
worked whenever a request finishes (a slot may have opened) and on a short
tick; its depth, waits and refusals are metrics.

The expected wait is the number of requests ahead, plus one, divided by the
rate at which this router has admitted requests of the model over the last
few seconds, which tracks what the fleet actually absorbs without a model of it.
Refusal is decided up front, from measurements taken with a margin: the
estimate is scaled by the 90th percentile of how far recent waits overran
their estimates (completions come in bursts), and the time a placed request
still needs to its first token is the 90th percentile of recent ones, not
their mean. A request admitted to the queue is then served, late if need be,
not turned into a 429 after it waited: a refusal is only worth something when
it comes at once (the client can go elsewhere), and the margin keeps the late
ones few. Only a waiter still queued GIVE_UP_OBJECTIVES objectives after it
arrived (a fleet that stopped absorbing anything) is refused. The exception is a
cold model, where no admission rate is measured yet (a burst on an idle
router): its waiters were queued on no evidence, so they are refused at their
deadline as they would have been without the queue.

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
when the head is still saturated, up to MAX_PROBES waiters with other
placement signatures (profile, objective, excluded workers, tenant) are
tried behind it in the same pass; and a new request unlike every waiter
tries a placement at once (a quiet tenant's request, which may use slots
the scheduler keeps from a tenant over its fair share).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import itertools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Hashable
from dataclasses import dataclass, field
from typing import TypeVar

from services.router import metrics
from services.router.errors import ApiError

log = logging.getLogger("tessera.router.admission")

T = TypeVar("T")  # what a placement attempt returns (the scheduler's PlaceResponse)

TICK_S = 0.025
MAX_PROBES = 4  # saturated placement attempts per queue per pass (the head and three behind it)
RATE_SPAN_S = 5.0  # the admission rate is what was admitted over the last this many seconds
MIN_RATE_SPAN_S = 1.0  # measured over less than this, a burst of admissions would read as a huge rate
MARGIN_QUANTILE = 0.9  # of recent waits and first-token times: what the up-front refusal plans for
RECENT = 64  # samples kept for those quantiles (about 10 s of admissions of a saturated small fleet)
RECENT_MAX_AGE_S = 30.0  # older samples are dropped: a margin learnt in a bad spell does not refuse forever
MIN_SAMPLES = 8  # fewer than this: no measured margin yet (a wait is as estimated)
MAX_MARGIN = 3.0  # the estimate is scaled by at most this: some requests still queue, so the margin is relearnt
GIVE_UP_OBJECTIVES = 10  # a waiter still queued this many objectives after arriving is refused


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
    give_up: float = field(compare=False)  # when a waiter still queued is refused after all
    enqueued: float = field(compare=False)
    signature: Hashable = field(compare=False, default=None)  # requests alike in where they may be placed
    estimate: float = field(compare=False, default=0.0)  # its wait as estimated on arrival, before the margin
    # Queued on a measured estimate (a promise to serve it, late if need be); without one (a cold
    # model, no admission rate measured yet) it is refused at its deadline as before.
    measured: bool = field(compare=False, default=True)
    deadline: float = field(compare=False, default=float("inf"))


class _Recent:
    """The last RECENT values of a measure from the last RECENT_MAX_AGE_S, for a high quantile."""

    def __init__(self) -> None:
        self.samples: deque[tuple[float, float]] = deque(maxlen=RECENT)  # (when, value)

    def add(self, value: float, now: float) -> None:
        self.samples.append((now, value))

    def quantile(self, q: float, now: float) -> float | None:
        """The q-quantile of the recent values; None below MIN_SAMPLES of them (no evidence yet)."""
        while self.samples and now - self.samples[0][0] > RECENT_MAX_AGE_S:
            self.samples.popleft()
        if len(self.samples) < MIN_SAMPLES:
            return None
        ordered = sorted(v for _, v in self.samples)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]

    def latest(self) -> float | None:
        return self.samples[-1][1] if self.samples else None


class _ModelQueue:
    def __init__(self) -> None:
        self.heap: list[_Waiter] = []
        self.admits: deque[float] = deque()  # when requests were admitted, over the last RATE_SPAN_S
        self.first_admit: float | None = None
        self.service = _Recent()  # placement to first token: what an admitted request still needs
        self.overrun = _Recent()  # waits of placed waiters over their estimates (1.0: as estimated)
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
        if self.first_admit is None:
            self.first_admit = now
        self.admits.append(now)
        self._forget_admits(now)

    def _forget_admits(self, now: float) -> None:
        while self.admits and now - self.admits[0] > RATE_SPAN_S:
            self.admits.popleft()

    def admit_rate(self, now: float) -> float:
        """Requests admitted per second over the last RATE_SPAN_S (what the fleet absorbs while
        saturated); 0 until admissions span MIN_RATE_SPAN_S. A count over a window, not an average
        of 1/gap, which a burst of admissions a millisecond apart would read as 1,000 a second."""
        self._forget_admits(now)
        span = 0.0 if self.first_admit is None else min(RATE_SPAN_S, now - self.first_admit)
        if span < MIN_RATE_SPAN_S:
            return 0.0
        return len(self.admits) / span

    def note_service(self, seconds: float, now: float) -> None:
        self.service.add(seconds, now)

    def service_s(self, now: float) -> float:
        """Placement to first token, as planned for: the 90th percentile of recent ones (the latest
        while there are few)."""
        q = self.service.quantile(MARGIN_QUANTILE, now)
        return q if q is not None else (self.service.latest() or 0.0)

    def note_waited(self, estimate: float, waited: float, now: float) -> None:
        if estimate > 0:
            self.overrun.add(waited / estimate, now)

    def estimate(self, ahead: int, now: float) -> float:
        """Seconds until a request with `ahead` requests before it is admitted, on average: it waits
        for ahead + 1 slots to free. Without a measured rate yet there is no evidence either way: 0."""
        rate = self.admit_rate(now)
        return (ahead + 1) / rate if rate > 0 else 0.0

    def margin(self, now: float) -> float:
        """How far recent waits overran their estimates (90th percentile, 1 to MAX_MARGIN; 1 until
        measured): completions come in bursts, and a request planned at the mean is late half the time."""
        overrun = self.overrun.quantile(MARGIN_QUANTILE, now)
        return 1.0 if overrun is None else min(MAX_MARGIN, max(1.0, overrun))

    def expected_wait(self, ahead: int, now: float) -> float:
        """The wait planned for: the estimate times the margin."""
        return self.estimate(ahead, now) * self.margin(now)


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
            q.note_service(since_placed_s, time.monotonic())

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
        # With nobody waiting, or nobody waiting that is placed alike (another tenant, profile or
        # objective), it tries at once: the waiters' finding no room says nothing about it.
        if not q.heap or (signature is not None and all(w.signature != signature for w in q.heap)):
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
        deadline = now + slo - q.service_s(now) if slo > 0 else float("inf")
        ahead = sum(1 for w in q.heap if w.key[0] <= -priority)
        estimate = q.estimate(ahead, now)
        wait = estimate * q.margin(now)
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
        give_up = now + GIVE_UP_OBJECTIVES * slo if slo > 0 else float("inf")
        waiter = _Waiter(
            (-priority, q.tag(tenant), deadline, next(self._seq)),
            future,
            give_up,
            now,
            signature,
            estimate,
            measured=q.admit_rate(now) > 0,
            deadline=deadline,
        )
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
            if not waiter.measured and now > waiter.deadline:
                # Queued with nothing measured to go by (a cold burst): no promise was made, and
                # serving it late would break the objective of every request admitted after it.
                _remove(q, waiter)
                metrics.REJECTED.labels(model, "deadline").inc()
                waiter.future.set_exception(
                    Overloaded(
                        f"{model} is saturated: this request could not start within its time-to-first-token objective",
                        max(1.0, q.expected_wait(len(q.heap), now)),
                    )
                )
                continue
            if now > waiter.give_up:  # past its deadline it is still served; this is the backstop
                _remove(q, waiter)
                metrics.REJECTED.labels(model, "gave_up").inc()
                waiter.future.set_exception(
                    Overloaded(
                        f"{model} stayed saturated for {GIVE_UP_OBJECTIVES}x this request's time-to-first-token "
                        "objective",
                        q.expected_wait(len(q.heap), now),
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
            now = time.monotonic()
            q.note_admitted(now)
            q.note_waited(waiter.estimate, now - waiter.enqueued, now)
            metrics.QUEUE_WAIT.labels(model).observe(now - waiter.enqueued)
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
