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
    """`tp` x `dp` x `cp` devices of catalog accelerator `accelerator` (canonical name) serving in `role`.

    `dp` > 1: data-parallel attention ranks of `tp` devices each, with the experts of an MoE model
    spread over all dp x tp devices (vLLM's DP + EP deployment). `cp` > 1: a prefill instance whose
    prompts are split over `cp` ranks (vLLM's prefill context parallelism).
    """

    accelerator: str
    tp: int = 1
    role: str = "mixed"
    dp: int = 1
    cp: int = 1

    def __post_init__(self) -> None:
        if self.role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        if self.tp < 1 or self.dp < 1 or self.cp < 1:
            raise ValueError(f"tp, dp and cp must be >= 1, not {self.tp}, {self.dp}, {self.cp}")
        if self.cp > 1 and (self.role != "prefill" or self.dp > 1):
            raise ValueError("context parallelism is a prefill instance's shape (and not with dp)")

    @property
    def label(self) -> str:
        """As tessera.engine_model.instance.InstanceSpec labels it: h100-sxm, a100-80gb-sxm-tp2:decode,
        mi300x-dp8:decode (DP attention + EP), a100-80gb-sxm-cp4:prefill."""
        tp = f"-tp{self.tp}" if self.tp > 1 else ""
        dp = f"-dp{self.dp}" if self.dp > 1 else ""
        cp = f"-cp{self.cp}" if self.cp > 1 else ""
        role = "" if self.role == "mixed" else f":{self.role}"
        return f"{self.accelerator}{tp}{dp}{cp}{role}"

    @property
    def devices(self) -> int:
        return self.tp * self.dp * self.cp

    @property
    def engine_key(self) -> EngineKey:
        """The capacity model's key for this shape's engine: (accelerator, tp) for a plain shape,
        (accelerator, tp, dp, cp) otherwise (the role does not change the engine)."""
        if self.dp == 1 and self.cp == 1:
            return (self.accelerator, self.tp)
        return (self.accelerator, self.tp, self.dp, self.cp)


EngineKey = tuple[str, int] | tuple[str, int, int, int]


Counts = Mapping[InstanceType, int]


def devices_by_kind(counts: Counts) -> dict[str, int]:
    """Devices of each accelerator kind a fleet occupies."""
    out: dict[str, int] = {}
    for itype, n in counts.items():
        if n:
            out[itype.accelerator] = out.get(itype.accelerator, 0) + n * itype.devices
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
