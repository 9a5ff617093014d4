"""The worker's side of learning its step times: request events in, (predicted, measured) pairs out.

A worker does not see its engine's steps (vLLM runs them in its own process), but it sees when
each request starts and when each of its tokens arrives. The tokens of one step arrive together,
so the arrivals fall into groups, one per step, and the end of the previous group is where the
current step began. Two kinds of moments measure a step cleanly enough to learn from:

- a prefill: a request's first token, when every other request in flight was already decoding
  when it arrived and none arrived after it (so no other prompt shares its step): the step that
  began at the previous group (or at its arrival, if later) and ended with its first token is its
  prefill plus one decode token for each of the others, whose share is taken out at the decode
  scale already learnt;
- a decode step: the gap between two tokens of a request, when every request in flight is past
  its first token (no prefill shares the step) and none started or finished in between (the
  batch is the one the model is asked about).

Everything else (several prompts in one step, queueing behind a full batch) is skipped: those
moments are fewer but unbiased, and a worker under steady load still yields hundreds of decode
gaps a minute. The performance model predicts each measured moment from the worker's own
identity (model, accelerator, TP), and StepScaleLearner keeps their ratio; the worker
reports it to the schedulers with its load.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

from tessera.engine_model.perf.step_scale import StepScaleLearner
from tessera.engine_model.perf.step_timer import StepTimer

log = logging.getLogger("tessera.worker")


@dataclass
class _Request:
    prompt_tokens: int
    started_s: float
    clean: bool  # no other prompt can share this one's prefill step (see the module's docstring)
    context: int = 0  # tokens in the sequence so far (prompt + generated)
    last_token_s: float | None = None
    epoch_at_last_token: int = -1
    timed: bool = True  # its tokens are counted one by one (vLLM's serving code counts n choices at once)


class StepObserver:
    def __init__(
        self,
        timer: StepTimer | None,
        learner: StepScaleLearner | None = None,
        clock: Callable[[], float] = time.monotonic,
        learn_prefill: bool = True,
    ) -> None:
        """timer: the performance model of this worker (None: nothing to learn against).
        learn_prefill: False where first tokens do not time a prefill (a decode worker's wait on KV)."""
        self.timer = timer
        self.learn_prefill = learn_prefill
        self.learner = learner or StepScaleLearner()
        self._clock = clock
        self._active: dict[str, _Request] = {}
        self._epoch = 0  # changes whenever the batch's membership or phase changes
        # Token arrivals closer than this belong to one step's output (a fraction of the shortest step).
        self._same_step_s = max(1e-3, 0.3 * timer(decode=[1])) if timer is not None else 1e-3
        self._group_end = -math.inf  # the latest token arrival (the current group's end)
        self._previous_group_end = -math.inf  # the group before it: where the current step began

    def started(self, request_id: str, prompt_tokens: int, timed: bool = True) -> None:
        """timed: False for a request whose batch share the model cannot tell (n choices, vLLM's serving
        code): while it is in flight nothing is learnt."""
        clean = True
        for other in self._active.values():
            if other.last_token_s is None:  # its prompt may be computed in the same step as this one's
                other.clean = clean = False
        self._active[request_id] = _Request(
            prompt_tokens, self._clock(), clean=clean, context=prompt_tokens, timed=timed
        )
        self._epoch += 1

    def tokens(self, request_id: str, count: int, cached_prompt_tokens: int = 0) -> None:
        request = self._active.get(request_id)
        if request is None or count <= 0 or self.timer is None:
            return
        now = self._clock()
        if now - self._group_end > self._same_step_s:  # the first token of a new step's output
            self._previous_group_end = self._group_end
        self._group_end = now
        learn = all(r.timed for r in self._active.values())
        if request.last_token_s is None:
            if request.clean and self.learn_prefill and learn:
                self._observe_prefill(request, now, cached_prompt_tokens)
            self._epoch += 1  # this request moved from prefill to decode
        elif learn and request.epoch_at_last_token == self._epoch and self._all_decoding():
            contexts = [r.context for r in self._active.values()]
            self.learner.observe("decode", self.timer(decode=contexts), (now - request.last_token_s) / count)
        request.context += count
        request.last_token_s = now
        request.epoch_at_last_token = self._epoch

    def _observe_prefill(self, request: _Request, now: float, cached_prompt_tokens: int) -> None:
        """The step that computed ``request``'s prompt: alone, or beside decodes whose share of the
        step is taken out at the decode scale already learnt (none learnt yet: not a sample)."""
        assert self.timer is not None
        new = max(1, request.prompt_tokens - cached_prompt_tokens)
        prefill = [(new, request.prompt_tokens - new)]
        measured = now - max(request.started_s, self._previous_group_end)
        predicted = self.timer(prefill=prefill)
        others = [r.context for r in self._active.values() if r is not request]
        if others:
            decode_scale = self.learner.learnt("decode")
            if decode_scale is None:
                return
            measured -= decode_scale * (self.timer(prefill=prefill, decode=others) - predicted)
        self.learner.observe("prefill", predicted, measured)

    def finished(self, request_id: str) -> None:
        if self._active.pop(request_id, None) is not None:
            self._epoch += 1

    def _all_decoding(self) -> bool:
        return all(r.last_token_s is not None for r in self._active.values())


def model_timer(model_path: str, accelerator: str, tensor_parallel: int) -> StepTimer | None:
    """The performance model of this worker's model on its accelerator (None where it cannot be
    built: an unknown architecture or accelerator; the worker then learns nothing, and says so once)."""
    from tessera.engine_model.build import worker_step_timer

    try:
        return worker_step_timer(model_path, accelerator, tensor_parallel)
    except (ValueError, OSError, KeyError) as exc:
        log.info("no performance model for %s on %s (%s): step times are not learnt", model_path, accelerator, exc)
        return None
