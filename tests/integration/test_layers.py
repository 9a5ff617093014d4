"""The layer contract holds, and breaks when a lower layer imports a higher one (ARCHITECTURE.md).

`lint-imports` (import-linter) checks the contracts in pyproject.toml. The broken cases run it
over a copy of the packages with one import added, exactly as a careless change would add it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.paths import REPO

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def lint_imports(root: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(root)}  # the copy's packages, not the installed ones
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", str(root / "pyproject.toml")],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def copy_with(tmp_path: Path, module: str, line: str) -> Path:
    """The repository's packages and contract, with `line` appended to `module` (a file path)."""
    for name in ("tessera", "services"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}\n")
    return tmp_path


def test_the_tree_keeps_every_contract():
    result = lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "contract"),
    [
        # a pure policy reaching up into a service
        ("tessera/placement/scorers.py", "import services.scheduler.view", "Layers import downward only"),
        # the engine model reaching up into the planner
        ("tessera/engine_model/build.py", "import tessera.planning.fleet", "Layers import downward only"),
        # one service importing another (they talk over gRPC, never by import)
        ("services/router/flow.py", "import services.worker.servicer", "Layers import downward only"),
        # the runtime reaching up into the apps
        ("tessera/runtime/net.py", "import tessera.cli.status", "Layers import downward only"),
        # a pure layer doing RPC
        ("tessera/planning/planner.py", "import grpc", "The pure layers do no network"),
        # the router loading vLLM
        ("services/router/preparation.py", "import vllm", "never loads torch or vLLM"),
        # two modules of one package importing each other
        ("tessera/placement/snapshot.py", "import tessera.placement.pipeline", "No import cycles"),
    ],
)
def test_an_import_against_the_layers_breaks_the_contract(tmp_path, module, line, contract):
    root = copy_with(tmp_path, module, line)
    result = lint_imports(root)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
