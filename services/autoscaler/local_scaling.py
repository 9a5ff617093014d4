"""The local-process actuator seen through the group-level :class:`ScalingActuator` interface.

The local actuator starts and stops single processes; this adapter turns "the
group should have N" into launches and stops, and drains each worker it
removes first (its ``Drain`` RPC, then waiting for in-flight requests), so
local scale-down behaves like the compose and Kubernetes ones.

The adapter does not know where a worker listens: workers register their
address in etcd, which the controller mirrors. ``address_of`` looks it up
(``lambda wid: registered[wid].address if wid in registered else None``); a
worker with no address yet has served nothing and is stopped straight away.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from services.autoscaler.actuator import Actuator, Instance
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.drain import DEFAULT_TIMEOUT_S, drain_worker


class LocalScaling:
    """Group-level scaling over an instance-level :class:`Actuator` (the local processes of ``tessera up``)."""

    kind = "local"

    def __init__(self, actuator: Actuator, address_of: Callable[[str], str | None] = lambda _id: None,
                 drain_timeout_s: float = DEFAULT_TIMEOUT_S) -> None:
        self.actuator = actuator
        self.address_of = address_of
        self.drain_timeout_s = drain_timeout_s

    def _live(self, group: WorkerGroup) -> list[Instance]:
        return [i for i in self.actuator.instances() if i.group == group.name and i.alive]

    async def replicas(self, group: WorkerGroup) -> int:
        return len(self._live(group))

    async def scale(self, group: WorkerGroup, replicas: int) -> None:
        live = self._live(group)
        for _ in range(replicas - len(live)):
            self.actuator.launch(group)
        if replicas >= len(live):
            return
        # Remove the ones that serve least: not yet reachable first, then the newest.
        order = sorted(live, key=lambda i: (self.address_of(i.id) is not None, -i.started_at))
        await asyncio.gather(*(self._drain_and_stop(i) for i in order[: len(live) - replicas]))

    async def _drain_and_stop(self, instance: Instance) -> None:
        address = self.address_of(instance.id)
        if address:
            await drain_worker(address, self.drain_timeout_s)
        await self.actuator.stop(instance.id)

    async def close(self) -> None:
        """Nothing to release; the workers are the actuator's, which ``tessera up`` shuts down itself."""
