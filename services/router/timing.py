"""Client-visible latencies of one request, as both front ends record them."""

from __future__ import annotations

import time

from services.router import metrics
from services.router.flow import FlowStats, Generation, RequestFlow

DEFAULT_PROFILE = "default"  # the label of requests that leave the profile to the scheduler


class Timing:
    """Client-visible latencies of one request, recorded into the router's histograms.

    ``ttft_slo_s``: the request's time-to-first-token objective (None or 0: none), counted as met
    or missed when its first token comes.
    """

    def __init__(
        self, model: str, arrived: float, profile: str = DEFAULT_PROFILE, ttft_slo_s: float | None = None
    ) -> None:
        self.model, self.arrived = model, arrived
        self.profile = profile or DEFAULT_PROFILE
        self.ttft_slo_s = ttft_slo_s
        self.first: float | None = None  # when the first token came
        self.last: float | None = None  # when the latest token came
        self._itl = metrics.ITL.labels(model, self.profile)  # looked up once, observed per token

    @classmethod
    def of(cls, gen: Generation, flow: RequestFlow, arrived: float) -> Timing:
        """The timing of ``gen`` with the profile and objective the flow will place it with."""
        slo = flow.admission.ttft_slo_s if gen.ttft_slo_s is None else gen.ttft_slo_s
        # Prompt lengths are counted as requests arrive, like arrivals themselves: when the fleet falls
        # behind, answers come late, and a shift to long prompts would reach the autoscaler only after
        # the requests it should have sized for (services/autoscaler/load_observer.py).
        metrics.PROMPT_LENGTH.labels(gen.model.name).observe(len(gen.prompt_ids))
        return cls(gen.model.name, arrived, gen.profile or flow.profile, slo)

    def delta(self, has_tokens: bool) -> None:
        if not has_tokens:
            return
        now = time.perf_counter()
        if self.last is None:
            self.first = now
            ttft = now - self.arrived
            metrics.TTFT.labels(self.model, self.profile).observe(ttft)
            if self.ttft_slo_s:
                metrics.TTFT_SLO.labels(self.model, self.profile, str(ttft <= self.ttft_slo_s).lower()).inc()
        else:
            self._itl.observe(now - self.last)
        self.last = now

    def done(self, gen: Generation, stats: FlowStats) -> None:
        now = time.perf_counter()
        metrics.E2E.labels(self.model, self.profile).observe(now - self.arrived)
        if self.first is not None and stats.completion_tokens > 1:
            # vLLM's request_time_per_output_token: decode time over the tokens after the first
            tpot = (now - self.first) / (stats.completion_tokens - 1)
            metrics.TPOT.labels(self.model, self.profile).observe(tpot)
        metrics.PROMPT_TOKENS.labels(self.model).inc(len(gen.prompt_ids))
        metrics.GENERATION_TOKENS.labels(self.model).inc(stats.completion_tokens)
        metrics.ANSWER_LENGTH.labels(self.model).observe(stats.completion_tokens)
