"""Which accelerators this machine has: one probe module per vendor, found by its vendor's name.

A vendor is a key of ``tessera/engine_model/catalog/vendors.yaml`` (engine settings) plus a
module here named after it (how to find its devices). Probes are tried in their ``ORDER``,
lowest first; the first whose ``present()`` is true names the vendor, and ``cpu`` (order
1000) always is. ``TESSERA_VENDOR`` overrides the probing.

A probe module defines:

- ``ORDER: int``: when it is tried (device files before torch, torch before the CPU);
- ``present() -> bool``: whether this machine has the vendor's devices (may import torch);
- ``identify() -> tuple[str, int]``: a catalog-style accelerator key and how many are visible;
- ``VISIBLE_DEVICES_ENV: str``: the variable that gives a process its own devices ("" if none);
- ``count_devices() -> int``: how many devices, without importing torch (0 if unknown), so a
  launcher (the local actuator) can hand each worker its own.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
from functools import cache
from types import ModuleType

FALLBACK = "cpu"


@cache
def probes() -> dict[str, ModuleType]:
    """Vendor name -> its probe module, in the order they are tried."""
    found = [
        importlib.import_module(f"{__name__}.{m.name}")
        for m in pkgutil.iter_modules(__path__)
        if not m.name.startswith("_")
    ]
    return {m.__name__.rsplit(".", 1)[-1]: m for m in sorted(found, key=lambda m: (m.ORDER, m.__name__))}


def detect_vendor() -> str:
    """``TESSERA_VENDOR`` wins; else the first probe that finds its devices."""
    forced = os.environ.get("TESSERA_VENDOR")
    if forced:
        return forced
    return next((name for name, probe in probes().items() if probe.present()), FALLBACK)


def detect_accelerator(vendor: str) -> tuple[str, int]:
    """A catalog-style key for the device model and how many are visible (the CPU: ``cpu``, 1)."""
    probe = probes().get(vendor)
    return probe.identify() if probe is not None else (FALLBACK, 1)


def device_slots() -> tuple[str, int]:
    """(the variable that selects a process's devices, how many devices) for the first vendor whose
    devices can be counted without torch; ("", 0) on a machine with none."""
    for probe in probes().values():
        n = probe.count_devices() if probe.VISIBLE_DEVICES_ENV else 0
        if n:
            return probe.VISIBLE_DEVICES_ENV, n
    return "", 0


def accelerator_key(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'AMD Instinct MI300X' -> 'mi300x'."""
    name = device_name.lower()
    for pattern in (r"\b(mi\d{3}[a-z]*)", r"\b([abhlg]\d{2,3}[a-z]*)\b", r"\b(b\d{3})\b"):
        m = re.search(pattern, name)
        if m:
            return m.group(1)
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")
