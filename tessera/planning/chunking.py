"""The prefill chunk size (vLLM's `max_num_batched_tokens`) each instance type runs with.

With chunked prefill, every engine step carries the running decodes plus up to the
token budget of prompt work. When prompts arrive in a clump (the Azure code trace holds
60-80 arrivals, 150k prompt tokens, within two seconds at only 4-12 req/s averaged over
its busiest half-minutes), every step for a second or two carries a full budget of
prompt tokens, and every answer decoding through it sees those steps. vLLM's default
budget of 8,192 tokens makes such a step take about 94 ms on an MI300X at tp 2, so
short answers break a 50 ms TPOT target however many instances the planner adds (they
join a minute later). A Poisson capacity model cannot see clumps; a budget that keeps
one full step within the TPOT target bounds them instead, at the price of a few per cent
of prompt throughput per instance (each chunk pays the step's weight reads again),
which the capacity model then counts, because the engine model it prices carries the
chosen budget. vLLM's own tuning guide gives the same advice: a smaller
max_num_batched_tokens for better inter-token latency.

Pure: takes the engine's step-time function and returns a number.
"""

from __future__ import annotations

from collections.abc import Callable

StepTime = Callable[..., float]  # StepTimer: (prefill=[(new, cached)], decode=[context]) -> seconds

CHUNK_ARG = "max_num_batched_tokens"  # the vLLM engine argument that sets the budget
CHUNK_GRANULE = 512  # budgets are multiples of this (and so of every block size in use)
DECODES_BESIDE = 32  # decodes a full step carries beside the chunk (a busy instance's batch)
CONTEXT_BESIDE = 2048  # their context length (tokens)


def prefill_chunk(
    step_time: StepTime,
    default_tokens: int,
    tpot_s: float,
    decodes: int = DECODES_BESIDE,
    context: int = CONTEXT_BESIDE,
) -> int:
    """The largest token budget, a multiple of CHUNK_GRANULE no larger than `default_tokens`, whose
    step (a chunk of that many new prompt tokens beside `decodes` decodes of `context` tokens)
    stays within `tpot_s`. The default itself when it already does; CHUNK_GRANULE (or the default,
    if smaller) when even that breaks the target: the capacity model then finds the type cannot
    hold the TPOT target while prefilling, and the planner gives it other roles or other types."""
    if default_tokens <= CHUNK_GRANULE:
        return default_tokens

    def step(tokens: int) -> float:
        return step_time(prefill=[(tokens, 0)], decode=[context] * decodes)

    if step(default_tokens) <= tpot_s:
        return default_tokens
    lo, hi = 1, default_tokens // CHUNK_GRANULE  # step(lo * granule) may break too: then lo
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if step(mid * CHUNK_GRANULE) <= tpot_s else (lo, mid)
    return lo * CHUNK_GRANULE
