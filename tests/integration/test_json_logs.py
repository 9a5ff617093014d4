"""TESSERA_LOG_FORMAT=json: each service writes one JSON object per line, and a line written while a
request is handled names the request (request_id) and its trace (trace_id)."""

from __future__ import annotations

import json

import httpx

from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tests.support.harness import RUN_ID, ServiceProcess, wait_for
from tests.support.otlp_collector import OtlpCollector


def test_router_writes_json_lines_with_the_request_and_trace_ids(tmp_path):
    collector = OtlpCollector().start()
    etcd = LocalEtcd(client_port=free_port(), data_dir=str(tmp_path / "etcd"), log_path=str(tmp_path / "etcd.log"))
    etcd.start()
    port = free_port()
    env = {
        "TESSERA_LOG_FORMAT": "json",
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "TESSERA_TEST_RUN": RUN_ID,
    }
    args = ["router", "--etcd", etcd.endpoint, "--port", str(port), "--grpc-port", "0", "--log-level", "DEBUG"]
    router = ServiceProcess("router", args, tmp_path, env).start()
    try:
        url = f"http://127.0.0.1:{port}"
        wait_for(lambda: httpx.get(url + "/health", timeout=2).status_code == 200, 60, what="the router")
        r = httpx.post(
            url + "/v1/chat/completions",
            headers={"x-request-id": "req-json-7"},
            json={"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]},
            timeout=10,
        )
        assert r.status_code == 404

        def request_line() -> dict | None:
            for line in router.log_path.read_text().splitlines():
                record = json.loads(line)  # every line is one JSON object
                if record.get("request_id") == "req-json-7":
                    return record
            return None

        record = wait_for(request_line, 10, what="the router's log line for the request")
        assert record["service"] == "router" and record["level"] == "DEBUG"
        assert "/v1/chat/completions" in record["message"] and "404" in record["message"]
        spans = wait_for(
            lambda: [s for s in collector.snapshot() if s.name == "router.v1.chat.completions"], 10, what="the span"
        )
        assert record["trace_id"] in {s.trace_id for s in spans}  # the trace the request's span was exported in
    finally:
        router.stop()
        etcd.stop(wipe=True)
        collector.stop()
    lines = router.log_path.read_text().splitlines()
    assert len(lines) >= 3  # start, the request, the stop
    assert all(json.loads(line)["service"] == "router" for line in lines)


def test_every_service_of_a_cluster_logs_json_lines(tmp_path, monkeypatch):
    import re
    import signal

    from tests.support.harness import tessera_up

    monkeypatch.setenv("TESSERA_LOG_FORMAT", "json")
    with tessera_up(tmp_path, "--accelerators", "cpu:1") as (proc, port, lines):
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 2},
            timeout=30,
        )
        assert r.status_code == 200
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
    records = [json.loads(line) for line in lines if line.startswith("{")]
    assert {r["service"] for r in records} >= {"up", "scheduler", "autoscaler", "router"}
    text_lines = [line for line in lines if re.match(r"\d{4}-\d\d-\d\d \S+ (DEBUG|INFO|WARNING|ERROR) ", line)]
    assert text_lines == []
    (worker_log,) = (tmp_path / "workers").glob("*.log")
    worker_lines = worker_log.read_text().splitlines()
    assert worker_lines and all(json.loads(line)["service"] == "worker" for line in worker_lines)
