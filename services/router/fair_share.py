"""Which tenants hold their fair share of a model's requests at this router (plain data, no I/O).

Fair queueing orders the admission queue, but a quiet tenant's request that
reaches the head still waits for a batch slot, and under a flood every slot
is held by the noisy tenant. So a tenant that already holds at least an equal
share of this router's requests for the model, while other tenants are
active, is marked `over_fair_share` when placed, and the scheduler keeps each
worker's last slot(s) from it (the saturation filter's `reserve_slots`): a
tenant below its share finds one free at once. As Kubernetes' API Priority
and Fairness keeps seats per level, the reserve costs some capacity only while
more than one tenant is active; a tenant alone is never over its share.

A tenant counts as active while it has requests in flight here (waiting or
streaming) and for ACTIVE_S after its last one: between two requests of a
quiet tenant, the noisy one must not take the reserved slots back.
Requests without a tenant (an open router) are never over a share.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ACTIVE_S = 10.0


@dataclass
class _Model:
    in_flight: dict[str, int] = field(default_factory=dict)  # tenant -> requests here now
    seen: dict[str, float] = field(default_factory=dict)  # tenant -> when its last request ended or began


class TenantShares:
    """Requests in flight per model and tenant; `now` is the caller's monotonic clock."""

    def __init__(self, active_s: float = ACTIVE_S) -> None:
        self.active_s = active_s
        self._models: dict[str, _Model] = {}

    def started(self, model: str, tenant: str, now: float) -> None:
        if not tenant:
            return
        m = self._models.setdefault(model, _Model())
        m.in_flight[tenant] = m.in_flight.get(tenant, 0) + 1
        m.seen[tenant] = now

    def finished(self, model: str, tenant: str, now: float) -> None:
        m = self._models.get(model)
        if not tenant or m is None or tenant not in m.in_flight:
            return
        m.in_flight[tenant] -= 1
        if m.in_flight[tenant] <= 0:
            del m.in_flight[tenant]
        m.seen[tenant] = now

    def over_share(self, model: str, tenant: str, now: float) -> bool:
        """Whether `tenant` holds at least an equal share of the model's requests in flight here
        while another tenant is active."""
        m = self._models.get(model)
        if not tenant or m is None:
            return False
        self._forget(m, now)
        active = set(m.in_flight) | set(m.seen)
        if len(active) < 2 or tenant not in active:
            return False
        total = sum(m.in_flight.values())
        return m.in_flight.get(tenant, 0) * len(active) >= total

    def _forget(self, m: _Model, now: float) -> None:
        """Tenants idle for longer than active_s stop counting (and stop taking memory)."""
        for tenant in [t for t, at in m.seen.items() if now - at > self.active_s and t not in m.in_flight]:
            del m.seen[tenant]
