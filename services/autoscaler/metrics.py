"""The autoscaler's Prometheus metrics: leadership, replicas per group, and actions taken."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

IS_LEADER = Gauge("tessera_autoscaler_is_leader", "1 while this autoscaler leads and acts")
DESIRED = Gauge("tessera_autoscaler_desired_replicas", "Workers wanted", ["group"])
READY = Gauge("tessera_autoscaler_ready_replicas", "Workers registered in etcd", ["group"])
PENDING = Gauge("tessera_autoscaler_pending_replicas", "Workers launched, not yet registered", ["group"])
ACTIONS = Counter("tessera_autoscaler_actions_total", "Actions taken", ["group", "action"])
