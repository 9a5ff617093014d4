"""Pure reconciliation for the local actuator: desired groups and observed instances in, actions out."""

from __future__ import annotations

from dataclasses import dataclass

from services.autoscaler.actuator import Action
from services.autoscaler.desired import WorkerGroup


@dataclass(frozen=True)
class Observed:
    """One instance as the autoscaler sees it."""

    id: str
    group: str
    registered: bool  # present in etcd
    owned: bool  # launched by this autoscaler's actuator
    alive: bool  # process running (owned) or assumed alive (registered, not owned)
    started_at: float = 0.0


def reconcile(groups: list[WorkerGroup], observed: list[Observed]) -> list[Action]:
    """Start what is missing, stop what is extra (only instances we own, newest and unready first)."""
    actions: list[Action] = []
    for g in groups:
        live = [o for o in observed if o.group == g.name and o.alive]
        missing = g.replicas - len(live)
        if missing > 0:
            actions += [Action("start", g.name, reason=f"{len(live)} of {g.replicas} alive")] * missing
        elif missing < 0:
            stoppable = sorted((o for o in live if o.owned), key=lambda o: (o.registered, -o.started_at))
            for o in stoppable[:-missing]:
                actions.append(Action("stop", g.name, o.id, reason=f"{len(live)} alive, {g.replicas} wanted"))
    wanted = {g.name for g in groups}
    for o in observed:
        if o.owned and o.alive and o.group not in wanted:
            actions.append(Action("stop", o.group, o.id, reason="group no longer desired"))
    return actions
