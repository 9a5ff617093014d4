"""Where things are, for tests that read the repository's own files or the team's shared data."""

from __future__ import annotations

from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = REPO.parent / "shared"  # reference traces and profiles (../shared/data, not in the repository)
TRACES = SHARED / "data" / "traces"
