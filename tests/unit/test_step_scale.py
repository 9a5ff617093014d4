"""Learning a machine's step times: the correction, the learner, and the worker's observer of its requests.

The observer is driven by a fake engine whose steps take known multiples of the model's time, with a
fake clock: what it learns must be those multiples, and moments that do not time one clean step (a
prefill sharing the engine, a decode gap spanning a new request's prefill) must not be learnt from.
"""

from __future__ import annotations

import math

import pytest

from services.worker.step_learning import StepObserver
from tessera.engine_model.build import resolve_arch
from tessera.engine_model.catalog.accelerators import find
from tessera.engine_model.instance import InstanceSpec, step_timer
from tessera.engine_model.perf.efficiency import Efficiency
from tessera.engine_model.perf.step_scale import (
    MIN_SAMPLES,
    StepScale,
    StepScaleLearner,
    corrected_speed,
    scaled,
)


@pytest.fixture(scope="module")
def timer():
    return step_timer(resolve_arch("llama3-8b"), InstanceSpec(find("h100"), 1), Efficiency())


def test_a_scaled_timer_stretches_prefill_and_decode_apart(timer):
    s = scaled(timer, StepScale(prefill=2.0, decode=1.5))
    assert s(prefill=[(512, 0)]) == pytest.approx(2.0 * timer(prefill=[(512, 0)]))
    assert s(decode=[100, 200]) == pytest.approx(1.5 * timer(decode=[100, 200]))
    mixed, alone = timer(prefill=[(512, 0)], decode=[100, 200]), timer(prefill=[(512, 0)])
    assert s(prefill=[(512, 0)], decode=[100, 200]) == pytest.approx(2.0 * alone + 1.5 * (mixed - alone))
    assert s.prefill_tokens_per_s() == pytest.approx(timer.prefill_tokens_per_s() / 2.0)
    assert scaled(timer, StepScale()) is timer


@pytest.mark.parametrize(
    "text", ["prefill=2,decode", "speed=2", "prefill=nan", "decode=inf", "prefill=0", "decode=1e9"]
)
def test_a_bad_scale_is_refused_by_name(text):
    with pytest.raises(ValueError, match="step time scale"):
        StepScale.parse(text)


def test_a_scale_parses_either_phase():
    assert StepScale.parse("prefill=1.25") == StepScale(prefill=1.25)
    assert StepScale.parse("decode=0.8,prefill=2") == StepScale(prefill=2.0, decode=0.8)
    assert StepScale.parse("") == StepScale()


def test_the_learner_keeps_bunched_tokens_time_and_drops_the_impossible():
    learner = StepScaleLearner()
    for _ in range(MIN_SAMPLES - 1):
        learner.observe("decode", 0.010, 0.013)
    assert learner.learnt("decode") is None and learner.scale() == StepScale()
    learner.observe("decode", 0.010, 0.013)
    assert learner.learnt("decode") == pytest.approx(1.3)
    # a late event loop: two steps' tokens arrive together, one gap long, the next near zero
    for _ in range(8):
        learner.observe("decode", 0.010, 0.025)
        learner.observe("decode", 0.010, 0.001)
    assert learner.learnt("decode") == pytest.approx((8 * 0.013 + 8 * 0.026) / (24 * 0.010))
    before = learner.learnt("decode")
    learner.observe("decode", 0.010, 5.0)  # 500x: a stopped process, not the machine
    learner.observe("decode", 0.010, float("nan"))
    learner.observe("decode", 0.0, 0.010)
    assert learner.learnt("decode") == before
    assert learner.learnt("prefill") is None


def test_corrected_speed_follows_what_was_learnt():
    speed = {"prefill_tokens_per_s": 10_000.0, "decode_base_s": 0.01, "decode_step_s": 0.02}
    out = corrected_speed(speed, 2.0, 1.5)
    assert out == {"prefill_tokens_per_s": 5_000.0, "decode_base_s": 0.015, "decode_step_s": 0.03}
    assert corrected_speed(speed, 0.0, 0.0) == speed  # not learnt yet: the model as it is


