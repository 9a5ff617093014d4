"""Prefill/decode disaggregation as pure policy: which decode worker, and whether and where to prefill.

A long prompt prefilled on the worker that decodes it stalls every decode in
that worker's batch for the length of the prefill (one 8k-token chunk costs an
H100 about 0.2 s serving Llama-3.1-8B, thirty times a decode step). Sending the
prompt to a prefill-role worker and moving its KV cache to the decode worker
keeps decode steps short, at the price of the transfer and of prefill capacity
that decodes nothing. Whether that pays depends on the prompt (short or mostly
cached: not worth a transfer) and on the pair (a fast prefill worker behind a
slow link may be worse than a slower one close by); this module makes that
call from plain snapshots, for the live scheduler and the simulator alike.

This module holds a profile's `disaggregation:` section and the default prefill side;
the decision itself (which pair, or local prefill) is `pairing.place_pair`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DECODE_ROLES = ("decode", "mixed")
PREFILL_ROLE = "prefill"

# The prefill side when a profile's `disaggregation:` names no `prefill:` pipeline: the fastest
# predicted prefill (queued prompt work plus this prompt's uncached part, at the worker's own speed,
# so cache hits and compute speed weigh in one unit), never a worker with its batch slots full.
DEFAULT_PREFILL_PROFILE: dict[str, Any] = {
    "filters": [
        "model",
        "health",
        "exclude",
        "context_fits",
        {"name": "saturation", "max_waiting": 16, "max_kv_usage": 0.98},
    ],
    "scorers": [{"name": "predicted_ttft", "weight": 4.0}, {"name": "kv_cache_usage", "weight": 0.2}],
    "picker": "max_score",
}


@dataclass(frozen=True)
class DisaggConfig:
    """A profile's `disaggregation:` section (every key optional)."""

    enabled: bool = True
    min_prompt_tokens: int = 512  # shorter (uncached) prompts are prefilled where they decode
    max_cached_fraction: float = 0.5  # prompts mostly cached on the chosen decode worker skip disaggregation
    transfer_weight: float = 1.0  # how much predicted KV transfer seconds count against a pair
    # Pair only when the pair's predicted seconds beat local prefill's (pairing.local_and_pair_seconds);
    # off: every long enough, uncached prompt is paired (tessera_disagg).
    only_when_it_pays: bool = False
    interference_weight: float = 1.0  # decode seconds a local prefill steals from others, against its TTFT

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DisaggConfig:
        """From the parsed YAML section, less its `prefill` pipeline; ValueError naming a bad key or value."""
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}; known: {', '.join(known)}, prefill")
        cast: dict[str, Callable[[Any], Any]] = {
            "enabled": _as_bool,
            "only_when_it_pays": _as_bool,
            "interference_weight": float,
            "min_prompt_tokens": int,
            "max_cached_fraction": float,
            "transfer_weight": float,
        }
        try:
            cfg = cls(**{k: cast[k](v) for k, v in raw.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad value: {exc}") from None
        if (
            cfg.min_prompt_tokens < 0
            or not 0.0 <= cfg.max_cached_fraction <= 1.0
            or cfg.transfer_weight < 0
            or cfg.interference_weight < 0
        ):
            raise ValueError(
                "min_prompt_tokens, transfer_weight and interference_weight must be >= 0, max_cached_fraction in [0, 1]"
            )
        return cfg


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"enabled must be true or false, not {value!r}")
