"""Client-visible latencies of one request, as both front ends record them."""

from __future__ import annotations

import time

from services.router import metrics
from services.router.flow import FlowStats, Generation


class Timing:
    """Client-visible latencies of one request, recorded into the router's histograms."""

    def __init__(self, model: str, arrived: float) -> None:
        self.model, self.arrived = model, arrived
        self.last: float | None = None  # when the latest token came
        self._itl = metrics.ITL.labels(model)  # looked up once, observed per token

    def delta(self, has_tokens: bool) -> None:
        if not has_tokens:
            return
        now = time.perf_counter()
        if self.last is None:
            metrics.TTFT.labels(self.model).observe(now - self.arrived)
        else:
            self._itl.observe(now - self.last)
        self.last = now

    def done(self, gen: Generation, stats: FlowStats) -> None:
        metrics.E2E.labels(self.model).observe(time.perf_counter() - self.arrived)
        metrics.PROMPT_TOKENS.labels(self.model).inc(len(gen.prompt_ids))
        metrics.PROMPT_LENGTH.labels(self.model).observe(len(gen.prompt_ids))
        metrics.GENERATION_TOKENS.labels(self.model).inc(stats.completion_tokens)
