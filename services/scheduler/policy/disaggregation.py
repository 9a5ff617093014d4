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

The pipelines are duck-typed (`place`, `score`, `picker`, `commit` of
services.scheduler.policy.pipeline.Pipeline) so that pipeline.py can build a
DisaggConfig from a profile without an import cycle.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from services.scheduler.policy.scorers import predicted_ttft_seconds
from services.scheduler.policy.snapshot import Decision, RequestInfo, WorkerSnapshot

if TYPE_CHECKING:
    from services.scheduler.policy.pipeline import Pipeline

DECODE_ROLES = ("decode", "mixed")
PREFILL_ROLE = "prefill"

# The prefill side when a profile's `disaggregation:` names no `prefill:` pipeline: the fastest
# predicted prefill (queued prompt work plus this prompt's uncached part, at the worker's own speed,
# so cache hits and compute speed weigh in one unit), never a worker with its batch slots full.
DEFAULT_PREFILL_PROFILE: dict[str, Any] = {
    "filters": ["model", "health", "exclude", "context_fits",
                {"name": "saturation", "max_waiting": 16, "max_kv_usage": 0.98}],
    "scorers": [{"name": "predicted_ttft", "weight": 4.0}, {"name": "kv_cache_usage", "weight": 0.2}],
    "picker": "max_score",
}

TransferSeconds = Callable[[WorkerSnapshot, WorkerSnapshot, int], float]


@dataclass(frozen=True)
class DisaggConfig:
    """A profile's `disaggregation:` section (every key optional)."""

    enabled: bool = True
    min_prompt_tokens: int = 512      # shorter (uncached) prompts are prefilled where they decode
    max_cached_fraction: float = 0.5  # prompts mostly cached on the chosen decode worker skip disaggregation
    transfer_weight: float = 1.0      # how much predicted KV transfer seconds count against a pair

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> DisaggConfig:
        """From the parsed YAML section, less its `prefill` pipeline; ValueError naming a bad key or value."""
        known = {f.name: f.type for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - set(known))
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown)}; known: {', '.join(known)}, prefill")
        cast = {"enabled": _as_bool, "min_prompt_tokens": int, "max_cached_fraction": float, "transfer_weight": float}
        try:
            cfg = cls(**{k: cast[k](v) for k, v in raw.items()})
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad value: {exc}") from None
        if cfg.min_prompt_tokens < 0 or not 0.0 <= cfg.max_cached_fraction <= 1.0 or cfg.transfer_weight < 0:
            raise ValueError("min_prompt_tokens and transfer_weight must be >= 0, max_cached_fraction in [0, 1]")
        return cfg


