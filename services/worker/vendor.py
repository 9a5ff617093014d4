"""Where is this worker running? NVIDIA (CUDA), AMD (ROCm), Tenstorrent, or CPU."""

from __future__ import annotations

import os
import re
from pathlib import Path


def detect_vendor() -> str:
    """``TESSERA_VENDOR`` wins; else look for a Tenstorrent device, then ask torch."""
    forced = os.environ.get("TESSERA_VENDOR")
    if forced:
        return forced
    if Path("/dev/tenstorrent").exists():
        return "tenstorrent"
    try:
        import torch
    except ImportError:
        return "cpu"
    if torch.cuda.is_available():
        return "amd" if getattr(torch.version, "hip", None) else "nvidia"
    return "cpu"


def detect_accelerator(vendor: str) -> tuple[str, int]:
    """A catalog-style key for the device model and how many are visible."""
    if vendor in ("nvidia", "amd"):
        import torch

        name = torch.cuda.get_device_name(0)
        return accelerator_key(name), torch.cuda.device_count()
    if vendor == "tenstorrent":
        return "tenstorrent", len(list(Path("/dev/tenstorrent").iterdir()))
    return "cpu", 1


def accelerator_key(device_name: str) -> str:
    """'NVIDIA H100 80GB HBM3' -> 'h100', 'AMD Instinct MI300X' -> 'mi300x'."""
    name = device_name.lower()
    for pattern in (r"\b(mi\d{3}[a-z]*)", r"\b([abhlg]\d{2,3}[a-z]*)\b", r"\b(b\d{3})\b"):
        m = re.search(pattern, name)
        if m:
            return m.group(1)
    return re.sub(r"[^a-z0-9]+", "-", name).strip("-")
