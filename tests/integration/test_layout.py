"""Contracts that keep the project honest: stubs are fresh, the router stays light."""

from __future__ import annotations

import subprocess
import sys


def test_generated_stubs_match_the_protos():
    result = subprocess.run(
        [sys.executable, "-m", "tessera.runtime.protogen", "--check"], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr


def test_router_imports_neither_torch_nor_vllm():
    code = (
        "import sys, services.router.main, services.scheduler.main, services.autoscaler.main, tessera.cli.status;"
        "heavy = [m for m in ('torch', 'vllm', 'transformers') if m in sys.modules];"
        "print(','.join(heavy))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""
