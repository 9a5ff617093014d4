"""Counting GPUs with a vendor's command-line tool, without importing torch."""

from __future__ import annotations

import shutil
import subprocess


def count_lines(argv: list[str], prefix: str) -> int:
    """Lines of ``argv``'s output that start with ``prefix`` (0 when the tool is missing or fails)."""
    if not shutil.which(argv[0]):
        return 0
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(1 for line in out.splitlines() if line.startswith(prefix))
