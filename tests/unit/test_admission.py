"""Admission control at the router: EDF order within priority classes, refusal when a deadline cannot be met."""

from __future__ import annotations

import asyncio

import pytest

from services.router.admission import AdmissionControl, Overloaded, Saturated


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


async def test_a_request_that_would_miss_its_deadline_is_refused_at_once():
    ac = AdmissionControl(ttft_slo_s=1.0)
    fleet = Fleet(free=3)
    for i in range(3):  # the fleet absorbs about 5 requests/s
        await ac.admit("m", 0, fleet.placer(f"warm{i}"))
        await asyncio.sleep(0.2)
    queued = [asyncio.create_task(ac.admit("m", 0, fleet.placer(f"q{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert ac.depth("m") == 3
    # 3 ahead at ~5/s: about 0.8 s, inside 1 s; with 5 ahead it would not be
    queued += [asyncio.create_task(ac.admit("m", 0, fleet.placer(f"q{i}"))) for i in range(3, 5)]
    await asyncio.sleep(0.01)
    late = asyncio.create_task(ac.admit("m", 0, fleet.placer("late")))
    with pytest.raises(Overloaded) as exc:
        await late
    assert exc.value.status == 429 and exc.value.retry_after >= 1
    assert "time-to-first-token" in exc.value.message
    # nothing is released: the queued ones are refused when their deadlines pass
    results = await asyncio.gather(*queued, return_exceptions=True)
    assert all(isinstance(r, Overloaded) for r in results), results
    assert sum("past this request" in r.message for r in results) >= 3, [r.message for r in results]
    await ac.close()


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
    """With 0.6 s from placement to first token measured, a 1 s objective leaves 0.4 s to wait:
    a request that must queue behind one other (about 0.2 s each at 5/s) is still taken, but one
    behind three is refused at once rather than admitted to miss its objective."""
    ac = AdmissionControl(ttft_slo_s=1.0)
    fleet = Fleet(free=3)
    for i in range(3):
        await ac.admit("m", 0, fleet.placer(f"warm{i}"))
        await asyncio.sleep(0.2)
    ac.first_token("m", 0.6)
    first = asyncio.create_task(ac.admit("m", 0, fleet.placer("q0")))
    await asyncio.sleep(0.01)
    assert ac.depth("m") == 1  # expected wait 2 / 5 per s = 0.4 s: just in time
    second = asyncio.create_task(ac.admit("m", 0, fleet.placer("q1")))
    await asyncio.sleep(0.01)
    assert second.done()  # refused on arrival, not after waiting out its objective
    with pytest.raises(Overloaded):
        await second  # expected 0.6 s of waiting + 0.6 s to the first token > 1 s
    assert ac.depth("m") == 1
    fleet.release(ac)
    assert await first == "q0"
    await ac.close()
