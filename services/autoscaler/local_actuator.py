"""Workers as local processes: what ``tessera up`` uses (the ``local`` actuator).

The autoscaler owns these workers, so this actuator does what a platform would do for the
others: a worker that dies is replaced at once (its registration would linger until the lease
expires), a group whose workers die before registering is backed off (1 s, 2 s, ... up to a
minute) instead of restarted in a tight loop, and a worker that never registers is replaced
after START_TIMEOUT_S. Workers registered in etcd but started by another autoscaler (the
previous leader) count towards their group, so a failover starts nothing twice.

What to start and stop is decided by the pure ``reconcile``; scale-down drains each worker it
stops (the worker's Drain RPC, waiting for its requests in flight), then sends SIGTERM.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import Protocol

from services.autoscaler.actuator import Action, Converged
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.drain import drain_worker
from services.autoscaler.local_processes import STOP_GRACE_S, Instance
from services.autoscaler.reconcile import Observed, reconcile
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.autoscaler")

START_TIMEOUT_S = 900.0  # a worker that has not registered by then is stuck: replace it
CRASH_BACKOFF_CAP_S = 60.0


class Processes(Protocol):
    """What the actuator needs of the process launcher (LocalProcesses; a fake in tests)."""

    def launch(self, group: WorkerGroup) -> Instance: ...

    async def stop(self, instance_id: str) -> None: ...

    def instances(self) -> list[Instance]: ...

    def forget(self, instance_id: str) -> None: ...

    async def shutdown(self) -> None: ...


class LocalActuator:
    kind = "local"

    def __init__(
        self, processes: Processes, registered: Mapping[str, pb.WorkerIdentity], drain_timeout_s: float = STOP_GRACE_S
    ) -> None:
        """``registered``: the workers etcd knows (RegisteredWorkers.workers), read on every round."""
        self.processes = processes
        self.registered = registered
        self.drain_timeout_s = drain_timeout_s
        self._crashes: dict[str, int] = {}  # group -> consecutive exits before registering
        self._not_before: dict[str, float] = {}  # group -> no start before this time (crash backoff)
        self._seen_exit: set[str] = set()
        self._ever_registered: set[str] = set()  # a worker that registered once is not "stuck" later
        self._stopping: set[asyncio.Task[None]] = set()  # stuck workers being stopped in the background

    def worker_registered(self, worker_id: str, identity: pb.WorkerIdentity | None) -> None:
        """A registration ends the group's crash streak (RegisteredWorkers.listen)."""
        if identity is not None:
            self._ever_registered.add(worker_id)
            self._crashes.pop(identity.group, None)

    def observe(self, groups: list[WorkerGroup]) -> list[Observed]:
        now = time.time()
        own = {i.id: i for i in self.processes.instances()}
        wanted = {g.name for g in groups}
        observed = []
        for wid, ident in self.registered.items():
            if ident.group not in wanted:
                continue
            mine = own.get(wid)
            observed.append(
                Observed(
                    wid,
                    ident.group,
                    registered=True,
                    owned=mine is not None,
                    alive=mine.alive if mine else True,
                    started_at=mine.started_at if mine else ident.started_at_unix_ms / 1000,
                )
            )
        for inst in own.values():
            if inst.id in self.registered:
                continue
            fresh = now - inst.started_at < START_TIMEOUT_S
            observed.append(
                Observed(
                    inst.id,
                    inst.group,
                    registered=False,
                    owned=True,
                    alive=inst.alive and fresh,
                    started_at=inst.started_at,
                )
            )
        return observed

    async def converge(self, groups: list[WorkerGroup]) -> Converged:
        out = Converged()
        now = time.time()
        out.actions += self._note_exits()
        stops = []
        for action in reconcile(groups, self.observe(groups)):
            if action.kind == "start":
                if now < self._not_before.get(action.group, 0.0):
                    continue
                group = next(g for g in groups if g.name == action.group)
                inst = self.processes.launch(group)
                out.actions.append(Action("start", action.group, inst.id, action.reason))
            else:
                log.info("stopping %s (%s)", action.instance, action.reason)
                out.actions.append(action)
                stops.append(self._drain_and_stop(action.instance))
        out.actions += self._stop_stuck(now)
        await asyncio.gather(*stops)
        for o in self.observe(groups):
            if o.alive:
                out.replicas[o.group] = out.replicas.get(o.group, 0) + 1
        return out

    async def _drain_and_stop(self, instance_id: str) -> None:
        identity = self.registered.get(instance_id)
        if identity is not None and identity.address:
            await drain_worker(identity.address, self.drain_timeout_s)
        await self.processes.stop(instance_id)

    def _note_exits(self) -> list[Action]:
        """Log each unexpected exit once, back off a group whose workers die before registering."""
        actions = []
        for inst in self.processes.instances():
            if inst.alive or inst.id in self._seen_exit:
                continue
            self._seen_exit.add(inst.id)
            if inst.exit_code not in (0, -15, None):
                was_registered = inst.id in self.registered
                log.warning(
                    "worker %s exited with code %s%s; replacing it (log: %s)",
                    inst.id,
                    inst.exit_code,
                    "" if was_registered else " before registering",
                    inst.log_path,
                )
                actions.append(Action("restart", inst.group, inst.id, f"exit code {inst.exit_code}"))
                if not was_registered:
                    n = self._crashes[inst.group] = self._crashes.get(inst.group, 0) + 1
                    self._not_before[inst.group] = time.time() + min(CRASH_BACKOFF_CAP_S, 2.0 ** (n - 1))
            if inst.id not in self.registered:
                self.processes.forget(inst.id)
        return actions

    def _stop_stuck(self, now: float) -> list[Action]:
        actions = []
        for inst in self.processes.instances():
            if inst.id in self.registered:
                self._ever_registered.add(inst.id)
            never = inst.id not in self.registered and inst.id not in self._ever_registered
            if inst.alive and never and now - inst.started_at > START_TIMEOUT_S:
                log.warning("worker %s did not register in %.0fs; replacing it", inst.id, START_TIMEOUT_S)
                actions.append(Action("stop", inst.group, inst.id, "never registered"))
                task = asyncio.create_task(self.processes.stop(inst.id))
                self._stopping.add(task)
                task.add_done_callback(self._stopping.discard)
        return actions

    async def close(self) -> None:
        """The workers are this autoscaler's own processes: they stop with it."""
        log.info("stopping the workers this autoscaler launched")
        await self.processes.shutdown()
