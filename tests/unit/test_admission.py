"""Admission control at the router: EDF order within priority classes, refusal up front when a deadline
cannot be met, late service (not refusal) once admitted."""

from __future__ import annotations

import asyncio
import time

import pytest

from services.router.admission import (
    MAX_MARGIN,
    MIN_SAMPLES,
    RECENT,
    RECENT_MAX_AGE_S,
    AdmissionControl,
    Overloaded,
    Saturated,
    _ModelQueue,
)


class Fleet:
    """A stand-in for placement: `free` slots; placing takes one, releasing gives it back."""

    def __init__(self, free: int) -> None:
        self.free = free
        self.order: list[str] = []

    def placer(self, name: str):
        async def place():
            if self.free <= 0:
                raise Saturated("every worker is saturated")
            self.free -= 1
            self.order.append(name)
            return name

        return place

    def release(self, ac: AdmissionControl) -> None:
        self.free += 1
        ac.released()


async def test_waiting_requests_go_by_priority_then_earliest_deadline():
    ac = AdmissionControl(ttft_slo_s=0.0)
    fleet = Fleet(free=1)
    assert await ac.admit("m", 0, fleet.placer("first")) == "first"
    waits = [
        asyncio.create_task(ac.admit("m", prio, fleet.placer(name), slo))
        for name, prio, slo in (("late", 0, 50.0), ("soon", 0, 5.0), ("vip", 1, 60.0), ("none", 0, 0.0))
    ]
    await asyncio.sleep(0.05)
    assert ac.depth("m") == 4
    for _ in range(4):
        fleet.release(ac)
        await asyncio.sleep(0.05)
    assert await asyncio.gather(*waits) == ["late", "soon", "vip", "none"]
    assert fleet.order == ["first", "vip", "soon", "late", "none"]  # no deadline sorts last
    await ac.close()


async def test_a_request_that_would_miss_its_deadline_is_refused_at_once_and_an_admitted_one_is_served_late():
    ac = AdmissionControl(ttft_slo_s=1.0)
    fleet = Fleet(free=3)
    for i in range(3):  # the fleet absorbs about 2.5 requests/s
        await ac.admit("m", 0, fleet.placer(f"warm{i}"))
        await asyncio.sleep(0.4)
    queued = [asyncio.create_task(ac.admit("m", 0, fleet.placer(f"q{i}"))) for i in range(2)]
    await asyncio.sleep(0.01)
    assert ac.depth("m") == 2  # 1 or 2 slots must free at ~2.5/s: 0.4 or 0.8 s, inside 1 s
    late = asyncio.create_task(ac.admit("m", 0, fleet.placer("late")))
    await asyncio.sleep(0.01)
    assert late.done()  # 3 slots: 1.2 s, refused on arrival, not after waiting
    with pytest.raises(Overloaded) as exc:
        await late
    assert exc.value.status == 429 and exc.value.retry_after >= 1
    assert "time-to-first-token" in exc.value.message
    # Nothing is released for longer than the objective: the queued ones are late now, and still
    # waiting, not refused after having waited; they are served once slots free.
    await asyncio.sleep(1.2)
    assert ac.depth("m") == 2 and not any(t.done() for t in queued)
    for _ in range(2):
        fleet.release(ac)
    assert await asyncio.wait_for(asyncio.gather(*queued), 2.0) == ["q0", "q1"]
    await ac.close()


def measured(ac: AdmissionControl, model: str, per_s: float) -> None:
    """The model's queue as if it had admitted ``per_s`` requests a second for the last 1.2 s."""
    q = ac._queues.setdefault(model, _ModelQueue())
    now = time.monotonic()
    for i in range(int(per_s * 1.2)):
        q.note_admitted(now - 1.2 + i / per_s)


async def test_a_waiter_the_fleet_never_reaches_is_refused_after_ten_objectives():
    ac = AdmissionControl(ttft_slo_s=0.05)
    fleet = Fleet(free=0)
    measured(ac, "m", 100.0)  # queued on a measured estimate (10 ms): a promise, kept until the backstop
    start = time.monotonic()
    with pytest.raises(Overloaded, match="10x"):
        await asyncio.wait_for(ac.admit("m", 0, fleet.placer("never")), 2.0)
    assert 0.5 <= time.monotonic() - start < 1.5
    assert ac.depth("m") == 0
    await ac.close()


