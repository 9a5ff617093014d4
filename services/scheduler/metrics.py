"""The scheduler's Prometheus metrics: placements, and the queue and load it sees per worker.

Per-worker series carry the worker's ``accelerator`` and ``vendor`` (as its own series do), so
dashboards group the fleet by hardware without a join.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from services.scheduler.view import ClusterView
from tessera.placement.prefix_index import PrefixIndex
from tessera.runtime.rpc.enums import role_name

PLACEMENTS = Counter("tessera_scheduler_placements_total", "Placement decisions", ["profile", "result"])
PLACEMENT_SECONDS = Histogram(
    "tessera_scheduler_placement_duration_seconds",
    "Time of one placement decision",
    buckets=(0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.05),
)
REPORTS = Counter("tessera_scheduler_load_reports_total", "Load reports received")
KV_EVENTS = Counter("tessera_scheduler_kv_events_total", "KV-cache events received from workers")
EXPECTED_HIT_TOKENS = Counter(
    "tessera_scheduler_expected_cached_tokens_total",
    "Prompt tokens the chosen workers were believed to hold (prefix index)",
)


class ViewCollector(Collector):
    """Per-worker gauges read from the live view at scrape time, so departed workers vanish."""

    def __init__(self, view: ClusterView, index: PrefixIndex | None = None) -> None:
        self.view = view
        self.index = index

    def collect(self):
        entries = list(self.view.workers.values())
        workers = GaugeMetricFamily(
            "tessera_scheduler_workers",
            "Workers known, by model, health, role, accelerator and vendor",
            labels=["model", "healthy", "role", "accelerator", "vendor"],
        )
        counts: dict[tuple[str, ...], int] = {}
        for e in entries:
            ident = e.identity
            key: tuple[str, ...] = (
                ident.model,
                str(e.healthy).lower(),
                role_name(ident.role),
                ident.accelerator,
                ident.vendor,
            )
            counts[key] = counts.get(key, 0) + 1
        for labels, n in counts.items():
            workers.add_metric(list(labels), n)
        yield workers
        if self.index is not None:
            blocks = GaugeMetricFamily(
                "tessera_scheduler_prefix_index_blocks", "16-token blocks in the prefix-cache index (distinct keys)"
            )
            blocks.add_metric([], float(len(self.index)))
            yield blocks
        figures = {
            "tessera_scheduler_worker_num_requests_waiting": (
                "Requests waiting at a worker",
                lambda e: e.load.num_waiting,
            ),
            "tessera_scheduler_worker_num_requests_running": (
                "Requests running at a worker",
                lambda e: e.load.num_running,
            ),
            "tessera_scheduler_worker_kv_cache_usage_perc": (
                "KV-cache usage of a worker (0..1)",
                lambda e: e.load.kv_cache_usage,
            ),
            "tessera_scheduler_worker_pending_placements": (
                "Placements not yet seen in a load report",
                lambda e: len(e.pending),
            ),
        }
        failed = CounterMetricFamily(
            "tessera_scheduler_worker_kv_pulls_failed",
            "KV pulls a decode worker says failed since it started (a refused handshake or transfer; the "
            "prompt was recomputed): pairs that should not have formed",
            labels=["worker", "model", "accelerator", "vendor"],
        )
        for e in entries:
            ident = e.identity
            failed.add_metric([ident.id, ident.model, ident.accelerator, ident.vendor], float(e.load.kv_pulls_failed))
        yield failed
        for name, (doc, get) in figures.items():
            fam = GaugeMetricFamily(name, doc, labels=["worker", "model", "accelerator", "vendor"])
            for e in entries:
                ident = e.identity
                fam.add_metric([ident.id, ident.model, ident.accelerator, ident.vendor], float(get(e)))
            yield fam
