"""Group-level scaling: the one interface the local, compose and Kubernetes actuators share.

The per-instance :class:`~services.autoscaler.actuator.Actuator` fits local
processes, where the autoscaler itself starts and stops each worker. Compose
and Kubernetes own their instances: the autoscaler can only say "this group
should have N" and the platform starts, restarts and removes containers or
pods. So the common ground is a replica count per group, and the planner (or
the controller) only ever needs that: read the count, set the count.

Draining on scale-down is part of the contract, not of the caller: an
implementation of :meth:`ScalingActuator.scale` that removes instances makes
sure each one first stops taking requests and finishes those in flight (a
Drain call for local processes, SIGTERM plus a stop grace period for compose,
a preStop hook plus terminationGracePeriodSeconds for Kubernetes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from services.autoscaler.desired import WorkerGroup

log = logging.getLogger("tessera.autoscaler")


class ScalingError(RuntimeError):
    """The platform could not be read or scaled; the message says what to fix."""


@runtime_checkable
class ScalingActuator(Protocol):
    """Hold a replica count per worker group on some platform."""

    kind: str  # "local" | "compose" | "k8s": for logs and the autoscaler's flag

    async def replicas(self, group: WorkerGroup) -> int:
        """How many instances the platform holds for ``group`` now (starting, running or draining)."""
        ...

    async def scale(self, group: WorkerGroup, replicas: int) -> None:
        """Make the platform hold ``replicas`` instances of ``group``; removed ones are drained first."""
        ...

    async def close(self) -> None:
        """Release clients and connections (never stops workers: they outlive an autoscaler restart)."""
        ...


@dataclass(frozen=True)
class ScaleChange:
    """One group whose count was changed by :func:`converge`."""

    group: str
    before: int
    after: int


async def converge(actuator: ScalingActuator, groups: list[WorkerGroup]) -> list[ScaleChange]:
    """Set every group to its desired replica count; one failing group does not stop the others.

    Returns what changed. Errors are logged and re-raised together at the end
    so the caller's loop can report them and try again on its next round.
    """
    changes: list[ScaleChange] = []
    errors: list[str] = []
    for group in groups:
        try:
            current = await actuator.replicas(group)
            if current != group.replicas:
                log.info("%s: scaling group %s from %d to %d", actuator.kind, group.name, current, group.replicas)
                await actuator.scale(group, group.replicas)
                changes.append(ScaleChange(group.name, current, group.replicas))
        except ScalingError as exc:
            log.warning("%s: group %s: %s", actuator.kind, group.name, exc)
            errors.append(f"{group.name}: {exc}")
    if errors:
        raise ScalingError("; ".join(errors))
    return changes
