"""The observability pack against a live cluster: `tessera up` with simulated H100s and MI300Xs under
`tessera bench`, a real Prometheus configured from deploy/observability/prometheus.yml that finds
every service through the scheduler's etcd-backed HTTP service discovery, and every panel of the
shipped dashboards queried through Prometheus' API."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest

from tessera.runtime.net import free_port
from tests.support.harness import tessera_up, wait_for
from tests.support.prometheus import Prometheus, cluster_config, panel_targets, per_worker

ACCELERATORS = {"h100-sxm": "nvidia", "mi300x": "amd"}
PROFILES = ("tessera", "least_loaded")


def total(prom: Prometheus, counter: str) -> float:
    result = prom.query(f"sum({counter})")
    return float(result[0]["value"][1]) if result else 0.0


@pytest.fixture(scope="module")
def observed(tmp_path_factory):
    """The cluster under a short load, with Prometheus scraping it every second."""
    tmp = tmp_path_factory.mktemp("observability")
    sd_port = free_port()
    with tessera_up(
        tmp / "cluster",
        "--accelerators",
        "h100:2,mi300x:2",
        "--sim-arch",
        "llama3-8b",
        "--scheduler-metrics-port",
        str(sd_port),
        "--ttft-slo-ms",
        "2000",
    ) as (_, port, _lines):
        (tmp / "prometheus").mkdir()
        prom = Prometheus(cluster_config(f"http://127.0.0.1:{sd_port}/sd", tmp / "prometheus"), tmp / "prometheus")
        try:
            # every service scraped before the load, so rates start from the idle counters
            wait_for(lambda: len(prom.query('up{job=~"tessera-.*"} == 1')) == 7, 30, what="7 targets up")
            time.sleep(2)
            bench = subprocess.run(
                [sys.executable, "-m", "tessera.cli", "bench", "--base-url", f"http://127.0.0.1:{port}"]
                + ["--model", "tiny-llama", "--dataset", "shared-prefix", "--shared-prefix-groups", "2"]
                + ["--prompts-per-group", "8", "--shared-prefix-len", "256", "--question-len", "32"]
                + ["--random-output-len", "24", "--request-rate", "8", "--warmup", "0"]
                + ["--policy", ",".join(PROFILES)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert bench.returncode == 0, bench.stdout + bench.stderr
            # the bench's requests in Prometheus, from the router and the workers, and a few more scrapes
            for counter in ("tessera_router_requests_total", "tessera_worker_requests_total"):
                wait_for(lambda counter=counter: total(prom, counter) >= 32, 30, interval=0.5, what=f"{counter} >= 32")
            time.sleep(3)
            yield prom
        finally:
            prom.close()


def test_prometheus_finds_every_service_through_etcd(observed):
    targets = observed.api("targets", state="active")["activeTargets"]
    up = {}
    for t in targets:
        up.setdefault(t["labels"]["job"], []).append(t["health"])
    assert {job: len(h) for job, h in up.items()} == {
        "tessera-router": 1,
        "tessera-scheduler": 1,
        "tessera-autoscaler": 1,
        "tessera-worker": 4,
    }
    assert all(h == "up" for hs in up.values() for h in hs), targets
    workers = [t for t in targets if t["labels"]["job"] == "tessera-worker"]
    assert sorted(t["discoveredLabels"]["__meta_tessera_accelerator"] for t in workers) == [
        "h100-sxm",
        "h100-sxm",
        "mi300x",
        "mi300x",
    ]


def test_every_dashboard_panel_returns_series_with_hardware_labels_per_worker(observed):
    empty, unlabelled = [], []
    checked = per_worker_panels = 0
    for board, title, expr, legend in panel_targets():
        series = observed.query(expr)
        checked += 1
        if not series:
            empty.append(f"{board} / {title}: {expr}")
            continue
        if per_worker(legend):
            per_worker_panels += 1
            seen = {(s["metric"].get("accelerator"), s["metric"].get("vendor")) for s in series}
            if seen != set(ACCELERATORS.items()):
                unlabelled.append(f"{title}: {sorted(seen, key=str)}")
    assert not empty, "panels without series:\n" + "\n".join(empty)
    assert not unlabelled, "per-worker panels without both accelerators and their vendors:\n" + "\n".join(unlabelled)
    assert checked >= 25 and per_worker_panels >= 10


def values(prom: Prometheus, expr: str) -> dict[tuple, float]:
    return {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in prom.query(expr)}


def test_the_panels_show_the_cluster_as_it_is(observed):
    """Not only series: the figures match what was started and sent."""
    fleet = values(observed, "count by (accelerator, vendor) (tessera_worker_info)")
    assert sorted(fleet.values()) == [2.0, 2.0]
    plan = values(observed, "sum by (accelerator, state) (tessera_autoscaler_group_replicas)")
    assert {k: v for k, v in plan.items() if ("state", "pending") not in k} == {
        (("accelerator", a), ("state", s)): 2.0 for a in ACCELERATORS for s in ("desired", "ready")
    }
    cost = values(observed, "sum by (state) (tessera_autoscaler_cost_per_hour_usd)")
    assert cost[(("state", "desired"),)] == cost[(("state", "ready"),)] > 0
    ttft = values(
        observed,
        "histogram_quantile(0.5, sum by (le, profile) (rate(tessera_time_to_first_token_seconds_bucket[1m])))",
    )
    assert {dict(k)["profile"] for k in ttft} == set(PROFILES)
    assert all(0 < v < 2 for v in ttft.values()), ttft
    tpot = values(
        observed, "histogram_quantile(0.5, sum (rate(tessera_request_time_per_output_token_seconds_bucket[1m])))"
    )
    assert all(0.001 < v < 0.1 for v in tpot.values()), tpot  # an 8B model's decode step on these parts
    attainment = values(
        observed,
        'sum(rate(tessera_router_ttft_slo_requests_total{met="true"}[1m])) '
        "/ sum(rate(tessera_router_ttft_slo_requests_total[1m]))",
    )
    assert all(0.9 <= v <= 1 for v in attainment.values()), attainment
    hits = values(
        observed,
        "sum(rate(tessera_worker_cached_prompt_tokens_total[1m])) / sum(rate(tessera_worker_prompt_tokens_total[1m]))",
    )
    assert all(0 < v < 1 and not math.isnan(v) for v in hits.values()), hits  # shared prefixes hit the cache


def test_the_alert_rules_load_and_stay_quiet_on_a_healthy_cluster(observed):
    groups = observed.api("rules")["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) >= 10 and all(r["health"] == "ok" for r in rules), [
        (r["name"], r.get("lastError")) for r in rules if r["health"] != "ok"
    ]
    firing = [a for a in observed.api("alerts")["alerts"] if a["state"] == "firing"]
    assert firing == []
