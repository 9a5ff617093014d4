"""A clean install: `pip install .` with no extras runs the control plane and a simulated cluster, without torch.

One fresh venv per run (pip's cache under /tmp, or PIP_CACHE_DIR, makes reruns fast): what a user
gets from the distribution alone, with none of the dev venv's packages and none of the checkout's
modules on the path. Building happens in a copy of the checkout, since setuptools leaves build/
and *.egg-info behind in the folder it builds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import httpx
import psutil
import pytest

from tests.support.harness import tessera_up
from tests.support.paths import REPO

PIP_CACHE = os.environ.get("PIP_CACHE_DIR") or "/tmp/tessera-pip-cache"
VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
# Modules that need an extra, and the package that extra brings: everything else must import.
EXTRA_ONLY = {
    "services.autoscaler.k8s_actuator": "kubernetes",  # the k8s extra
    "services.worker.vllm_cpu_collectives": "vllm",  # the cpu/gpu engine extra
}
HEAVY = ("torch", "vllm", "transformers", "matplotlib")


def _clean_env() -> dict[str, str]:
    """The environment without this checkout or the dev venv on the path."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    return {**env, "PIP_CACHE_DIR": PIP_CACHE, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _run(cmd: list[str], cwd: Path, timeout: float = 240, clean: bool = True) -> subprocess.CompletedProcess:
    """``cmd`` in the clean environment, or (``clean=False``, for this venv's build and twine) in this one."""
    env = _clean_env() if clean else {**os.environ, "PIP_CACHE_DIR": PIP_CACHE}
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """The checkout's files (tracked, and untracked ones git does not ignore), copied aside."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    dest = tmp_path_factory.mktemp("source")
    for name in filter(None, listed.split("\0")):
        src = REPO / name
        if src.is_file():  # a deleted but still tracked file is listed too
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


@pytest.fixture(scope="module")
def venv(source, tmp_path_factory) -> Path:
    """A fresh venv with `pip install .` and no extras."""
    root = tmp_path_factory.mktemp("clean") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(root)], check=True, env=_clean_env())
    done = _run([str(root / "bin" / "python"), "-m", "pip", "install", "--quiet", "."], cwd=source)
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_install_is_consistent_versioned_and_light(venv, tmp_path):
    check = _run([str(venv / "bin" / "pip"), "check"], cwd=tmp_path)
    assert check.returncode == 0, check.stdout + check.stderr
    version = _run([str(venv / "bin" / "tessera"), "--version"], cwd=tmp_path)
    assert version.returncode == 0 and version.stdout.strip() == f"tessera {VERSION}", version.stdout + version.stderr
    found = _run(
        [
            str(venv / "bin" / "python"),
            "-c",
            f"import importlib.util as u; print([m for m in {HEAVY} if u.find_spec(m)])",
        ],
        cwd=tmp_path,
    )
    assert found.stdout.strip() == "[]", found.stdout + found.stderr  # not installed, so never imported


def test_every_control_plane_module_imports(venv, tmp_path):
    """Each module of the installed packages imports (but those of an extra), so every import is declared."""
    probe = (
        "import importlib, json, pkgutil, sys, services, tessera\n"
        "failed = {}\n"
        "for pkg in (tessera, services):\n"
        "    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + '.'):\n"
        "        if m.name.endswith('.__main__'):\n"
        "            continue\n"
        "        try:\n"
        "            importlib.import_module(m.name)\n"
        "        except ImportError as exc:\n"
        "            failed[m.name] = exc.name\n"
        "print(json.dumps({'failed': failed, 'file': tessera.__file__,\n"
        f"                  'heavy': [m for m in {HEAVY} if m in sys.modules]}}))\n"
    )
    done = _run([str(venv / "bin" / "python"), "-c", probe], cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["file"].startswith(str(venv)), result["file"]  # the installed copy, not the checkout
    assert result["failed"] == EXTRA_ONLY
    assert result["heavy"] == []


def test_sim_cluster_serves_chat_from_the_clean_install(venv, tmp_path):
    env = {**_clean_env(), "TESSERA_MODEL_CACHE": str(tmp_path / "models")}  # the tiny model built here
    with tessera_up(
        tmp_path / "logs", "--workers", "1", tessera=(str(venv / "bin" / "tessera"),), env=env, cwd=tmp_path
    ) as (proc, port, lines):
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5},
        )
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] == 5  # a simulated engine gives exactly max_tokens
        processes = psutil.Process(proc.pid).children(recursive=True)
        pythons = [p for p in processes if "tessera.cli" in p.cmdline()]
        names = {p.cmdline()[p.cmdline().index("tessera.cli") + 1] for p in pythons}
        assert {"scheduler", "autoscaler", "router", "worker"} <= names, names
        for p in pythons:
            assert Path(p.cmdline()[0]).parent == venv / "bin", p.cmdline()  # the clean venv's interpreter
            mapped = Path(f"/proc/{p.pid}/maps").read_text()
            assert "torch" not in mapped, f"{names}: a torch library is loaded"
    # The worker needed no weights: only the tokenizer and config were built, without torch.
    assert (tmp_path / "models" / "no-weights" / "tiny" / "config.json").is_file()
    assert not (tmp_path / "models" / "tiny").exists()


def test_sim_without_matplotlib_writes_json_and_says_how_to_plot(venv, tmp_path):
    out = tmp_path / "sim.json"
    done = _run(
        [
            str(venv / "bin" / "tessera"),
            "sim",
            "--workload",
            "shared-prefix",
            "--groups",
            "2",
            "--prompts-per-group",
            "4",
            "--prefix-len",
            "256",
            "--question-len",
            "32",
            "--output-len",
            "16",
            "--cluster",
            "h100:1",
            "--out",
            str(out),
        ],
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(out.read_text())["completed"] == 8
    assert not out.with_suffix(".png").exists()
    assert "pip install 'tessera-inference[plot]'" in done.stderr


def test_build_and_twine_check(source, tmp_path):
    """The sdist and wheel build, pass twine's checks, and carry the data files and the command."""
    dist = tmp_path / "dist"
    built = _run(
        [sys.executable, "-m", "build", "--outdir", str(dist), str(source)], cwd=tmp_path, timeout=300, clean=False
    )
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    wheels, sdists = list(dist.glob("*.whl")), list(dist.glob("*.tar.gz"))
    assert [w.name for w in wheels] == [f"tessera_inference-{VERSION}-py3-none-any.whl"]
    assert [s.name for s in sdists] == [f"tessera_inference-{VERSION}.tar.gz"]
    checked = _run(
        [sys.executable, "-m", "twine", "check", "--strict", *map(str, wheels + sdists)], cwd=tmp_path, clean=False
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    with zipfile.ZipFile(wheels[0]) as whl:
        names = set(whl.namelist())
        info = f"tessera_inference-{VERSION}.dist-info"
        entry_points = whl.read(f"{info}/entry_points.txt").decode()
    for data in (
        "tessera/engine_model/catalog/vendors.yaml",
        "tessera/placement/profiles/tessera.yaml",
        "tessera/v1/common_pb2.pyi",
    ):
        assert data in names, data
    assert "tessera = tessera.cli:main" in entry_points
