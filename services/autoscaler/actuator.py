"""Actuators carry out the plan. One interface; local processes today, compose and Kubernetes later."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from services.autoscaler.desired import WorkerGroup


@dataclass
class Instance:
    id: str
    group: str
    alive: bool
    started_at: float
    exit_code: int | None = None
    log_path: str = ""


class Actuator(Protocol):
    def launch(self, group: WorkerGroup) -> Instance: ...

    async def stop(self, instance_id: str) -> None: ...

    def instances(self) -> list[Instance]: ...

    def forget(self, instance_id: str) -> None: ...

    async def shutdown(self) -> None: ...
