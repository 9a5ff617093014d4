"""Each worker group's plan against what runs, on which hardware, at what hourly cost.

Plain data in, plain rows out: the groups the autoscaler wants (static or planned), the
workers registered in etcd and what the platform holds. The accelerator and its price come
from the catalog (a group that says ``auto`` takes them from its registered workers); a
part the catalog does not know costs 0 rather than a guess.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from services.autoscaler.desired import WorkerGroup
from tessera.engine_model.catalog import accelerators
from tessera.runtime.rpc.enums import role_name
from tessera.v1 import common_pb2 as pb


@dataclass(frozen=True)
class GroupRow:
    group: str
    model: str
    role: str
    accelerator: str
    vendor: str
    desired: int
    ready: int
    pending: int
    instance_cost_per_hour_usd: float  # price of one instance: its devices times the catalog's device-hour


def group_rows(
    groups: Iterable[WorkerGroup], registered: Iterable[pb.WorkerIdentity], held: Mapping[str, int]
) -> list[GroupRow]:
    by_group: dict[str, list[pb.WorkerIdentity]] = {}
    for ident in registered:
        by_group.setdefault(ident.group, []).append(ident)
    rows = []
    for g in groups:
        idents = by_group.get(g.name, [])
        name = g.accelerator if g.accelerator != "auto" else (idents[0].accelerator if idents else "")
        devices = (
            idents[0].accelerator_count if idents else int(g.engine_args.get("tensor_parallel_size", 1) or 1)
        ) or 1
        vendor, price = (idents[0].vendor if idents else ""), 0.0
        try:
            part = accelerators.find(name)
            name, vendor, price = part.name, part.vendor, part.cost_per_hour_usd
        except ValueError:
            pass
        ready = len(idents)
        rows.append(
            GroupRow(
                group=g.name,
                model=idents[0].model if idents else g.model,  # the served name, as routers label it
                role=g.role if not idents else role_name(idents[0].role),
                accelerator=name or "unknown",
                vendor=vendor or "unknown",
                desired=g.replicas,
                ready=ready,
                pending=max(0, held.get(g.name, 0) - ready),
                instance_cost_per_hour_usd=price * devices,
            )
        )
    return rows
