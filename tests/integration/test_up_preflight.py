"""`tessera up` refuses what cannot work in a second, before it starts anything: too few GPUs for the
workers (a fake nvidia-smi stands in for the GPUs), a model folder that is not there, an engine
argument no engine takes, a --config key that is no option."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tessera.runtime.net import free_port

FAKE_NVIDIA_SMI = '#!/bin/sh\n[ "$1" = "-L" ] && echo "GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-7e57)"\n'


@pytest.fixture()
def one_gpu(tmp_path):
    """PATH with an nvidia-smi that lists one H100."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    smi = bin_dir / "nvidia-smi"
    smi.write_text(FAKE_NVIDIA_SMI)
    smi.chmod(0o755)
    return {"PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}


def _up(tmp_path, *args: str, env: dict[str, str] | None = None) -> tuple[int, str, float]:
    log_dir = tmp_path / "logs"
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "up", *args, "--port", str(free_port()), "--log-dir", str(log_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )
    took = time.monotonic() - t0
    if out.returncode == 2:
        assert not log_dir.exists(), "refused, yet it started something (its log dir exists)"
    return out.returncode, out.stdout + out.stderr, took


def test_two_workers_on_one_gpu_that_cannot_share_it_are_refused_naming_the_gpu_count(tmp_path, one_gpu):
    code, out, took = _up(tmp_path, "tiny", "--workers", "2", "--gpu-memory-utilization", "0.9", env=one_gpu)
    assert code == 2 and took < 5
    assert "on 1 GPU" in out and "use at most 0.45" in out


def test_two_workers_on_one_gpu_split_its_memory(tmp_path, one_gpu):
    code, out, took = _up(tmp_path, "tiny", "--workers", "2", "--check", env=one_gpu)
    assert code == 0 and took < 5, out
    assert "{'gpu_memory_utilization': 0.45}" in out
    assert "2 workers per GPU" in out


def test_a_worker_wider_than_the_machine_is_refused(tmp_path, one_gpu):
    code, out, took = _up(tmp_path, "tiny", "-tp", "2", env=one_gpu)
    assert code == 2 and took < 5
    assert "tensor parallel size 2 needs 2 GPUs per worker; this machine has 1 GPU" in out


def test_a_missing_model_folder_is_refused(tmp_path):
    code, out, _ = _up(tmp_path, str(tmp_path / "no-such-model"), "--engine", "sim")
    assert code == 2
    assert f"model folder {tmp_path / 'no-such-model'} does not exist" in out


def test_an_unknown_engine_argument_is_refused_by_name(tmp_path):
    code, out, took = _up(tmp_path, "tiny", "--engine", "sim", "--engine-arg", "max_num_seqz=4")
    assert code == 2 and took < 5
    assert "unknown engine argument max_num_seqz" in out


def test_config_file_options_with_the_command_line_winning(tmp_path):
    config = tmp_path / "up.yaml"
    config.write_text("model: tiny\nengine: sim\nmax-model-len: 4096\ndtype: float16\nengine-arg: [max_num_seqs=8]\n")
    code, out, _ = _up(tmp_path, "--config", str(config), "--max-model-len", "1024", "--check")
    assert code == 0, out
    expected = {"max_num_seqs": 8, "max_model_len": 1024, "dtype": "float16"}  # the file's, 1024 from the command line
    assert f"preflight passed: tiny, engine arguments {expected}" in out


def test_model_positional_wins_over_the_config_file_but_not_over_model_flag(tmp_path):
    config = tmp_path / "up.yaml"
    config.write_text("model: tiny\nengine: sim\n")
    code, out, _ = _up(tmp_path, "tiny-moe", "--config", str(config), "--check")
    assert code == 0 and "preflight passed: tiny-moe" in out, out
    code, out, _ = _up(tmp_path, "tiny-moe", "--model", "tiny", "--check")
    assert code == 2 and "two models: tiny-moe and --model tiny" in out


def test_config_file_with_an_unknown_key_is_refused_by_name(tmp_path):
    config = tmp_path / "up.yaml"
    config.write_text("model: tiny\nworkerz: 2\n")
    code, out, _ = _up(tmp_path, "--config", str(config))
    assert code == 2
    assert "unknown key 'workerz'" in out


def test_engine_argument_names_come_from_vllm_without_importing_it():
    code = (
        "import sys, tessera.cli.up; from tessera.cli.engine_arg_names import engine_arg_names;"
        "names, source = engine_arg_names();"
        "print(len(names), 'block_size' in names, [m for m in ('torch', 'vllm') if m in sys.modules], source)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert int(out[0]) > 40 and out[1] == "True"
    assert out[2] == "[]"  # neither torch nor vLLM loaded: `up` stays a light launcher
