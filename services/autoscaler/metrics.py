"""The autoscaler's Prometheus metrics: leadership, replicas per group, and actions taken."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import Counter, Gauge
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from services.autoscaler.fleet_view import GroupRow

IS_LEADER = Gauge("tessera_autoscaler_is_leader", "1 while this autoscaler leads and acts")
DESIRED = Gauge("tessera_autoscaler_desired_replicas", "Workers wanted", ["group"])
READY = Gauge("tessera_autoscaler_ready_replicas", "Workers registered in etcd", ["group"])
PENDING = Gauge("tessera_autoscaler_pending_replicas", "Workers launched, not yet registered", ["group"])
ACTIONS = Counter("tessera_autoscaler_actions_total", "Actions taken", ["group", "action"])


class FleetCollector(Collector):
    """The plan against what runs, per group and hardware, and its hourly cost, read at scrape time
    (a group the planner dropped vanishes with it)."""

    LABELS = ["group", "model", "role", "accelerator", "vendor"]

    def __init__(self, rows: Callable[[], list[GroupRow]]) -> None:
        self.rows = rows

    def collect(self):
        replicas = GaugeMetricFamily(
            "tessera_autoscaler_group_replicas",
            "Instances of a worker group: desired (the plan), ready (registered in etcd), pending (launched)",
            labels=[*self.LABELS, "state"],
        )
        cost = GaugeMetricFamily(
            "tessera_autoscaler_cost_per_hour_usd",
            "Hourly cost of a worker group at the catalog's device prices: desired (the plan) and ready (running)",
            labels=[*self.LABELS, "state"],
        )
        for r in self.rows():
            labels = [r.group, r.model, r.role, r.accelerator, r.vendor]
            for state, n in (("desired", r.desired), ("ready", r.ready), ("pending", r.pending)):
                replicas.add_metric([*labels, state], n)
            for state, n in (("desired", r.desired), ("ready", r.ready)):
                cost.add_metric([*labels, state], n * r.instance_cost_per_hour_usd)
        yield replicas
        yield cost
