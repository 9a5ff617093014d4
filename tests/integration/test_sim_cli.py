"""`tessera sim` as users run it: a trace, a cluster, profiles and autoscalers side by side, JSON and a plot out."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from tests.support.paths import REPO as ROOT
from tests.support.paths import TRACES
from tests.support.sim import POLICY


@pytest.mark.skipif(not (TRACES / "azure2023_code.csv").exists(), reason="needs ../shared/data/traces")
def test_tessera_sim_command_writes_vllm_bench_json_and_a_plot(tmp_path):
    out = tmp_path / "azure.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.cli",
            "sim",
            "--workload",
            str(TRACES / "azure2023_code.csv"),
            "--duration",
            "300",
            "--cluster",
            "h100:2,a100:2",
            "--model",
            "llama3-8b",
            "--slo",
            "ttft_p90=500,tpot_p90=50",
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    for key in (
        "p50_ttft_ms",
        "p90_ttft_ms",
        "p99_ttft_ms",
        "p90_tpot_ms",
        "p99_itl_ms",
        "p90_e2el_ms",
        "request_throughput",
        "output_throughput",
        "completed",
        "ttfts",
        "itls",
    ):
        assert key in data
    assert data["completed"] > 500 and data["failed"] == 0
    assert 0.0 <= data["slo_attainment"] <= 1.0
    assert set(data["utilization"]) == {"h100-sxm", "a100-80gb-sxm"}
    assert data["cost_usd"] > 0
    assert out.with_suffix(".png").stat().st_size > 10_000
    bad = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "sim", "--cluster", "h100:x"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert bad.returncode == 2 and "bad cluster entry" in bad.stderr and "Traceback" not in bad.stderr


@pytest.mark.skipif(not (TRACES / "azure2023_code.csv").exists(), reason="needs ../shared/data/traces")
def test_tessera_sim_command_with_prefill_and_decode_roles(tmp_path):
    out = tmp_path / "pd.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.cli",
            "sim",
            "--workload",
            str(TRACES / "azure2023_code.csv"),
            "--max-requests",
            "300",
            "--cluster",
            "h100:2:prefill,a100:2:decode",
            "--model",
            "llama3-8b",
            "--policy",
            "tessera_disagg",
            "--slo",
            "ttft_p90=1000,tpot_p90=50",
            "--out",
            str(out),
            "--no-plot",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    data = json.loads(out.read_text())
    assert data["completed"] == 300 and data["failed"] == 0
    assert data["utilization"]["h100-sxm:prefill"] > 0 and data["utilization"]["a100-80gb-sxm:decode"] > 0


def test_cli_runs_autoscalers_side_by_side(tmp_path):
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    trace = tmp_path / "trace.csv"
    rows = ["TIMESTAMP,ContextTokens,GeneratedTokens"]
    rng = random.Random(1)
    t = 0.0
    while t < 120:
        t += rng.expovariate(4.0 if t < 60 else 0.5)
        rows.append(f"2023-11-16 18:{int(t // 60):02d}:{t % 60:09.6f},{rng.randint(200, 2000)},{rng.randint(5, 60)}")
    trace.write_text("\n".join(rows) + "\n")
    out = tmp_path / "res.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.cli",
            "sim",
            "--workload",
            str(trace),
            "--autoscaler",
            "static,tessera",
            "--slo-policy",
            str(policy),
            "--startup-s",
            "20",
            "--out",
            str(out),
            "--no-details",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    both = json.loads(out.read_text())
    assert set(both) == {"static", "tessera"}
    for s in both.values():
        assert 0 < s["slo_attainment"] <= 1 and s["cost_usd"] > 0
        series = s["timeseries"]
        assert len(series["t"]) == len(series["arrival_rps"]) == len(series["slo_attainment"])
        assert series["instances"]
    assert out.with_suffix(".png").stat().st_size > 0
    assert (tmp_path / "res-tessera.json").exists()
    bad = subprocess.run(
        [
            sys.executable,
            "-m",
            "tessera.cli",
            "sim",
            "--workload",
            str(trace),
            "--autoscaler",
            "kubernetes",
            "--slo-policy",
            str(policy),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "static, hpa, homogeneous, tessera" in bad.stderr
