"""The one interface every actuator implements: make a platform run the desired worker groups.

The controller hands an actuator the desired groups every round (and whenever they or the
registered workers change) and gets back what the platform holds and what was done; it never
asks which kind of actuator it holds. Three implement it:

- ``local`` (``local_actuator``): worker processes on this machine. The autoscaler starts
  and stops each one itself, so it also replaces a worker that dies at once, backs off a group
  whose workers crash before registering, and adopts workers a previous leader started.
- ``compose`` (``compose_actuator``): a platform that owns its instances. The autoscaler can
  only say "this group should have N" (``docker compose up --scale``); the platform starts,
  restarts and removes containers. It uses :class:`ReplicaCountActuator`, which converges by
  reading and setting each group's count.
- ``k8s`` (``k8s_actuator``): one Deployment per group's shape, which the actuator creates,
  updates, scales and deletes; Kubernetes starts, restarts and places the pods.

Draining on scale-down is part of the contract, not of the caller: an actuator that removes
an instance makes sure it first stops taking requests and finishes those in flight (a Drain
call and SIGTERM for local processes, SIGTERM plus a stop grace period for compose; for
Kubernetes a Drain call on the pods it removes, marked for the ReplicaSet with a pod deletion
cost, and a preStop hook for every other exit).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from services.autoscaler.desired import WorkerGroup

log = logging.getLogger("tessera.autoscaler")


class ScalingError(RuntimeError):
    """The platform could not be read or changed; the message says what to fix."""


@dataclass(frozen=True)
class Action:
    """One thing an actuator did (or, from ``reconcile``, is to do) to a group."""

    kind: str  # "start" | "stop" | "restart" | "scale"
    group: str
    instance: str = ""  # the worker started or stopped, where there is one
    reason: str = ""


@dataclass
class Converged:
    """After one round: instances the platform holds per group (starting, running or draining),
    and what this round changed."""

    replicas: dict[str, int] = field(default_factory=dict)
    actions: list[Action] = field(default_factory=list)


@runtime_checkable
class Actuator(Protocol):
    kind: str  # "local" | "compose" | "k8s": for logs and the autoscaler's --actuator flag

    async def converge(self, groups: list[WorkerGroup]) -> Converged:
        """Make the platform run ``groups`` (each at its ``replicas``). One failing group does not stop
        the others: their errors are raised together as a ScalingError after the rest are done."""
        ...

    async def close(self) -> None:
        """Let go of the platform. Workers this actuator runs as its own child processes (local)
        stop with it; workers a platform owns (compose, Kubernetes) outlive an autoscaler restart."""
        ...


class ReplicaCountActuator:
    """Converging by replica count, for platforms that own their instances: subclasses read and set
    one group's count."""

    kind = "replicas"

    async def replicas(self, group: WorkerGroup) -> int:
        """How many instances the platform holds for ``group`` now (starting, running or draining)."""
        raise NotImplementedError

    async def scale(self, group: WorkerGroup, replicas: int) -> None:
        """Make the platform hold ``replicas`` instances of ``group``; removed ones are drained first."""
        raise NotImplementedError

    async def converge(self, groups: list[WorkerGroup]) -> Converged:
        out = Converged()
        errors: list[str] = []
        for group in groups:
            try:
                current = await self.replicas(group)
                out.replicas[group.name] = current
                if current != group.replicas:
                    log.info("%s: scaling group %s from %d to %d", self.kind, group.name, current, group.replicas)
                    await self.scale(group, group.replicas)
                    out.replicas[group.name] = group.replicas
                    out.actions.append(Action("scale", group.name, reason=f"{current} -> {group.replicas} replicas"))
            except ScalingError as exc:
                log.warning("%s: group %s: %s", self.kind, group.name, exc)
                errors.append(f"{group.name}: {exc}")
        if errors:
            raise ScalingError("; ".join(errors))
        return out

    async def close(self) -> None:
        """Nothing held by default."""
