"""Serve a MoE model in one AsyncLLM and check what an expert/data-parallel Tessera worker relies on.

Shared by the CPU probe (benchmarks/probe_moe_cpu.py) and the GPU check
(deploy/gpu-checks/expert_parallel.py), so both check the same things:

- the engine starts with the given args (and how long that takes);
- greedy decoding works (decode tokens/s of one request);
- with several DP ranks, ``generate(..., data_parallel_rank=r)`` runs the
  request on rank r (seen from the per-rank stats vLLM's stat loggers get,
  the same stats a worker turns into per-rank load reports), and every rank
  decodes the same greedy tokens (all of them on CPU, where float32 math
  does not depend on the batch; the first ``min_agree`` in bfloat16 on GPUs,
  where another rank's batch can shift a near-tie late in a random model);
- a rank outside the instance is refused with vLLM's validation error.

Needs vLLM (imported lazily): engine processes only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

RANK_STATS_WAIT_S = 1.5  # per-rank stats reach the client with the next stats tick


async def serve_and_check(
    engine_args: dict[str, Any], prompt_ids: list[int], max_tokens: int = 32, min_agree: int | None = None
) -> dict[str, Any]:
    """Start an AsyncLLM with ``engine_args``, run the checks, shut it down; a JSON-ready result.

    ``result["ok"]`` is True only if every check passed; ``result["failures"]``
    says which did not. Exceptions from the engine propagate (the caller
    reports them with their text).
    """
    from vllm import SamplingParams, TokensPrompt
    from vllm.engine.arg_utils import AsyncEngineArgs
    from vllm.exceptions import VLLMValidationError  # not a ValueError in vLLM 0.32
    from vllm.v1.engine.async_llm import AsyncLLM

    seen: dict[int, int] = {}  # engine (DP rank) index -> most running requests it reported
    result: dict[str, Any] = {"engine_args": {k: str(v) if not _jsonable(v) else v for k, v in engine_args.items()}}
    failures: list[str] = []
    t0 = time.monotonic()
    llm = AsyncLLM.from_engine_args(AsyncEngineArgs(**engine_args), stat_loggers=[_rank_logger(seen)])
    result["start_s"] = round(time.monotonic() - t0, 1)
    try:
        parallel = llm.vllm_config.parallel_config
        dp_size = int(parallel.data_parallel_size)
        result["parallel"] = {
            "data_parallel_size": dp_size,
            "enable_expert_parallel": bool(parallel.enable_expert_parallel),
            "all2all_backend": str(parallel.all2all_backend),
            "tensor_parallel_size": int(parallel.tensor_parallel_size),
        }
        params = SamplingParams(temperature=0.0, max_tokens=max_tokens, ignore_eos=True)

        async def one(request_id: str, rank: int | None) -> list[int]:
            tokens: list[int] = []
            async for out in llm.generate(
                TokensPrompt(prompt_token_ids=prompt_ids), params, request_id, data_parallel_rank=rank
            ):
                tokens = list(out.outputs[0].token_ids)
            return tokens

        await one("warmup", None)
        t1 = time.monotonic()
        greedy = await one("greedy", None)
        result["decode_tokens_per_s"] = round(len(greedy) / max(time.monotonic() - t1, 1e-9), 1)
        result["greedy_tokens"] = greedy
        if len(greedy) != max_tokens:
            failures.append(f"greedy request produced {len(greedy)} tokens, not {max_tokens}")
        per_rank: dict[str, Any] = {}
        for rank in range(dp_size):
            seen.clear()
            tokens = await one(f"rank-{rank}", rank)
            await asyncio.sleep(RANK_STATS_WAIT_S)
            ran_on = sorted(seen)
            agree = _common_prefix(tokens, greedy)
            per_rank[str(rank)] = {"same_tokens": tokens == greedy, "agreeing_tokens": agree, "ran_on": ran_on}
            if agree < (max_tokens if min_agree is None else min(min_agree, max_tokens)):
                failures.append(f"rank {rank} decoded other greedy tokens after {agree}")
            if dp_size > 1 and ran_on != [rank]:
                failures.append(f"request pinned to rank {rank} ran on {ran_on}")
        result["per_rank"] = per_rank
        try:
            await one("out-of-range", dp_size)
            failures.append(f"rank {dp_size} of a {dp_size}-rank instance was accepted")
        except (VLLMValidationError, ValueError) as exc:
            result["out_of_range_rank"] = f"{type(exc).__name__}: {exc}"
    finally:
        llm.shutdown()
    result["failures"] = failures
    result["ok"] = not failures
    return result


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def _jsonable(value: Any) -> bool:
    return isinstance(value, (str, int, float, bool, type(None), list, dict))


def _rank_logger(seen: dict[int, int]) -> Any:
    """A vLLM stat logger class recording which engine index reports running requests."""
    from vllm.v1.metrics.loggers import StatLoggerBase

    class RankLogger(StatLoggerBase):
        def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
            self.engine_index = engine_index

        def record(
            self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
        ) -> None:
            if scheduler_stats is not None and scheduler_stats.num_running_reqs:
                seen[engine_idx] = max(seen.get(engine_idx, 0), scheduler_stats.num_running_reqs)

        def log_engine_initialized(self) -> None:
            pass

    return RankLogger