def test_the_planned_wait_grows_with_how_far_recent_waits_overran_their_estimates():
    q = _ModelQueue()
    for t in range(10):  # 5 admissions a second for 2 s
        q.note_admitted(t * 0.2)
    now = 2.0
    assert q.expected_wait(1, now) == pytest.approx(0.4)  # 2 slots at 5/s, nothing measured yet
    for _ in range(MIN_SAMPLES - 1):
        q.note_waited(0.2, 0.5, now)
    assert q.expected_wait(1, now) == pytest.approx(0.4)  # too few waits to go by
    q.note_waited(0.2, 0.5, now)
    assert q.expected_wait(1, now) == pytest.approx(1.0)  # recent waits took 2.5x their estimates
    for _ in range(RECENT):
        q.note_waited(0.2, 0.1, now)
    assert q.expected_wait(1, now) == pytest.approx(0.4)  # back to the estimate, never below it
    for _ in range(RECENT):
        q.note_waited(0.2, 10.0, now)
    assert q.expected_wait(1, now) == pytest.approx(0.4 * MAX_MARGIN)  # capped: some still queue
    assert q.expected_wait(1, now + RECENT_MAX_AGE_S + 1) == 0.0  # and it is forgotten (so is the rate)


def test_a_burst_of_admissions_is_not_read_as_a_huge_rate():
    q = _ModelQueue()
    for i in range(8):  # eight slots taken within a millisecond
        q.note_admitted(100.0 + i * 1e-4)
    assert q.admit_rate(100.001) == 0.0  # no evidence yet: measured over too short a time
    q.note_admitted(101.5)
    assert q.admit_rate(101.5) == pytest.approx(9 / 1.5)


def test_the_time_to_first_token_planned_for_is_a_high_percentile_of_recent_ones():
    q = _ModelQueue()
    q.note_service(0.3, 0.0)
    assert q.service_s(0.0) == pytest.approx(0.3)
    for i in range(54):
        q.note_service(0.2, i * 0.01)
    for _ in range(10):
        q.note_service(0.9, 1.0)  # one in six is slow: the plan is for it, not for the mean of 0.3
    assert q.service_s(1.0) == pytest.approx(0.9)


async def test_a_full_queue_refuses_and_a_cancelled_waiter_leaves_it():
    ac = AdmissionControl(max_queue=2)
    fleet = Fleet(free=0)
    waiting = [asyncio.create_task(ac.admit("m", 0, fleet.placer(str(i)))) for i in range(2)]
    await asyncio.sleep(0.01)
    with pytest.raises(Overloaded, match="already waiting"):
        await ac.admit("m", 0, fleet.placer("x"))
    waiting[0].cancel()
    fleet.release(ac)
    assert await asyncio.wait_for(waiting[1], 2.0) == "1"
    await ac.close()


async def test_a_client_that_leaves_stops_counting_against_the_queue_at_once():
    ac = AdmissionControl(max_queue=2)
    fleet = Fleet(free=0)
    waiting = [asyncio.create_task(ac.admit("m", 0, fleet.placer(str(i)))) for i in range(2)]
    await asyncio.sleep(0.01)
    waiting[0].cancel()
    waiting[1].cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert ac.depth("m") == 0  # not lazily, when they would have reached the head
    late = asyncio.create_task(ac.admit("m", 0, fleet.placer("late")))
    await asyncio.sleep(0.01)
    assert not late.done()  # queued, not refused as "already waiting"
    fleet.release(ac)
    assert await asyncio.wait_for(late, 2.0) == "late"
    await ac.close()


async def test_a_head_that_cannot_be_placed_does_not_hold_up_requests_that_can():
    ac = AdmissionControl()
    fleet = Fleet(free=0)

    async def never():  # e.g. a request whose own objective no worker can meet
        raise Saturated("no worker meets this request's objective")

    head = asyncio.create_task(ac.admit("m", 5, never, signature="strict"))
    await asyncio.sleep(0.01)
    behind = asyncio.create_task(ac.admit("m", 0, fleet.placer("behind"), signature="plain"))
    await asyncio.sleep(0.01)
    fleet.release(ac)
    assert await asyncio.wait_for(behind, 2.0) == "behind"
    assert not head.done() and ac.depth("m") == 1
    head.cancel()
    await ac.close()


async def test_one_models_slow_placement_does_not_hold_up_another_model():
    ac = AdmissionControl()
    slow_fleet, fast_fleet = Fleet(free=0), Fleet(free=0)
    gate = asyncio.Event()

    async def slow():
        await gate.wait()  # a placement that takes long (a scheduler slow to answer)
        return "slow"

    blocked = [asyncio.create_task(ac.admit("a", 0, slow_fleet.placer("a0")))]
    await asyncio.sleep(0.01)
    blocked.append(asyncio.create_task(ac.admit("a", 0, slow)))
    fast = asyncio.create_task(ac.admit("b", 0, fast_fleet.placer("b0")))
    await asyncio.sleep(0.01)
    slow_fleet.release(ac)  # model a's queue now works on a head that takes long
    await asyncio.sleep(0.05)
    fast_fleet.release(ac)
    assert await asyncio.wait_for(fast, 1.0) == "b0"
    gate.set()
    assert await asyncio.wait_for(asyncio.gather(*blocked), 2.0) == ["a0", "slow"]
    await ac.close()


