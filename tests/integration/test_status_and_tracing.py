"""`tessera status`, traces across router, scheduler and worker, and `tessera bench`."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid

import httpx

from tests.support.harness import cluster_status, wait_for
from tests.support.models import CLUSTER_MODELS, TINY


def status(cluster) -> dict:
    return cluster_status(cluster.etcd.endpoint)


def test_status_lists_workers_with_their_load(cluster):
    s = status(cluster)
    models = sorted(w["model"] for w in s["workers"])
    assert models == sorted(CLUSTER_MODELS)
    for w in s["workers"]:
        assert w["healthy"] is True and w["num_waiting"] is not None and w["accelerator"] == "cpu"
    assert s["plan"]["this_is_leader"] is True
    text = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--etcd", cluster.etcd.endpoint],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "WORKER" in text and TINY in text


def test_one_trace_spans_router_scheduler_and_worker(cluster):
    rid = uuid.uuid4().hex
    r = httpx.post(
        cluster.base_url + "/v1/completions",
        headers={"x-request-id": rid},
        json={"model": TINY, "prompt": "trace me", "max_tokens": 3},
        timeout=60,
    )
    assert r.status_code == 200

    def spans_of_request():
        spans = cluster.collector.snapshot()
        roots = [s for s in spans if s.service == "tessera-router" and s.name == "router.v1.completions"]
        for root in roots:
            same = [s for s in spans if s.trace_id == root.trace_id]
            if {"tessera-router", "tessera-scheduler", "tessera-worker"} <= {s.service for s in same}:
                return same
        return None

    trace = wait_for(spans_of_request, 15, what="spans from all three services in one trace")
    by_name = {s.name: s for s in trace}
    ids = {s.span_id for s in trace}
    assert by_name["scheduler.place"].parent_span_id in ids  # child of the router's place call
    assert by_name["worker.generate"].parent_span_id == by_name["router.worker_stream"].span_id


def test_bench_reports_vllm_bench_keys(cluster, tmp_path):
    subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.cli",
            "bench",
            "--base-url",
            cluster.base_url,
            "--model",
            TINY,
            "--num-prompts",
            "6",
            "--random-input-len",
            "32",
            "--random-output-len",
            "8",
            "--request-rate",
            "20",
            "--save-result",
            "--save-detailed",  # the per-request lists (ttfts, itls), kept only on request as vLLM does
            "--ignore-eos",  # exactly 8 tokens each: an end-of-sequence would end a request early
            "--result-dir",
            str(tmp_path),
            "--result-filename",
            "r.json",
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    r = json.loads((tmp_path / "r.json").read_text())
    assert r["completed"] == 6 and r["failed"] == 0
    assert r["total_output_tokens"] == 48
    for key in (
        "request_throughput",
        "output_throughput",
        "median_ttft_ms",
        "p90_ttft_ms",
        "p99_tpot_ms",
        "mean_itl_ms",
        "median_e2el_ms",
        "ttfts",
        "itls",
    ):
        assert key in r, key
    assert 0 < r["median_ttft_ms"] < r["median_e2el_ms"]
