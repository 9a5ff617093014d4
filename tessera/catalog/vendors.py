"""Load the per-vendor engine settings table (vendors.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml


@dataclass(frozen=True)
class VendorSettings:
    vendor: str
    package: str
    env: dict[str, str] = field(default_factory=dict)
    engine_args: dict[str, Any] = field(default_factory=dict)


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("tessera.catalog").joinpath("vendors.yaml").read_text()
    return yaml.safe_load(text)


def vendor_names() -> list[str]:
    """The vendors the table knows (the catalog checks its rows against these)."""
    return list(_table())


def vendor_settings(vendor: str) -> VendorSettings:
    table = _table()
    if vendor not in table:
        raise ValueError(f"no engine settings for vendor {vendor!r}; known: {', '.join(table)}")
    row = table[vendor]
    return VendorSettings(
        vendor=vendor,
        package=str(row.get("package", "")),
        env={k: str(v) for k, v in (row.get("env") or {}).items()},
        engine_args=dict(row.get("engine_args") or {}),
    )
