"""The load a fleet must serve: a request rate and the shape of its requests.

One record flows from the forecaster to the capacity model and the planner.
The shape (prompt and answer lengths, prefix reuse) decides what one instance
can sustain; the rate decides how many instances are needed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from statistics import NormalDist

_Z90 = NormalDist().inv_cdf(0.90)
_Z99 = NormalDist().inv_cdf(0.99)
# where LoadMix.input_lengths cuts the prompt-length distribution (cumulative shares)
PROMPT_GRID = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998, 0.999)


@dataclass(frozen=True)
class LoadMix:
    """Requests per second and their lengths in tokens.

    input_p90 carries the spread of prompt lengths: TTFT percentiles are set by the long prompts
    and by the queueing their variance causes. prefix_reuse is the share of prompt tokens found
    in the prefix cache (not recomputed on a mixed or prefill instance). input_p99, optional (0: not
    measured, as from a router that reports only means), replaces
    the lognormal's tail beyond the p90: a heavy p90/mean makes the fitted lognormal's p99 far
    longer than a workload's real one (azure2023_code: 17.8k tokens against 7.4k), and that
    prompt alone decides whether an instance meets a p99 TTFT target.
    """

    rate_rps: float
    input_mean: float = 1024.0
    input_p90: float = 2048.0
    output_mean: float = 256.0
    prefix_reuse: float = 0.0
    input_p99: float = 0.0
    output_p90: float = 0.0

    def __post_init__(self) -> None:
        if self.rate_rps < 0 or not math.isfinite(self.rate_rps):
            raise ValueError(f"rate_rps must be a finite number >= 0, not {self.rate_rps}")
        if self.input_mean < 1 or self.output_mean < 1:
            raise ValueError("input_mean and output_mean must be at least one token")
        if self.input_p90 < 0 or self.input_p99 < 0 or self.output_p90 < 0:
            raise ValueError("input_p90, input_p99 and output_p90 must be >= 0")
        if not 0.0 <= self.prefix_reuse < 1.0:
            raise ValueError(f"prefix_reuse must be in [0, 1), not {self.prefix_reuse}")

    def input_quantile(self, percentile: float) -> float:
        """The prompt length at `percentile`, from a lognormal fitted to the mean and p90.

        A lognormal because prompt lengths are positive and right-skewed; with only a mean and a
        p90 it is the two-parameter shape that fits both exactly (p90 <= mean: all prompts alike).
        With a measured p99, percentiles from the 90th up follow the measured tail instead: the line
        through (z90, ln p90) and (z99, ln p99), a lognormal tail through both points.
        """
        if self.input_p99 > 0 and self.input_p90 > 0 and percentile >= 90.0:
            z = NormalDist().inv_cdf(percentile / 100.0)
            slope = math.log(max(self.input_p99, self.input_p90) / self.input_p90) / (_Z99 - _Z90)
            return self.input_p90 * math.exp(slope * (z - _Z90))
        sigma = self.input_sigma()
        mu = math.log(self.input_mean) - sigma * sigma / 2.0
        return math.exp(mu + sigma * NormalDist().inv_cdf(percentile / 100.0))

    def input_sigma(self) -> float:
        """The lognormal's sigma: solves ln(p90/mean) = z90*sigma - sigma^2/2 (smaller root).

        A lognormal's p90/mean peaks at exp(z90^2/2) ~ 2.27; a ratio past that is clamped there."""
        return lognormal_sigma(self.input_mean, self.input_p90)

    def output_lengths(self, bins: int = 32) -> tuple[tuple[float, float], ...]:
        """Answer lengths as (tokens, share of requests): `bins` equal-share quantiles of the lognormal
        through output_mean and output_p90, or the mean alone where the p90 is not measured.

        Mean and p90, like the prompts' (input_quantile), because a router histogram gives the p90
        well and the mean exactly. On azure2023_code (answers: min 6, median 13, mean 28, p90 55)
        this fit put the model's TPOT p99 on one MI300X-tp2 at 13.4 / 24.9 / 43.2 ms at 6 / 12.7 /
        20 req/s, the trace's own lengths at 14.7 / 28.4 / 43.2 and the simulator at 18.1 / 29.4 /
        43.3; a lognormal through the median and p90 instead puts a sixth of the answers under 6
        tokens, which the trace never has, and overshoots (24.1 / 43.0 ms)."""
        if self.output_p90 <= 0:
            return ((self.output_mean, 1.0),)
        sigma = lognormal_sigma(self.output_mean, self.output_p90)
        mu = math.log(self.output_mean) - sigma * sigma / 2.0
        inv = NormalDist().inv_cdf
        return tuple((max(1.0, math.exp(mu + sigma * inv((i + 0.5) / bins))), 1.0 / bins) for i in range(bins))

    def input_lengths(self) -> tuple[tuple[float, float], ...]:
        """Prompt lengths as (tokens, share of requests): quantiles of the distribution input_quantile
        describes, at the middle of each share of PROMPT_GRID. The grid is fine in the tail, where a
        p99 TTFT is decided: a request's TTFT is its wait plus its own prompt, and the p99 of that
        sum comes from long prompts with moderate waits as much as from moderate ones with long
        waits (queueing.response_at_percentile)."""
        edges = (0.0, *PROMPT_GRID, 1.0)
        return tuple(
            (max(1.0, self.input_quantile(50.0 * (lo + hi))), hi - lo) for lo, hi in zip(edges, edges[1:], strict=False)
        )

    def input_scv(self) -> float:
        """Squared coefficient of variation of prompt length, of the distribution input_quantile
        describes: the lognormal's exp(sigma^2) - 1, or with a measured p99 the lognormal below the
        p90 and the measured tail above it (closed-form partial moments of the two pieces).

        Why the measured tail matters here too: the queueing margin of the prompt queue grows with
        (1 + scv) / 2. On azure2023_code the lognormal fitted to the mean and p90 alone has scv
        4.2, the trace's prompts 0.93 (they stop at 7.4k tokens); with the tail the shape gives
        1.3. With 4.2 the planner sized one MI300X for 3.9 req/s of this mix at p99 where the
        discrete-event simulator meets the SLOs up to about 13 (issue 18's floor 1)."""
        sigma = self.input_sigma()
        if not (self.input_p99 > 0 and self.input_p90 > 0):
            return math.expm1(sigma * sigma)
        mu = math.log(self.input_mean) - sigma * sigma / 2.0
        slope = math.log(max(self.input_p99, self.input_p90) / self.input_p90) / (_Z99 - _Z90)
        phi = NormalDist().cdf

        def moment(k: int) -> float:
            body = math.exp(k * mu + (k * sigma) ** 2 / 2.0) * phi(_Z90 - k * sigma)
            tail = (
                self.input_p90**k * math.exp((k * slope) ** 2 / 2.0 - k * slope * _Z90) * (1.0 - phi(_Z90 - k * slope))
            )
            return body + tail

        first = moment(1)
        return max(moment(2) / (first * first) - 1.0, 0.0)

    def scaled(self, rate_rps: float) -> LoadMix:
        """The same request shape at another rate."""
        return replace(self, rate_rps=rate_rps)


def lognormal_sigma(mean: float, p90: float) -> float:
    """The sigma of the lognormal with this mean and p90: solves ln(p90/mean) = z90*sigma - sigma^2/2
    (smaller root; a p90 at or below the mean: 0, all alike; past the peak ratio exp(z90^2/2): clamped)."""
    ratio = p90 / mean
    if ratio <= 1.0:
        return 0.0
    disc = _Z90 * _Z90 - 2.0 * math.log(ratio)
    return _Z90 - math.sqrt(max(disc, 0.0))
