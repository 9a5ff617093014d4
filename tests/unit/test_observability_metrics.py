"""What the observability pack is built from: the service-discovery document, labels every worker
series carries, the metrics server's extra routes, the autoscaler's plan and cost per group, the
router's per-profile latencies and TTFT SLO counts (in-process, no cluster)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, Counter, generate_latest

from services.autoscaler.desired import WorkerGroup
from services.autoscaler.fleet_view import group_rows
from services.autoscaler.load_observer import parse
from services.router import metrics as router_metrics
from services.router.timing import Timing
from tessera.engine_model.catalog import accelerators
from tessera.runtime.etcd.records import ServiceRecord, identity_to_json
from tessera.runtime.telemetry import service_discovery
from tessera.runtime.telemetry.metrics import ConstantLabels, start_metrics_server
from tessera.v1 import common_pb2 as pb


def worker(wid: str, accelerator: str, vendor: str, group: str = "g", metrics: str = "127.0.0.1:9001", tp: int = 1):
    return pb.WorkerIdentity(
        id=wid,
        model="m",
        group=group,
        role=pb.ROLE_DECODE,
        accelerator=accelerator,
        vendor=vendor,
        accelerator_count=tp,
        engine="sim",
        metrics_address=metrics,
    )


def test_service_discovery_lists_every_registered_metrics_endpoint_with_its_hardware():
    workers = [
        identity_to_json(worker("w1", "h100-sxm", "nvidia", metrics="10.0.0.1:9001")),
        identity_to_json(worker("w2", "mi300x", "amd", metrics="")),  # no metrics endpoint: nothing to scrape
        b"{not json",
    ]
    services = [
        ServiceRecord(id="r1", kind="router", metrics_address="10.0.0.2:8000").to_json(),
        ServiceRecord(id="s1", kind="scheduler", metrics_address="10.0.0.3:9400").to_json(),
        b"[]",
    ]
    groups = service_discovery.target_groups(workers, services)
    assert [(g["targets"], g["labels"]["__meta_tessera_kind"]) for g in groups] == [
        (["10.0.0.2:8000"], "router"),
        (["10.0.0.3:9400"], "scheduler"),
        (["10.0.0.1:9001"], "worker"),
    ]
    w = groups[-1]["labels"]
    assert (w["__meta_tessera_accelerator"], w["__meta_tessera_vendor"], w["__meta_tessera_role"]) == (
        "h100-sxm",
        "nvidia",
        "decode",
    )
    only_workers = json.loads(service_discovery.document(workers, services, "worker"))
    assert [g["targets"] for g in only_workers] == [["10.0.0.1:9001"]]


def test_every_sample_gets_the_constant_labels_and_keeps_its_own():
    reg = CollectorRegistry()
    Counter("tokens", "", ["accelerator"], registry=reg).labels("own").inc(3)
    Counter("plain", "", registry=reg).inc()
    out = CollectorRegistry(auto_describe=False)
    out.register(ConstantLabels(reg, {"accelerator": "mi300x", "vendor": "amd"}))
    text = generate_latest(out).decode()
    assert 'tokens_total{accelerator="own",vendor="amd"} 3.0' in text
    assert 'plain_total{accelerator="mi300x",vendor="amd"} 1.0' in text


def test_the_metrics_server_serves_extra_routes_read_only_and_labels_its_metrics():
    port = start_metrics_server(
        0, "127.0.0.1", labels={"vendor": "amd"}, routes={"/sd": lambda: (b"[]", "application/json")}
    )
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/sd", timeout=5) as r:
        assert (r.read(), r.headers["Content-Type"]) == (b"[]", "application/json")
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(urllib.request.Request(f"http://127.0.0.1:{port}/sd", data=b"x"), timeout=5)
    assert refused.value.code == 405
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        body = r.read().decode()
    assert 'vendor="amd"' in body and "python_info" in body


def test_group_rows_price_the_plan_and_what_runs_from_the_catalog():
    h100 = accelerators.find("h100")
    groups = [
        WorkerGroup(
            name="big", model="m", replicas=3, engine="sim", accelerator="h100", engine_args={"tensor_parallel_size": 2}
        ),
        WorkerGroup(name="auto", model="m", replicas=1),  # accelerator from its registered worker
        WorkerGroup(name="odd", model="m", replicas=1, engine="sim", accelerator="no-such-part"),
    ]
    registered = [worker("b1", "h100-sxm", "nvidia", "big", tp=2), worker("b2", "h100-sxm", "nvidia", "big", tp=2)]
    registered.append(worker("a1", "mi300x", "amd", "auto"))
    rows = {r.group: r for r in group_rows(groups, registered, {"big": 3})}
    big = rows["big"]
    assert (big.accelerator, big.vendor, big.desired, big.ready, big.pending) == ("h100-sxm", "nvidia", 3, 2, 1)
    assert big.instance_cost_per_hour_usd == pytest.approx(2 * h100.cost_per_hour_usd)
    assert (rows["auto"].accelerator, rows["auto"].vendor, rows["auto"].role) == ("mi300x", "amd", "decode")
    assert rows["auto"].instance_cost_per_hour_usd == pytest.approx(accelerators.find("mi300x").cost_per_hour_usd)
    assert (rows["odd"].accelerator, rows["odd"].instance_cost_per_hour_usd) == ("no-such-part", 0.0)


class _Model:
    name = "obs-unit-model"


class _Gen:
    model = _Model()
    prompt_ids = [1, 2, 3]


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_timing_counts_ttft_objectives_met_and_missed_and_the_tpot_per_profile(monkeypatch):
    clock = iter([0.5, 0.6, 0.7, 1.1])  # first token at 0.5 s, then two more, done at 1.1 s
    monkeypatch.setattr("services.router.timing.time.perf_counter", lambda: next(clock))
    stats = type("Stats", (), {"completion_tokens": 3})()
    t = Timing(_Model.name, arrived=0.0, profile="", ttft_slo_s=0.25)  # "": the scheduler's default profile
    for _ in range(3):
        t.delta(True)
    t.done(_Gen(), stats)
    labels = {"model": _Model.name, "profile": "default"}
    assert sample("tessera_router_ttft_slo_requests_total", **labels, met="false") == 1
    assert sample("tessera_router_ttft_slo_requests_total", **labels, met="true") == 0
    assert sample("tessera_request_time_per_output_token_seconds_sum", **labels) == pytest.approx(0.3)  # 0.6 s / 2
    assert sample("tessera_time_to_first_token_seconds_count", **labels) == 1
    clock2 = iter([0.1])
    monkeypatch.setattr("services.router.timing.time.perf_counter", lambda: next(clock2))
    Timing(_Model.name, arrived=0.0, profile="least_loaded", ttft_slo_s=0.25).delta(True)
    assert sample("tessera_router_ttft_slo_requests_total", model=_Model.name, profile="least_loaded", met="true") == 1


def test_a_model_is_exported_at_zero_refusals_once_seen():
    router_metrics.model_seen("obs-unit-seen")
    text = generate_latest(REGISTRY).decode()
    for reason in router_metrics.ADMISSION_REASONS:
        assert f'tessera_router_rejected_total{{model="obs-unit-seen",reason="{reason}"}} 0.0' in text
    assert 'tessera_router_remote_prefills_total{outcome="fallback"}' in text


def test_the_autoscaler_sums_latency_buckets_over_profiles():
    reg = CollectorRegistry()
    from prometheus_client import Histogram

    h = Histogram("tessera_time_to_first_token_seconds", "", ["model", "profile"], registry=reg, buckets=(0.1, 1.0))
    h.labels("m", "a").observe(0.05)
    h.labels("m", "b").observe(0.05)
    h.labels("m", "b").observe(0.5)
    seen = parse(generate_latest(reg).decode())
    assert seen.ttft["m"] == {0.1: 2.0, 1.0: 3.0, float("inf"): 3.0}