async def test_a_quiet_tenant_is_not_starved_by_a_noisy_one_in_the_same_class():
    ac = AdmissionControl()
    fleet = Fleet(free=0)
    noisy = [asyncio.create_task(ac.admit("m", 0, fleet.placer(f"noisy{i}"), tenant="noisy")) for i in range(20)]
    await asyncio.sleep(0.01)
    quiet = [asyncio.create_task(ac.admit("m", 0, fleet.placer(f"quiet{i}"), tenant="quiet")) for i in range(2)]
    await asyncio.sleep(0.01)
    for _ in range(6):
        fleet.release(ac)
        await asyncio.sleep(0.03)
    # both quiet requests are among the first places: they alternate with the noisy backlog
    assert set(fleet.order[:4]) >= {"quiet0", "quiet1"}, fleet.order
    for t in noisy + quiet:
        t.cancel()
    await ac.close()


async def test_without_tenants_the_order_is_by_deadline():
    ac = AdmissionControl()
    fleet = Fleet(free=0)
    late = asyncio.create_task(ac.admit("m", 0, fleet.placer("late"), 50.0))
    soon = asyncio.create_task(ac.admit("m", 0, fleet.placer("soon"), 5.0))
    await asyncio.sleep(0.01)
    for _ in range(2):
        fleet.release(ac)
        await asyncio.sleep(0.03)
    assert fleet.order == ["soon", "late"]
    await asyncio.gather(late, soon)
    await ac.close()


async def test_the_wait_budget_leaves_room_for_the_time_to_first_token():
    """With 0.5 s from placement to first token measured, a 1 s objective leaves 0.5 s to wait:
    a request that waits for one slot to free (about 0.4 s at 2.5/s) is still taken, but one that
    waits for two is refused at once rather than admitted to miss its objective."""
    ac = AdmissionControl(ttft_slo_s=1.0)
    fleet = Fleet(free=3)
    for i in range(3):
        await ac.admit("m", 0, fleet.placer(f"warm{i}"))
        await asyncio.sleep(0.4)
    ac.first_token("m", 0.5)
    first = asyncio.create_task(ac.admit("m", 0, fleet.placer("q0")))
    await asyncio.sleep(0.01)
    assert ac.depth("m") == 1  # expected wait 1 / 2.5 per s = 0.4 s: in time
    second = asyncio.create_task(ac.admit("m", 0, fleet.placer("q1")))
    await asyncio.sleep(0.01)
    assert second.done()  # refused on arrival, not after waiting out its objective
    with pytest.raises(Overloaded):
        await second  # expected 0.8 s of waiting + 0.5 s to the first token > 1 s
    assert ac.depth("m") == 1
    fleet.release(ac)
    assert await first == "q0"
    await ac.close()


async def test_a_request_unlike_every_waiter_is_tried_at_once():
    ac = AdmissionControl()
    fleet = Fleet(free=0)

    async def reserved():  # a slot the scheduler keeps for tenants below their share
        return "quiet"

    noisy = [asyncio.create_task(ac.admit("m", 0, fleet.placer(f"n{i}"), signature="noisy")) for i in range(3)]
    await asyncio.sleep(0.01)
    assert await asyncio.wait_for(ac.admit("m", 0, reserved, signature="quiet"), 0.05) == "quiet"
    alike = asyncio.create_task(ac.admit("m", 0, fleet.placer("n3"), signature="noisy"))
    await asyncio.sleep(0.01)
    assert not alike.done() and ac.depth("m") == 4  # one placed alike to the waiters waits its turn
    for t in [*noisy, alike]:
        t.cancel()
    await ac.close()


async def test_a_cold_burst_is_refused_at_its_deadline_not_served_late():
    """Nothing measured yet (an idle router hit by a burst): a waiter queued on no evidence gets its
    429 at its deadline, so it does not start late and push every later request past its objective."""
    ac = AdmissionControl(ttft_slo_s=0.2)
    fleet = Fleet(free=0)
    start = time.monotonic()
    with pytest.raises(Overloaded, match="could not start within"):
        await asyncio.wait_for(ac.admit("m", 0, fleet.placer("cold")), 2.0)
    assert 0.15 <= time.monotonic() - start < 0.6
    assert ac.depth("m") == 0
    await ac.close()
