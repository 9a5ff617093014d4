"""The one placement decision: a profile, a request and the fleet in; a worker, or a prefill/decode pair, out.

The live scheduler (services/scheduler/servicer.py) and the simulator (tessera/sim/simulator.py)
both call `place_request`, so what the simulator measures is what the scheduler decides: a profile
with a `disaggregation:` section places through pairing.place_pair (which also answers for a
single worker when the prompt is better prefilled where it decodes), any other profile through its
own pipeline.
"""

from __future__ import annotations

from typing import Any

from tessera.placement.pairing import PairDecision, TransferSeconds, place_pair
from tessera.placement.pipeline import Pipeline
from tessera.placement.snapshot import RequestInfo, WorkerSnapshot


def place_request(
    req: RequestInfo,
    workers: list[WorkerSnapshot],
    pipeline: Pipeline,
    transfer_s: TransferSeconds,
    now: float = 0.0,
    index: Any = None,
) -> PairDecision:
    """Where `req` runs under `pipeline`: `decode` serves it, after `prefill` when that is set.

    transfer_s(prefill, decode, tokens) predicts a pair's KV copy; it is read only for profiles that
    pair. No worker (decode None): `saturated` says whether to queue the request or fail it.
    """
    if pipeline.disaggregation is not None and pipeline.prefill_pipeline is not None:
        return place_pair(
            req, workers, pipeline, pipeline.prefill_pipeline, pipeline.disaggregation, transfer_s, now, index
        )
    d = pipeline.place(req, workers, now, index)
    score = d.scores.get(d.worker.id, 0.0) if d.worker is not None else 0.0
    return PairDecision(d.worker, None, 0.0, d.prefix_hit_tokens, d.reason, d.saturated, d.candidates, score)
