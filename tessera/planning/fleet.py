"""What a fleet is made of: instance types (accelerator kind, tensor parallelism, role) and their counts.

Counts are keyed by InstanceType everywhere (plan, hysteresis, corrections by
label), so the planner's output maps one-to-one onto the autoscaler's worker
groups: one group per type, `replicas` = count.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

ROLES = ("mixed", "prefill", "decode")


@dataclass(frozen=True, order=True)
class InstanceType:
    """`tp` devices of catalog accelerator `accelerator` (canonical name) serving in `role`."""

    accelerator: str
    tp: int = 1
    role: str = "mixed"

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.tp < 1:
            raise ValueError(f"tp must be >= 1, not {self.tp}")

    @property
    def label(self) -> str:
        """As tessera.engine_model.instance.InstanceSpec labels it: h100-sxm, a100-80gb-sxm-tp2:decode."""
        tp = f"-tp{self.tp}" if self.tp > 1 else ""
        role = "" if self.role == "mixed" else f":{self.role}"
        return f"{self.accelerator}{tp}{role}"

    @property
    def devices(self) -> int:
        return self.tp


Counts = Mapping[InstanceType, int]


def devices_by_kind(counts: Counts) -> dict[str, int]:
    """Devices of each accelerator kind a fleet occupies."""
    out: dict[str, int] = {}
    for itype, n in counts.items():
        if n:
            out[itype.accelerator] = out.get(itype.accelerator, 0) + n * itype.tp
    return out


def kinds_without_room(current: Counts, target: Counts, free: Mapping[str, int]) -> list[str]:
    """Accelerator kinds where the running fleet and the target do not both fit the free devices:
    moving there means stopping running instances before their replacements are up."""
    both = {t: max(current.get(t, 0), target.get(t, 0)) for t in set(current) | set(target)}
    return sorted(k for k, used in devices_by_kind(both).items() if used > free.get(k, 0))


def nonzero(counts: Counts) -> dict[InstanceType, int]:
    """The counts without the zeros, in a stable order."""
    return {t: n for t, n in sorted(counts.items()) if n}


def describe(counts: Counts) -> str:
    """`2 x h100-sxm, 1 x a100-80gb-sxm:decode` (or `nothing`)."""
    parts = [f"{n} x {t.label}" for t, n in nonzero(counts).items()]
    return ", ".join(parts) or "nothing"
