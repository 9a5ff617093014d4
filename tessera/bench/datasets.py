"""Benchmark prompts as token ids, so every backend gets the exact same input.

- ``random``: independent random prompts (vllm bench's random dataset).
- ``shared-prefix``: G groups whose prompts share a long system prefix and
  differ in a short question (what prefix caching and cache-aware routing
  are for).
"""

from __future__ import annotations

import random
from dataclasses import dataclass


@dataclass(frozen=True)
class BenchRequest:
    prompt_ids: list[int]
    output_len: int


def _sample_len(rng: random.Random, mean: int, range_ratio: float) -> int:
    lo = max(1, int(mean * (1 - range_ratio)))
    hi = max(lo, int(mean * (1 + range_ratio)))
    return rng.randint(lo, hi)


def random_requests(
    n: int, input_len: int, output_len: int, vocab: list[int], seed: int = 0, range_ratio: float = 0.0
) -> list[BenchRequest]:
    rng = random.Random(seed)
    return [
        BenchRequest(
            [rng.choice(vocab) for _ in range(_sample_len(rng, input_len, range_ratio))],
            _sample_len(rng, output_len, range_ratio),
        )
        for _ in range(n)
    ]


def shared_prefix_requests(
    groups: int,
    prompts_per_group: int,
    prefix_len: int,
    question_len: int,
    output_len: int,
    vocab: list[int],
    seed: int = 0,
) -> list[BenchRequest]:
    """Groups interleaved at random, as users of different system prompts would arrive."""
    rng = random.Random(seed)
    prefixes = [[rng.choice(vocab) for _ in range(prefix_len)] for _ in range(groups)]
    out = [
        BenchRequest(prefixes[g] + [rng.choice(vocab) for _ in range(question_len)], output_len)
        for g in range(groups)
        for _ in range(prompts_per_group)
    ]
    rng.shuffle(out)
    return out
