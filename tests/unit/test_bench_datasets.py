"""`tessera bench`'s ShareGPT draw, vLLM's range ratio and vLLM's one-second peaks (pure code)."""

from __future__ import annotations

import pytest

from tessera.bench.cli import range_ratios
from tessera.bench.datasets import random_requests, sharegpt_pairs, sharegpt_requests
from tessera.bench.results import Outcome, peaks


def words(text: str) -> list[int]:
    """A stand-in tokenizer: one token per word."""
    return list(range(len(text.split())))


def turn(who: str, text: str) -> dict:
    return {"from": who, "value": text}


def test_sharegpt_takes_the_first_exchange_and_skips_what_vllm_skips():
    entries = [
        {"conversations": [turn("human", "one two three four"), turn("gpt", "a b c d e"), turn("human", "more")]},
        {"conversations": [turn("human", "only one turn")]},
        {"conversations": [turn("human", "short"), turn("gpt", "a b c d e")]},  # prompt under 4 tokens
        {"conversations": [turn("human", "w " * 1100), turn("gpt", "a b c d")]},  # prompt over 1024
        {"conversations": [turn("human", "one two three four five"), turn("gpt", "a b")]},  # answer under 4
        {"conversations": "not a list"},
        "not an object",
    ]
    pairs = sharegpt_pairs(entries)
    assert len(pairs) == 4 and pairs[0] == ("one two three four", "a b c d e")
    drawn = sharegpt_requests(pairs, 1, words, seed=0)
    assert [(len(r.prompt_ids), r.output_len) for r in drawn] == [(4, 5)]
    # A fixed output length lifts the short-answer check, as vLLM's --sharegpt-output-len does.
    fixed = sharegpt_requests(pairs, 2, words, output_len=7, seed=0)
    assert sorted((len(r.prompt_ids), r.output_len) for r in fixed) == [(4, 7), (5, 7)]


def test_sharegpt_oversamples_unless_told_and_refuses_an_empty_file():
    pairs = [("one two three four", "a b c d")]
    assert len(sharegpt_requests(pairs, 5, words)) == 5
    assert len(sharegpt_requests(pairs, 5, words, oversample=False)) == 1
    with pytest.raises(ValueError):
        sharegpt_requests([("hi", "there")], 3, words)


def test_the_range_ratio_reads_as_vllm_reads_it():
    assert range_ratios("0.25") == (0.25, 0.25)
    assert range_ratios('{"input": 0.1, "output": 0.5}') == (0.1, 0.5)
    for bad in ("1.5", "-0.1", '"x"', "nope"):
        with pytest.raises(ValueError):
            range_ratios(bad)
    drawn = random_requests(200, 100, 100, list(range(50)), seed=1, range_ratio=(0.0, 0.5), prefix_len=3)
    assert {len(r.prompt_ids) for r in drawn} == {103}  # fixed input, after the same 3-token prefix
    assert len({tuple(r.prompt_ids[:3]) for r in drawn}) == 1
    assert min(r.output_len for r in drawn) >= 50 and max(r.output_len for r in drawn) <= 150
    assert len({r.output_len for r in drawn}) > 10


def test_peaks_count_tokens_and_requests_per_second_as_vllm():
    a = Outcome(prompt_len=1, success=True, output_tokens=3, ttft=0.1, itl=[0.1, 0.1], latency=0.3, start_time=10.0)
    b = Outcome(prompt_len=1, success=True, output_tokens=2, ttft=0.2, itl=[1.0], latency=1.2, start_time=10.5)
    assert peaks([a, b]) == (4.0, 2)  # second 0: a's three tokens and b's first; both requests ran in it
    assert peaks([]) == (0.0, 0)