class FakeEngine:
    """Steps as the model says, times a truth; tells the observer what a worker's book would see."""

    def __init__(self, timer, truth: StepScale, observer: StepObserver) -> None:
        self.timer = scaled(timer, truth)
        self.observer = observer
        self.now = 0.0
        self.contexts: dict[str, int] = {}

    def clock(self) -> float:
        return self.now

    def prefill(self, rid: str, prompt: int, cached: int = 0) -> None:
        """A request arrives and its prefill runs as a step of its own (running requests decode in it)."""
        self.observer.started(rid, prompt)
        decode = list(self.contexts.values())
        self.now += self.timer(prefill=[(prompt - cached, cached)], decode=decode)
        for other in list(self.contexts):
            self.contexts[other] += 1
            self.observer.tokens(other, 1)
        self.contexts[rid] = prompt + 1
        self.observer.tokens(rid, 1, cached)

    def decode_steps(self, n: int) -> None:
        for _ in range(n):
            self.now += self.timer(decode=list(self.contexts.values()))
            for rid in list(self.contexts):
                self.contexts[rid] += 1
                self.observer.tokens(rid, 1)

    def finish(self, rid: str) -> None:
        del self.contexts[rid]
        self.observer.finished(rid)


def test_the_observer_learns_the_machines_multiples(timer):
    observer = StepObserver(timer)
    engine = FakeEngine(timer, StepScale(prefill=2.0, decode=1.5), observer)
    observer._clock = engine.clock
    for i in range(MIN_SAMPLES):  # one request at a time: each first token times its prefill
        engine.prefill(f"solo{i}", 300 + 50 * i)
        engine.decode_steps(3)
        engine.finish(f"solo{i}")
    for i in range(4):  # a batch: each prompt is computed beside the decodes of those before it
        engine.prefill(f"b{i}", 400)
    engine.decode_steps(20)
    assert observer.learner.learnt("prefill") == pytest.approx(2.0, rel=1e-4)
    assert observer.learner.learnt("decode") == pytest.approx(1.5, rel=1e-3)  # contexts seen a token apart
    # b0 found the engine idle; b1..b3 were prefilled beside decodes, whose share (at the decode scale
    # learnt from the solo requests' gaps) is taken out: all four count, and all say 2.0
    assert observer.learner.samples("prefill") == MIN_SAMPLES + 4


def test_a_gap_that_spans_another_requests_prefill_is_not_a_decode_step(timer):
    """The prefill of a newcomer lengthens the running requests' gap: learning it would overstate decode."""
    observer = StepObserver(timer)
    engine = FakeEngine(timer, StepScale(prefill=1.0, decode=1.0), observer)
    observer._clock = engine.clock
    engine.prefill("a", 200)
    engine.decode_steps(2)
    before = observer.learner.samples("decode")
    engine.prefill("b", 4000)  # a's token in this step comes after a long prefill
    assert observer.learner.samples("decode") == before
    engine.decode_steps(MIN_SAMPLES)
    assert observer.learner.learnt("decode") == pytest.approx(1.0, rel=1e-4)


def test_two_prompts_in_one_step_are_not_a_prefill_sample(timer):
    """A request that arrives while another's prompt waits may share its step: neither is learnt."""
    observer = StepObserver(timer)
    clock = [0.0]
    observer._clock = lambda: clock[0]
    observer.started("a", 500)
    observer.started("b", 500)
    clock[0] += timer(prefill=[(500, 0), (500, 0)])
    observer.tokens("a", 1)
    observer.tokens("b", 1)
    assert observer.learner.samples("prefill") == 0


def test_a_decode_worker_does_not_learn_prefill_from_its_kv_waits(timer):
    observer = StepObserver(timer, learn_prefill=False)
    engine = FakeEngine(timer, StepScale(prefill=3.0), observer)
    observer._clock = engine.clock
    for i in range(MIN_SAMPLES * 2):
        engine.prefill(f"r{i}", 500, cached=499)
        engine.finish(f"r{i}")
    assert observer.learner.learnt("prefill") is None


def test_without_a_model_nothing_is_learnt():
    observer = StepObserver(None)
    observer.started("a", 10)
    observer.tokens("a", 1)
    observer.finished("a")
    assert observer.learner.scale() == StepScale()
    assert not math.isnan(observer.learner.scale().decode)


def test_nothing_is_learnt_while_a_request_of_untold_shape_is_in_flight(timer):
    """A request run by vLLM's serving code (n choices, tokens counted in bulk) hides the batch's shape."""
    observer = StepObserver(timer)
    engine = FakeEngine(timer, StepScale(decode=2.0), observer)
    observer._clock = engine.clock
    observer.started("openai", 100, timed=False)
    engine.prefill("a", 200)
    engine.decode_steps(MIN_SAMPLES * 2)
    assert observer.learner.samples("decode") == 0 and observer.learner.samples("prefill") == 0
    observer.finished("openai")
    engine.decode_steps(MIN_SAMPLES + 1)
    assert observer.learner.learnt("decode") == pytest.approx(2.0, rel=1e-4)
