"""The simulated engine continues its text after a resume, as a real model continues its own output."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.worker.sim_engine import filler_run

FILLER = [5, 9, 5, 7, 3, 9, 2]  # repeats a token, as real filler text does


@given(st.lists(st.integers(10, 20), min_size=1, max_size=40), st.integers(0, 60))
def test_the_run_of_produced_tokens_after_any_prompt_is_found(prompt, produced):
    """A prompt of other tokens followed by the first `produced` filler tokens: the engine goes on from there."""
    resumed = [FILLER[i % len(FILLER)] for i in range(produced)]
    assert filler_run(prompt + resumed, FILLER) == produced


def test_a_prompt_that_does_not_end_in_filler_starts_it_over():
    assert filler_run([5, 9, 1], FILLER) == 0
    assert filler_run([5], FILLER) == 0  # a prompt keeps at least one token of its own
