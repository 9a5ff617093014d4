"""The autoscaler's control loop: while leader, make the platform run the desired worker groups.

Every round (each second, and at once when the groups or the registered workers change) the
actuator converges the platform to the groups; whichever actuator it is (local processes,
compose, Kubernetes) is its own business. The truth about which workers serve is etcd
(workers register themselves): the plan counts them as ready, and the rest of what the
platform holds as pending.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from services.autoscaler import metrics
from services.autoscaler.actuator import Actuator, Converged
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.fleet_view import GroupRow, group_rows
from services.autoscaler.registered import RegisteredWorkers
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.election import LeaderElection
from tessera.runtime.rpc.enums import role_value
from tessera.v1 import autoscaler_pb2
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.autoscaler")


class Controller:
    def __init__(
        self,
        groups: list[WorkerGroup],
        actuator: Actuator,
        workers: RegisteredWorkers,
        connector: EtcdConnector,
        election: LeaderElection,
        interval: float = 1.0,
    ) -> None:
        self.static_groups = list(groups)  # from --desired: held as given
        self.groups = list(groups)  # the static groups plus the planner's (auto-*)
        self.explain: Callable[[], list[str]] = lambda: []
        self._published = False  # the desired groups are in etcd as they are now
        self.actuator = actuator
        self.workers = workers
        self.connector = connector
        self.election = election
        self.interval = interval
        self.held: dict[str, int] = {}  # group -> instances the platform held after the last round
        self.decisions: deque[autoscaler_pb2.Decision] = deque(maxlen=50)
        self._wake = asyncio.Event()
        workers.listen(lambda _id, _identity: self._wake.set())

    @property
    def registered(self) -> dict[str, pb.WorkerIdentity]:
        return self.workers.workers

    def _decide(self, group: str, action: str, instance: str, reason: str) -> None:
        self.decisions.append(
            autoscaler_pb2.Decision(
                timestamp_unix_ms=int(time.time() * 1000), group=group, action=action, instance=instance, reason=reason
            )
        )
        metrics.ACTIONS.labels(group, action).inc()

    def set_planned_groups(self, planned: list[WorkerGroup]) -> None:
        """The planner's groups for this round; reconciled (and published) at once."""
        groups = self.static_groups + [g for g in planned if g.name not in {s.name for s in self.static_groups}]
        if groups != self.groups:
            self.groups = groups
            self._published = False
            self._wake.set()

    async def run(self) -> None:
        self._published = False
        while True:
            metrics.IS_LEADER.set(1 if self.election.is_leader else 0)
            if self.election.is_leader:
                if not self._published:
                    self._published = await self._publish_desired()
                try:
                    await self.step()
                except Exception as exc:  # noqa: BLE001 - one failed step must not end the loop
                    log.warning("reconcile step failed: %s", exc)
            else:
                self._published = False
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), self.interval)
            except TimeoutError:
                pass

    async def _publish_desired(self) -> bool:
        """Write the desired set to etcd (intent is visible to every tool)."""
        client = None
        try:
            client = await self.connector.connect()
            for g in self.groups:
                await client.put(keys.desired(g.name).encode(), g.to_json())
            return True
        except Exception as exc:  # noqa: BLE001 - retried next round
            log.warning("could not publish desired state: %s", exc)
            return False
        finally:
            await self.connector.discard(client)

    async def step(self) -> None:
        converged: Converged = await self.actuator.converge(self.groups)
        self.held = converged.replicas
        for action in converged.actions:
            self._decide(action.group, action.kind, action.instance, action.reason)
        self._update_gauges()

    def _update_gauges(self) -> None:
        for g, (ready, pending) in self.counts().items():
            desired = next((x.replicas for x in self.groups if x.name == g), 0)
            metrics.DESIRED.labels(g).set(desired)
            metrics.READY.labels(g).set(ready)
            metrics.PENDING.labels(g).set(pending)

    def counts(self) -> dict[str, tuple[int, int]]:
        """Group -> (ready: registered in etcd, pending: held by the platform but not registered yet)."""
        ready = {g.name: 0 for g in self.groups}
        for ident in self.registered.values():
            if ident.group in ready:
                ready[ident.group] += 1
        return {g: (n, max(0, self.held.get(g, 0) - n)) for g, n in ready.items()}

    def fleet_rows(self) -> list[GroupRow]:
        """Plan against what runs, per group (called from the metrics thread: it reads copies).
        Only the leader's: a follower acts on nothing, and two copies would double the cost panels."""
        if not self.election.is_leader:
            return []
        return group_rows(list(self.groups), list(self.registered.copy().values()), dict(self.held))

    def plan(self) -> autoscaler_pb2.Plan:
        plan = autoscaler_pb2.Plan(leader_id=self.election.leader_id, this_is_leader=self.election.is_leader)
        for g in self.groups:
            plan.groups.add(
                name=g.name,
                model=g.model,
                replicas=g.replicas,
                role=role_value(g.role),
                accelerator=g.accelerator,
                engine=g.engine,
                engine_args={k: str(v) for k, v in g.engine_args.items()},
            )
        for name, (ready, pending) in self.counts().items():
            plan.ready[name] = ready
            plan.pending[name] = pending
        plan.recent_decisions.extend(self.decisions)
        plan.explanation.extend(self.explain())
        return plan
