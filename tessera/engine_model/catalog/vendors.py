"""Load the per-vendor engine settings table (vendors.yaml).

The launch shape of expert/data-parallel MoE instances built from a row's
``expert_parallel`` part lives in :mod:`tessera.engine_model.catalog.expert_parallel`.
"""

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
    expert_parallel: ExpertParallelSettings | None = None  # None: the vendor runs no EP
    warmup_s: float = 0.0  # engine start besides loading weights: imports, compile, graph capture, profiling


@dataclass(frozen=True)
class ExpertParallelSettings:
    """How one vendor runs MoE models with expert and data parallelism (vendors.yaml)."""

    all2all_backend: dict[str, str]  # role -> vLLM all2all_backend
    engine_args: dict[str, Any] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)
    requires: tuple[str, ...] = ()  # Python packages the non-default backends import


@cache
def _table() -> dict[str, dict[str, Any]]:
    text = resources.files("tessera.engine_model.catalog").joinpath("vendors.yaml").read_text()
    table: dict[str, dict[str, Any]] = yaml.safe_load(text)
    return table


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
        expert_parallel=_expert_parallel(row.get("expert_parallel") or {}),
        warmup_s=float(row.get("warmup_s", 0.0)),
    )


def _expert_parallel(row: dict[str, Any]) -> ExpertParallelSettings | None:
    if not row.get("supported", False):
        return None
    return ExpertParallelSettings(
        all2all_backend={str(k): str(v) for k, v in (row.get("all2all_backend") or {}).items()},
        engine_args=dict(row.get("engine_args") or {}),
        env={k: str(v) for k, v in (row.get("env") or {}).items()},
        requires=tuple(row.get("requires") or ()),
    )