def _as_bool(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    raise ValueError(f"enabled must be true or false, not {value!r}")


@dataclass(frozen=True)
class PairDecision:
    """Where one request runs: a decode worker, and a prefill worker unless it prefills locally."""

    decode: WorkerSnapshot | None    # None: nothing can serve (see reason / saturated)
    prefill: WorkerSnapshot | None   # None: prefill locally on `decode`
    transfer_s: float                # predicted KV transfer time for the pair (0 when local)
    prefix_hit_tokens: int           # cached tokens on the prefill side (or decode side when local)
    reason: str = ""                 # why local, or why nothing
    saturated: bool = False          # no decode worker, because every one is saturated: queue it
    candidates: int = 0              # decode workers left after the decode pipeline's filters


def place_pair(req: RequestInfo, workers: list[WorkerSnapshot], decode_pipeline: Pipeline,
               prefill_pipeline: Pipeline, config: DisaggConfig, transfer_s: TransferSeconds,
               now: float = 0.0, index: Any = None) -> PairDecision:
    """Choose the decode worker, then whether the prompt is worth prefilling elsewhere, and where.

    The decode side comes first, among decode and mixed workers, by `decode_pipeline` (its load and
    memory decide how fast the tokens after the first come, for the whole answer). The prompt stays
    there (prefill=None) when disaggregation is off, no prefill-role worker exists, the decode side
    is a mixed worker (it serves whole requests and takes no KV from elsewhere), the prompt's
    uncached part is under min_prompt_tokens, or more than max_cached_fraction of it is already
    cached on the decode worker: in each case the transfer would cost more than the prefill saves.
    Otherwise the prefill side is chosen among prefill workers by `prefill_pipeline`'s scores,
    less transfer_weight x the pair's extra transfer time over the quickest to reach, relative to the
    soonest predicted moment the KV could be on the decode worker (prefill done plus transfer).
    Relative, so the penalty is on the scorers' 0..1 scale whatever the prompt's length, and zero
    when every prefill worker is equally far. Every prefill worker filtered out (saturated, say):
    local prefill, as a pair with no prefill side costs nothing extra.
    """
    decode_workers = [w for w in workers if w.role in DECODE_ROLES]
    decision = decode_pipeline.place(req, decode_workers, now, index)
    dec = decision.worker
    if dec is None:
        return PairDecision(None, None, 0.0, 0, decision.reason or "no decode worker", decision.saturated,
                            decision.candidates)
    local_hit = decision.prefix_hit_tokens

    def local(reason: str) -> PairDecision:
        return PairDecision(dec, None, 0.0, local_hit, reason, False, decision.candidates)

    prefill_workers = [w for w in workers if w.role == PREFILL_ROLE]
    if not config.enabled:
        return local("disaggregation disabled")
    if not prefill_workers:
        return local("no prefill workers")
    if dec.role != "decode":
        return local("a mixed worker prefills its own requests")   # it runs no KV connector
    uncached = req.prompt_tokens - local_hit
    if uncached < config.min_prompt_tokens:
        return local(f"{uncached} uncached prompt tokens < {config.min_prompt_tokens}")
    if req.prompt_tokens and local_hit / req.prompt_tokens > config.max_cached_fraction:
        return local(f"{local_hit}/{req.prompt_tokens} prompt tokens cached on the decode worker")
    pre = _choose_prefill(req, prefill_workers, dec, local_hit, prefill_pipeline, config, transfer_s, now, index)
    if isinstance(pre, str):
        return local(pre)
    chosen, moved_s = pre
    return PairDecision(dec, chosen.worker, moved_s, chosen.prefix_hit_tokens, "", False, decision.candidates)


def _choose_prefill(req: RequestInfo, prefill_workers: list[WorkerSnapshot], dec: WorkerSnapshot,
                    dec_hit: int, pipeline: Pipeline, config: DisaggConfig, transfer_s: TransferSeconds, now: float,
                    index: Any) -> tuple[Decision, float] | str:
    """The prefill worker and its predicted transfer, or why none (every one filtered out)."""
    # The prefill side runs the prompt alone, for one token (vLLM's max_tokens=1 with a KV connector).
    prompt_only = dataclasses.replace(req, max_tokens=1)
    scored = pipeline.score(prompt_only, prefill_workers, now, index)
    if isinstance(scored, Decision):
        return f"prefill side: {scored.reason}"
    hits = scored.ctx.prefix_hits
    # The decode worker's own cached prefix does not travel (vLLM's connectors fetch only the rest).
    moved = max(0, req.prompt_tokens - dec_hit)
    transfers = [transfer_s(w, dec, moved) for w in scored.candidates]
    transfer_of = {w.id: x for w, x in zip(scored.candidates, transfers)}
    ready = [predicted_ttft_seconds(prompt_only, w, hits.get(w.id, 0)) + x
             for w, x in zip(scored.candidates, transfers)]
    soonest, cheapest = min(ready), min(transfers)
    scale = config.transfer_weight / soonest if soonest > 0 else 0.0
    adjusted = [t - scale * (x - cheapest) for t, x in zip(scored.totals, transfers)]
    chosen = pipeline.picker(prompt_only, scored.candidates, adjusted, scored.ctx)
    decision = pipeline.commit(prompt_only, scored, chosen, now)
    return decision, transfer_of[chosen.id]

