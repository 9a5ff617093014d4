"""Scale-down drains: the drain command (Kubernetes' preStop hook) and the local actuator.

The worker side is the real Worker gRPC servicer and load tracker, with no
engine behind them (Drain never touches it): requests are "in flight" because
the tracker says so, and finish when the test says so.
"""

from __future__ import annotations

import asyncio
import time

from services.autoscaler.actuator import Actuator
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.drain import drain_worker
from services.autoscaler.local_actuator import LocalActuator
from services.autoscaler.local_processes import Instance
from tessera.v1 import common_pb2 as pb


async def test_drain_stops_new_requests_and_waits_for_in_flight_ones(worker):
    address, tracker = worker
    tracker.started("a", 10)
    tracker.started("b", 10)
    drain = asyncio.create_task(drain_worker(address, timeout_s=10, poll_s=0.05))
    await asyncio.sleep(0.3)
    assert tracker.draining and not drain.done()
    tracker.finished("a")
    await asyncio.sleep(0.2)
    assert not drain.done()
    tracker.finished("b")
    assert await asyncio.wait_for(drain, 2) == 0


async def test_drain_gives_up_after_its_timeout_and_says_what_is_left(worker):
    address, tracker = worker
    tracker.started("slow", 10)
    started = time.monotonic()
    assert await drain_worker(address, timeout_s=0.5, poll_s=0.05) == 1
    assert time.monotonic() - started < 2


async def test_an_unreachable_worker_counts_as_drained():
    assert await drain_worker("127.0.0.1:9", timeout_s=5) == 0


class FakeProcesses:
    """The local actuator's process launcher, in memory."""

    def __init__(self) -> None:
        self._instances: dict[str, Instance] = {}
        self.stopped: list[str] = []

    def launch(self, group: WorkerGroup) -> Instance:
        inst = Instance(f"{group.name}-{len(self._instances)}", group.name, True, time.time() + len(self._instances))
        self._instances[inst.id] = inst
        return inst

    async def stop(self, instance_id: str) -> None:
        self._instances[instance_id].alive = False
        self.stopped.append(instance_id)

    def instances(self) -> list[Instance]:
        return list(self._instances.values())

    def forget(self, instance_id: str) -> None:
        self._instances.pop(instance_id, None)

    async def shutdown(self) -> None:
        pass


async def test_the_local_actuator_drains_a_serving_worker_before_stopping_it(worker):
    address, tracker = worker
    processes = FakeProcesses()
    registered: dict[str, pb.WorkerIdentity] = {}
    local = LocalActuator(processes, registered, drain_timeout_s=10)
    assert isinstance(local, Actuator)
    assert (await local.converge([WorkerGroup(name="g", model="tiny", replicas=3)])).replicas == {"g": 3}
    # g-2 is the newest but the only one registered (serving): the two that serve nothing go first, undrained.
    registered["g-2"] = pb.WorkerIdentity(id="g-2", group="g", address=address)
    await local.converge([WorkerGroup(name="g", model="tiny", replicas=1)])
    assert sorted(processes.stopped) == ["g-0", "g-1"] and not tracker.draining
    tracker.started("r", 10)
    down = asyncio.create_task(local.converge([WorkerGroup(name="g", model="tiny", replicas=0)]))
    await asyncio.sleep(0.4)
    assert tracker.draining and processes.stopped[-1] != "g-2"  # draining, not stopped yet
    tracker.finished("r")
    done = await asyncio.wait_for(down, 3)
    assert processes.stopped[-1] == "g-2" and done.replicas == {}
    assert [(a.kind, a.instance) for a in done.actions] == [("stop", "g-2")]
