"""The CPU: always present, tried last. One "device" per worker; the local actuator hands out cores."""

from __future__ import annotations

ORDER = 1000
VISIBLE_DEVICES_ENV = ""


def present() -> bool:
    return True


def identify() -> tuple[str, int]:
    return "cpu", 1


def count_devices() -> int:
    return 0
