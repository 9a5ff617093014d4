"""`tessera up --engine sim`: a heterogeneous cluster of simulated accelerators behind the real router and scheduler."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import threading
import time

import httpx
import openai
import pytest

from tessera.catalog import accelerators
from tessera.perf.efficiency import efficiency_for, efficiency_table, read_calibration_file
from tessera.perf.model_arch import ModelArch
from tessera.perf.step_timer import StepTimer
from tessera.net import free_port
from tests.harness import RUN_ID, wait_for

SIM_RUN = RUN_ID + "-sim"


@pytest.fixture(scope="module")
def sim_cluster(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("sim-up")
    port, grpc_port, etcd_port = free_port(), free_port(), free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "tessera.cli", "up", "--engine", "sim", "--accelerators", "h100:4,mi300x:4",
         "--model", "tiny", "--sim-arch", "llama3-8b", "--port", str(port), "--grpc-port", str(grpc_port),
         "--log-dir", str(log_dir)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "TESSERA_TEST_RUN": SIM_RUN}, start_new_session=True)
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError("tessera up exited early:\n" + "".join(lines[-30:]))
        return any("Tessera is serving" in line for line in lines)

    try:
        wait_for(serving, 120, interval=0.5, what="the simulated cluster to serve")
        yield proc, port, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def _etcd_endpoint(lines: list[str]) -> str:
    for line in lines:
        if "tessera status --etcd" in line:
            return line.split("--etcd")[1].strip()
    raise AssertionError("no etcd endpoint announced")


def test_sim_workers_register_as_their_accelerators(sim_cluster):
    proc, port, lines = sim_cluster
    models = httpx.get(f"http://127.0.0.1:{port}/v1/models", timeout=10).json()["data"]
    assert [(m["id"], m["workers"]) for m in models] == [("tiny-llama", 8)]
    status = json.loads(subprocess.run([sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd",
                                        _etcd_endpoint(lines)], capture_output=True, text=True, timeout=30).stdout)
    workers = status["workers"]
    kinds = sorted(w["accelerator"] for w in workers)
    assert kinds == ["h100-sxm"] * 4 + ["mi300x"] * 4
    assert {w["engine"] for w in workers} == {"sim"}
    # KV capacity is what the catalog's memory leaves after Llama-3.1-8B's weights: MI300X (192 GB) >> H100 (80 GB)
    blocks = {w["accelerator"]: w["kv_capacity_blocks"] for w in workers}
    assert blocks["mi300x"] > 2.5 * blocks["h100-sxm"]


def test_streams_at_the_speed_the_performance_model_predicts(sim_cluster):
    _, port, _ = sim_cluster
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
    table = efficiency_table(read_calibration_file())
    arch = ModelArch.llama3_8b()
    decode_s = {name: StepTimer(arch, accelerators.get(name), eff=efficiency_for(name, table))(decode=[2000])
                for name in ("h100-sxm", "mi300x")}
    gaps = []
    for _ in range(3):
        stream = client.completions.create(model="tiny-llama", prompt="hello " * 1000, max_tokens=48, stream=True)
        times, text = [], ""
        for chunk in stream:
            if chunk.choices and chunk.choices[0].text:
                times.append(time.perf_counter())
                text += chunk.choices[0].text
        assert "simulated engine" in text
        gaps += [b - a for a, b in zip(times, times[1:])]
    itl = statistics.median(gaps)
    # one decode step of an 8B model: ~7-9 ms on these parts; the stream must follow it, not the tiny model's speed
    assert min(decode_s.values()) * 0.8 <= itl <= max(decode_s.values()) * 1.5, (itl, decode_s)


def test_sim_worker_refuses_what_does_not_fit(sim_cluster):
    _, port, _ = sim_cluster
    r = httpx.post(f"http://127.0.0.1:{port}/v1/completions", timeout=30,
                   json={"model": "tiny-llama", "prompt": "hi", "max_tokens": 10_000_000})
    assert r.status_code == 400 and "context" in r.text


def test_ctrl_c_stops_the_simulated_cluster(sim_cluster):
    proc, _, lines = sim_cluster
    proc.send_signal(signal.SIGINT)
    assert proc.wait(60) == 0
    assert "stopped" in "".join(lines)
