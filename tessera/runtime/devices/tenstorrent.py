"""Tenstorrent cards: device files under /dev/tenstorrent (tt-kmd), no torch needed."""

from __future__ import annotations

from pathlib import Path

ORDER = 10
DEVICES = Path("/dev/tenstorrent")
VISIBLE_DEVICES_ENV = ""  # tt-metal picks devices itself; the local actuator does not split them


def present() -> bool:
    return DEVICES.exists()


def identify() -> tuple[str, int]:
    return "tenstorrent", len(list(DEVICES.iterdir()))


def count_devices() -> int:
    return len(list(DEVICES.iterdir())) if DEVICES.exists() else 0
