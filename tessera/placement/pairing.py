"""Placing one request on a prefill/decode pair, or on one worker that prefills it itself.

The pure decision behind disaggregated serving (see disaggregation.py for why and when it
pays): the decode worker first, by the profile's own pipeline, then whether the prompt is
worth prefilling elsewhere and on which prefill worker, weighing the KV transfer. Called by
the live scheduler and by the simulator alike.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tessera.placement.disaggregation import DECODE_ROLES, PREFILL_ROLE, DisaggConfig
from tessera.placement.kv_compat import compatible, incompatibility
from tessera.placement.pipeline import Pipeline, Scored
from tessera.placement.scorers import predicted_ttft_seconds
from tessera.placement.snapshot import PlacementDecision, RequestInfo, WorkerSnapshot

TransferSeconds = Callable[[WorkerSnapshot, WorkerSnapshot, int], float]


@dataclass(frozen=True)
class PairDecision:
    """Where one request runs: a decode worker, and a prefill worker unless it prefills locally."""

    decode: WorkerSnapshot | None  # None: nothing can serve (see reason / saturated)
    prefill: WorkerSnapshot | None  # None: prefill locally on `decode`
    transfer_s: float  # predicted KV transfer time for the pair (0 when local)
    prefix_hit_tokens: int  # cached tokens on the prefill side (or decode side when local)
    reason: str = ""  # why local, or why nothing
    saturated: bool = False  # no decode worker, because every one is saturated: queue it
    candidates: int = 0  # decode workers left after the decode pipeline's filters
    score: float = 0.0  # the decode worker's weighted score in the decode pipeline


def place_pair(
    req: RequestInfo,
    workers: list[WorkerSnapshot],
    decode_pipeline: Pipeline,
    prefill_pipeline: Pipeline,
    config: DisaggConfig,
    transfer_s: TransferSeconds,
    now: float = 0.0,
    index: Any = None,
) -> PairDecision:
    """Choose the decode worker, then whether the prompt is worth prefilling elsewhere, and where.

    The decode side comes first, among decode and mixed workers, by `decode_pipeline` (its load and
    memory decide how fast the tokens after the first come, for the whole answer). The prompt stays
    there (prefill=None) when disaggregation is off, no prefill-role worker exists, the decode side
    is a mixed worker (it serves whole requests and takes no KV from elsewhere), the prompt's
    uncached part is under min_prompt_tokens, or more than max_cached_fraction of it is already
    cached on the decode worker: in each case the transfer would cost more than the prefill saves.
    Only prefill workers whose KV the decode worker can read are considered (kv_compat.compatible:
    same engine, model, dtypes with the fp8 format, backend, connector; none: local prefill).
    Otherwise the prefill side is chosen among prefill workers by `prefill_pipeline`'s scores,
    less transfer_weight x the pair's extra transfer time over the quickest to reach, relative to the
    soonest predicted moment the KV could be on the decode worker (prefill done plus transfer).
    Relative, so the penalty is on the scorers' 0..1 scale whatever the prompt's length, and zero
    when every prefill worker is equally far. Every prefill worker filtered out (saturated, say):
    local prefill, as a pair with no prefill side costs nothing extra. With only_when_it_pays (the
    default profile), the chosen pair must also beat local prefill on predicted seconds
    (`local_and_pair_seconds`), so a profile that pairs by default never pays a copy for nothing.
    """
    decode_workers = [w for w in workers if w.role in DECODE_ROLES]
    decision = decode_pipeline.place(req, decode_workers, now, index)
    dec = decision.worker
    if dec is None:
        return PairDecision(
            None, None, 0.0, 0, decision.reason or "no decode worker", decision.saturated, decision.candidates
        )
    local_hit = decision.prefix_hit_tokens
    score = decision.scores.get(dec.id, 0.0)

    def local(reason: str) -> PairDecision:
        return PairDecision(dec, None, 0.0, local_hit, reason, False, decision.candidates, score)

    prefill_workers = [w for w in workers if w.role == PREFILL_ROLE]
    if not config.enabled:
        return local("disaggregation disabled")
    if not prefill_workers:
        return local("no prefill workers")
    if dec.role != "decode":
        return local("a mixed worker prefills its own requests")  # it runs no KV connector
    uncached = req.prompt_tokens - local_hit
    if uncached < config.min_prompt_tokens:
        return local(f"{uncached} uncached prompt tokens < {config.min_prompt_tokens}")
    if req.prompt_tokens and local_hit / req.prompt_tokens > config.max_cached_fraction:
        return local(f"{local_hit}/{req.prompt_tokens} prompt tokens cached on the decode worker")
    able = [w for w in prefill_workers if compatible(w.kv_compat, dec.kv_compat)]
    if not able:
        why = incompatibility(prefill_workers[0].kv_compat, dec.kv_compat)
        return local(f"no prefill worker can hand KV to {dec.id} ({prefill_workers[0].id}: {why})")
    pre = _choose_prefill(req, able, dec, local_hit, prefill_pipeline, config, transfer_s, now, index)
    if isinstance(pre, str):
        return local(pre)
    scored, chosen, moved_s, ready_s = pre
    if config.only_when_it_pays:
        local_cost, pair_cost = local_and_pair_seconds(req, dec, local_hit, ready_s, config.interference_weight)
        if pair_cost > local_cost:
            return local(f"local prefill predicted cheaper ({local_cost * 1e3:.0f} ms against {pair_cost * 1e3:.0f})")
    committed = prefill_pipeline.commit(dataclasses.replace(req, max_tokens=1), scored, chosen, now)
    return PairDecision(dec, chosen, moved_s, committed.prefix_hit_tokens, "", False, decision.candidates, score)


def local_and_pair_seconds(
    req: RequestInfo, dec: WorkerSnapshot, local_hit: int, kv_ready_s: float, interference_weight: float
) -> tuple[float, float]:
    """What prefilling `req` on its decode worker costs, against prefilling it on a prefill worker whose
    KV would be on the decode worker `kv_ready_s` from now; both in seconds, from the performance model.

    Local: this request's predicted time to first token there, plus interference_weight x the decode
    time the streams already running there lose while its uncached part is prefilled among them
    (every one of them waits out the prefill: DistServe's argument, and what makes TPOT). Pair:
    the KV ready on the decode worker, plus one decode step there to compute the prompt's last token,
    and no stall for anyone. So an idle decode worker prefills a prompt itself (the copy would only
    add), while a busy one hands long prompts off as soon as their stall outweighs the transfer.
    """
    uncached = max(0, req.prompt_tokens - local_hit)
    local_ttft = predicted_ttft_seconds(req, dec, local_hit)
    stall = dec.num_running * uncached / (dec.prefill_tokens_per_s or 1e3)
    pair = kv_ready_s + dec.step_seconds(dec.num_running + 1)
    return local_ttft + interference_weight * stall, pair


def _choose_prefill(
    req: RequestInfo,
    prefill_workers: list[WorkerSnapshot],
    dec: WorkerSnapshot,
    dec_hit: int,
    pipeline: Pipeline,
    config: DisaggConfig,
    transfer_s: TransferSeconds,
    now: float,
    index: Any,
) -> tuple[Scored, WorkerSnapshot, float, float] | str:
    """The prefill worker (scored, not yet committed), its predicted transfer and the predicted moment
    the KV is on the decode worker; or why none (every one filtered out)."""
    # The prefill side runs the prompt alone, for one token (vLLM's max_tokens=1 with a KV connector).
    prompt_only = dataclasses.replace(req, max_tokens=1)
    scored = pipeline.score(prompt_only, prefill_workers, now, index)
    if isinstance(scored, PlacementDecision):
        return f"prefill side: {scored.reason}"
    hits = scored.ctx.prefix_hits
    # The decode worker's own cached prefix does not travel (vLLM's connectors fetch only the rest).
    moved = max(0, req.prompt_tokens - dec_hit)
    transfers = [transfer_s(w, dec, moved) for w in scored.candidates]
    ready = [
        predicted_ttft_seconds(prompt_only, w, hits.get(w.id, 0)) + x for w, x in zip(scored.candidates, transfers)
    ]
    soonest, cheapest = min(ready), min(transfers)
    scale = config.transfer_weight / soonest if soonest > 0 else 0.0
    adjusted = [t - scale * (x - cheapest) for t, x in zip(scored.totals, transfers)]
    chosen = pipeline.picker(prompt_only, scored.candidates, adjusted, scored.ctx)
    i = next(i for i, w in enumerate(scored.candidates) if w.id == chosen.id)
    return scored, chosen, transfers[i], ready[i]
