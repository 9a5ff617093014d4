"""`tessera calibrate` as a user runs it: it finds how far a machine's steps are from the model, and
`tessera sim` then runs at that machine's speed.

The machine here is a sim worker told to run prefills 2x and decode steps 1.5x slower than the
performance model (``--sim-step-time-scale``), so the right answer is known; the real vLLM run is
in the README (Performance model and simulator)."""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

from tests.support.paths import REPO as ROOT

TESSERA = [sys.executable, "-m", "tessera.cli"]


def _calibrate(out, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*TESSERA, "calibrate", "tiny", "--engine", "sim", "--accelerator", "cpu", "--out", str(out), *extra],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=ROOT,
    )


def _sim_ttft_tpot_ms(out, *extra: str) -> tuple[float, float]:
    proc = subprocess.run(
        [
            *TESSERA,
            "sim",
            "--workload",
            "shared-prefix",
            "--groups",
            "4",
            "--prompts-per-group",
            "8",
            "--prefix-len",
            "256",
            "--question-len",
            "64",
            "--output-len",
            "32",
            "--rate",
            "0.1",  # requests rarely overlap: TTFT is a prefill, TPOT a decode step
            "--cluster",
            "cpu:1",
            "--model",
            "smollm2-135m",
            "--quiet",
            "--out",
            str(out),
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(out.read_text())
    return result["median_ttft_ms"], result["median_tpot_ms"]


def test_calibrate_finds_a_slow_machine_and_tessera_sim_runs_at_its_speed(tmp_path):
    out = tmp_path / "cpu.yaml"
    proc = _calibrate(out, "--sim-step-time-scale", "prefill=2,decode=1.5", "--duration", "15")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "round 1" in proc.stdout  # progress while it measures
    doc = yaml.safe_load(out.read_text())
    scale = doc["step_time_scale"]
    assert abs(scale["prefill"] / 2.0 - 1) < 0.1, scale
    assert abs(scale["decode"] / 1.5 - 1) < 0.1, scale
    assert doc["accelerator"] == "cpu" and doc["sweep"]["requests"] > 30

    modelled = _sim_ttft_tpot_ms(tmp_path / "model.json")
    measured = _sim_ttft_tpot_ms(tmp_path / "measured.json", "--step-time-scale", str(out))
    assert abs(measured[0] / modelled[0] / scale["prefill"] - 1) < 0.1, (modelled, measured)
    assert abs(measured[1] / modelled[1] / scale["decode"] - 1) < 0.05, (modelled, measured)


def test_calibrate_on_a_machine_as_modelled_finds_no_correction(tmp_path):
    out = tmp_path / "cpu.yaml"
    proc = _calibrate(out, "--duration", "10")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    scale = yaml.safe_load(out.read_text())["step_time_scale"]
    assert abs(scale["prefill"] - 1) < 0.1 and abs(scale["decode"] - 1) < 0.1, scale


def test_a_file_that_is_not_a_calibration_is_refused_by_name(tmp_path):
    bogus = tmp_path / "bogus.yaml"
    bogus.write_text("hello: world\n")
    proc = subprocess.run(
        [*TESSERA, "sim", "--workload", "shared-prefix", "--cluster", "cpu:1", "--model", "smollm2-135m"]
        + ["--step-time-scale", str(bogus), "--out", str(tmp_path / "x.json")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert proc.returncode == 2
    assert "bogus.yaml: no step_time_scale" in proc.stderr
