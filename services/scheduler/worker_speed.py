"""How fast a worker's hardware is, from the performance model: what predicted-latency scorers divide by.

Worked out once per (model folder, accelerator, tensor parallelism) from the
worker's identity: the model's config.json, the catalog row of its accelerator
and the calibrated efficiency factors. A worker whose model or accelerator is
unknown here gets zeros (unknown), and scorers fall back to queue lengths.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import lru_cache

from tessera.placement.snapshot import WorkerSnapshot
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.scheduler")

UNKNOWN = {"prefill_tokens_per_s": 0.0, "decode_base_s": 0.0, "decode_step_s": 0.0}


def speed_of(identity: pb.WorkerIdentity) -> dict[str, float]:
    tp = identity.parallelism.tensor_parallel or 1
    return dict(_speed(identity.model_path, identity.accelerator, tp))


@lru_cache(maxsize=256)
def _speed(model_path: str, accelerator: str, tp: int) -> tuple[tuple[str, float], ...]:
    from tessera.engine_model.build import worker_step_timer

    try:
        timer = worker_step_timer(model_path, accelerator, tp)
        speed = {
            "prefill_tokens_per_s": timer.prefill_tokens_per_s(),
            "decode_base_s": timer.decode_base_s(),
            "decode_step_s": timer.decode_step_s(),
        }
    except (ValueError, OSError, KeyError) as exc:
        log.info(
            "no performance model for %s on %s (%s): predicted-latency scorers see it as unknown",
            model_path or "?",
            accelerator or "?",
            exc,
        )
        speed = UNKNOWN
    return tuple(speed.items())


@lru_cache(maxsize=64)
def kv_transfer_seconds(model_path: str) -> Callable[[WorkerSnapshot, WorkerSnapshot, int], float]:
    """`transfer_s(prefill, decode, tokens)` for the disaggregation policy: the catalog's links, this model's KV.

    CPU workers serve in float32 (twice the bytes per token); a model the
    performance model cannot read costs nothing to move (pairs are then
    chosen on compute and load alone), and says so once in the log.
    """

    def transfer_s(src: WorkerSnapshot, dst: WorkerSnapshot, tokens: int) -> float:
        estimate = _estimator(model_path, src.vendor == "cpu")
        return estimate(src, dst, tokens) if estimate is not None else 0.0

    return transfer_s


@lru_cache(maxsize=64)
def _estimator(model_path: str, float32: bool) -> Callable[[WorkerSnapshot, WorkerSnapshot, int], float] | None:
    from tessera.engine_model.build import resolve_arch
    from tessera.engine_model.perf.comm import kv_transfer_estimator

    try:
        return kv_transfer_estimator(resolve_arch(model_path, 4 if float32 else None))
    except (ValueError, OSError, KeyError) as exc:
        log.info("no KV size for %s (%s): prefill/decode pairs ignore transfer time", model_path or "?", exc)
        return None
