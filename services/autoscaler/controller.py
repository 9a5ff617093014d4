"""The autoscaler's control loop: while leader, make the running workers match the desired set.

The truth about which workers exist is etcd (workers register themselves);
the actuator adds what only it knows: processes launched but not registered
yet, and processes that just died (their registration lingers until the lease
expires, but they must be replaced at once).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.election import LeaderElection
from tessera.runtime.etcd.records import identity_from_json
from tessera.runtime.etcd.watch import PrefixMirror
from tessera.runtime.rpc.enums import role_value
from tessera.v1 import autoscaler_pb2
from tessera.v1 import common_pb2 as pb
from services.autoscaler import metrics
from services.autoscaler.actuator import Actuator
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.reconcile import Observed, reconcile
from services.autoscaler.scaling import ScalingActuator, converge

log = logging.getLogger("tessera.autoscaler")

START_TIMEOUT_S = 900.0   # a worker that has not registered by then is stuck: replace it
CRASH_BACKOFF_CAP_S = 60.0


class Controller:
    def __init__(self, groups: list[WorkerGroup], actuator: Actuator | None, connector: EtcdConnector,
                 election: LeaderElection, interval: float = 1.0, scaling: ScalingActuator | None = None) -> None:
        """`actuator` launches and stops each worker itself (local processes); `scaling` instead sets
        a replica count per group on a platform that owns its instances (compose, Kubernetes)."""
        if (actuator is None) == (scaling is None):
            raise ValueError("give exactly one of actuator (per instance) or scaling (per group)")
        self.static_groups = list(groups)   # from --desired: held as given
        self.groups = list(groups)          # the static groups plus the planner's (auto-*)
        self.explain: Callable[[], list[str]] = lambda: []
        self._published = False   # the desired groups are in etcd as they are now
        self.actuator = actuator
        self.scaling = scaling
        self.connector = connector
        self.election = election
        self.interval = interval
        self.registered: dict[str, pb.WorkerIdentity] = {}
        self.decisions: deque[autoscaler_pb2.Decision] = deque(maxlen=50)
        self._wake = asyncio.Event()
        self._crashes: dict[str, int] = {}          # group -> consecutive exits before registering
        self._not_before: dict[str, float] = {}     # group -> no start before this time (crash backoff)
        self._seen_exit: set[str] = set()
        self.workers = PrefixMirror(connector, keys.WORKERS, on_change=self._on_worker)

    def _on_worker(self, key: str, value: bytes | None) -> None:
        worker_id = key.rsplit("/", 1)[-1]
        if value is None:
            self.registered.pop(worker_id, None)
        else:
            identity = identity_from_json(value)
            self.registered[worker_id] = identity
            self._crashes.pop(identity.group, None)
        self._wake.set()

    def _decide(self, group: str, action: str, instance: str, reason: str) -> None:
        self.decisions.append(autoscaler_pb2.Decision(
            timestamp_unix_ms=int(time.time() * 1000), group=group, action=action, instance=instance, reason=reason))
        metrics.ACTIONS.labels(group, action).inc()

    def set_planned_groups(self, planned: list[WorkerGroup]) -> None:
        """The planner's groups for this round; reconciled (and published) at once."""
        groups = self.static_groups + [g for g in planned if g.name not in {s.name for s in self.static_groups}]
        if groups != self.groups:
            self.groups = groups
            self._published = False
            self._wake.set()

    async def run(self) -> None:
        self.workers.start()
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
            except asyncio.TimeoutError:
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

    def observe(self) -> list[Observed]:
        now = time.time()
        own = {i.id: i for i in self.actuator.instances()} if self.actuator is not None else {}
        wanted = {g.name for g in self.groups}
        observed = []
        for wid, ident in self.registered.items():
            if ident.group not in wanted:
                continue
            mine = own.get(wid)
            observed.append(Observed(wid, ident.group, registered=True, owned=mine is not None,
                                     alive=mine.alive if mine else True,
                                     started_at=mine.started_at if mine else ident.started_at_unix_ms / 1000))
        for inst in own.values():
            if inst.id in self.registered:
                continue
            fresh = now - inst.started_at < START_TIMEOUT_S
            observed.append(Observed(inst.id, inst.group, registered=False, owned=True,
                                     alive=inst.alive and fresh, started_at=inst.started_at))
        return observed

    async def step(self) -> None:
        if self.scaling is not None:
            # The platform starts, restarts and drains; we only hold the counts.
            for change in await converge(self.scaling, self.groups):
                self._decide(change.group, "scale", "", f"{change.before} -> {change.after} replicas")
            self._update_gauges()
            return
        now = time.time()
        self._note_exits()
        for action in reconcile(self.groups, self.observe()):
            if action.kind == "start":
                if now < self._not_before.get(action.group, 0.0):
                    continue
                group = next(g for g in self.groups if g.name == action.group)
                inst = self.actuator.launch(group)
                self._decide(action.group, "start", inst.id, action.reason)
            else:
                log.info("stopping %s (%s)", action.instance, action.reason)
                self._decide(action.group, "stop", action.instance, action.reason)
                await self.actuator.stop(action.instance)
        self._stop_stuck(now)
        self._update_gauges()

    def _note_exits(self) -> None:
        """Log each unexpected exit once, back off a group whose workers die before registering."""
        for inst in self.actuator.instances():
            if inst.alive or inst.id in self._seen_exit:
                continue
            self._seen_exit.add(inst.id)
            if inst.exit_code not in (0, -15, None):
                was_registered = inst.id in self.registered
                log.warning("worker %s exited with code %s%s; replacing it (log: %s)", inst.id, inst.exit_code,
                            "" if was_registered else " before registering", inst.log_path)
                self._decide(inst.group, "restart", inst.id, f"exit code {inst.exit_code}")
                if not was_registered:
                    n = self._crashes[inst.group] = self._crashes.get(inst.group, 0) + 1
                    self._not_before[inst.group] = time.time() + min(CRASH_BACKOFF_CAP_S, 2.0 ** (n - 1))
            if inst.id not in self.registered:
                self.actuator.forget(inst.id)

    def _stop_stuck(self, now: float) -> None:
        for inst in self.actuator.instances():
            if inst.alive and inst.id not in self.registered and now - inst.started_at > START_TIMEOUT_S:
                log.warning("worker %s did not register in %.0fs; replacing it", inst.id, START_TIMEOUT_S)
                self._decide(inst.group, "stop", inst.id, "never registered")
                asyncio.create_task(self.actuator.stop(inst.id))

    def _update_gauges(self) -> None:
        for g, (ready, pending) in self.counts().items():
            desired = next((x.replicas for x in self.groups if x.name == g), 0)
            metrics.DESIRED.labels(g).set(desired)
            metrics.READY.labels(g).set(ready)
            metrics.PENDING.labels(g).set(pending)

    def counts(self) -> dict[str, tuple[int, int]]:
        out = {g.name: (0, 0) for g in self.groups}
        for o in self.observe():
            if o.group in out and o.alive:
                ready, pending = out[o.group]
                out[o.group] = (ready + 1, pending) if o.registered else (ready, pending + 1)
        return out

    def plan(self) -> autoscaler_pb2.Plan:
        plan = autoscaler_pb2.Plan(leader_id=self.election.leader_id, this_is_leader=self.election.is_leader)
        for g in self.groups:
            plan.groups.add(name=g.name, model=g.model, replicas=g.replicas, role=role_value(g.role),
                            accelerator=g.accelerator, engine=g.engine,
                            engine_args={k: str(v) for k, v in g.engine_args.items()})
        for name, (ready, pending) in self.counts().items():
            plan.ready[name] = ready
            plan.pending[name] = pending
        plan.recent_decisions.extend(self.decisions)
        plan.explanation.extend(self.explain())
        return plan
