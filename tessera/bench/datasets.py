"""Benchmark prompts as token ids, so every backend gets the exact same input.

- ``random``: independent random prompts (vllm bench's random dataset).
- ``shared-prefix``: G groups whose prompts share a long system prefix and
  differ in a short question (what prefix caching and cache-aware routing
  are for).
- ``sharegpt``: real conversations from a ShareGPT JSON file (vllm bench's
  sharegpt dataset: first turn as prompt, the answer's length as output).
"""

from __future__ import annotations

import random
from collections.abc import Callable
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
    n: int,
    input_len: int,
    output_len: int,
    vocab: list[int],
    seed: int = 0,
    range_ratio: float | tuple[float, float] = 0.0,
    prefix_len: int = 0,
) -> list[BenchRequest]:
    """Random prompts; ``prefix_len`` tokens shared by all of them come first (vLLM's --random-prefix-len).

    ``range_ratio``: lengths vary by +- this fraction, or (input's, output's)."""
    rng = random.Random(seed)
    in_ratio, out_ratio = range_ratio if isinstance(range_ratio, tuple) else (range_ratio, range_ratio)
    prefix = [rng.choice(vocab) for _ in range(prefix_len)]
    return [
        BenchRequest(
            prefix + [rng.choice(vocab) for _ in range(_sample_len(rng, input_len, in_ratio))],
            _sample_len(rng, output_len, out_ratio),
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


# vLLM's ShareGPT filter (vllm/benchmarks/datasets: is_valid_sequence), so both tools draw the same requests.
SHAREGPT_MIN_LEN = 4
SHAREGPT_MAX_PROMPT_LEN = 1024
SHAREGPT_MAX_TOTAL_LEN = 2048


def sharegpt_pairs(entries: list) -> list[tuple[str, str]]:
    """(first human turn, first answer) of each conversation with at least two turns, in file order.

    Anything else in the file (fewer turns, missing fields) is skipped, as vLLM skips it.
    """
    out = []
    for entry in entries:
        turns = entry.get("conversations") if isinstance(entry, dict) else None
        if not isinstance(turns, list) or len(turns) < 2:
            continue
        prompt, answer = (t.get("value") if isinstance(t, dict) else None for t in turns[:2])
        if isinstance(prompt, str) and isinstance(answer, str):
            out.append((prompt, answer))
    return out


def sharegpt_requests(
    pairs: list[tuple[str, str]],
    n: int,
    encode: Callable[[str], list[int]],
    output_len: int | None = None,
    seed: int = 0,
    oversample: bool = True,
) -> list[BenchRequest]:
    """``n`` requests from ShareGPT conversations, drawn as ``vllm bench serve --dataset-name sharegpt`` draws them.

    Shuffled by ``seed``; the prompt is the first turn, the output length the answer's token count
    (or ``output_len``); too short or too long pairs are skipped; with fewer valid pairs than ``n``
    some are repeated (``oversample``). Tokenizes only as many as it needs.
    """
    order = list(pairs)
    random.Random(seed).shuffle(order)
    out: list[BenchRequest] = []
    for prompt, answer in order:
        if len(out) >= n:
            break
        prompt_ids = encode(prompt)
        length = len(encode(answer)) if output_len is None else output_len
        too_short = len(prompt_ids) < SHAREGPT_MIN_LEN or (output_len is None and length < SHAREGPT_MIN_LEN)
        too_long = len(prompt_ids) > SHAREGPT_MAX_PROMPT_LEN or len(prompt_ids) + length > SHAREGPT_MAX_TOTAL_LEN
        if not (too_short or too_long):
            out.append(BenchRequest(prompt_ids, length))
    if not out:
        raise ValueError("no conversation in the ShareGPT file has a usable first exchange")
    if oversample and len(out) < n:
        rng = random.Random(seed)
        out += [rng.choice(out) for _ in range(n - len(out))]
    return out
