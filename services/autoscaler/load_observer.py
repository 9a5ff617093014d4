"""What the routers saw per model in the last planning interval: the planner's input.

Routers already count what clients experience (Prometheus counters and
histograms on their HTTP port, registered in etcd); the autoscaler scrapes them
rather than asking for a new API, so the same numbers feed dashboards and the
plan. Per model and interval: requests arrived and answered, prompt length (mean, p90 and p99 from
its histogram, counted as requests arrive) and output tokens (mean and p90 of the answered),
TTFT and inter-token latency at the policy's percentile (from histogram bucket
deltas), and requests held because no worker serves the model yet (demand that
completes nothing until an instance is up: what scale-from-zero waits on).
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tessera.runtime.telemetry import metric_names as names

log = logging.getLogger("tessera.autoscaler")

SCRAPE_TIMEOUT_S = 2.0


@dataclass
class Scrape:
    """Cumulative figures of one router at one moment, by model."""

    requests: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    received: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    prompt_tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    output_tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    held: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    # model -> {upper bound: cumulative count}
    ttft: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    itl: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    prompt_length: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    answer_length: dict[str, dict[float, float]] = field(default_factory=lambda: defaultdict(dict))
    # the same histogram's sum and count: prompt tokens and requests as they arrived
    arrived_prompt_tokens: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    arrived_prompts: dict[str, float] = field(default_factory=lambda: defaultdict(float))


@dataclass(frozen=True)
class ModelInterval:
    """One model's interval across every router."""

    duration_s: float
    requests: float  # arrived in the interval (answered, for routers that do not count arrivals)
    held: float  # waiting for a first worker at the end of it
    input_mean: float | None
    output_mean: float | None
    ttft_s: dict[float, float]  # percentile -> seconds (only where the interval saw requests)
    itl_s: dict[float, float]
    input_p90: float | None = None  # prompt tokens (None: no request answered, or an old router)
    input_p99: float | None = None
    answered: float | None = None  # answered in the interval (None: not counted)
    output_p90: float | None = None  # answer tokens, of the answered (None: none, or an old router)


def parse(text: str) -> Scrape:
    out = Scrape()
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            model = sample.labels.get("model")
            if model is None:
                continue
            name, value = sample.name, sample.value
            if name == names.ROUTER_REQUESTS:
                out.requests[model] += value
            elif name == names.ROUTER_RECEIVED:
                out.received[model] += value
            elif name == names.PROMPT_TOKENS:
                out.prompt_tokens[model] += value
            elif name == names.GENERATION_TOKENS:
                out.output_tokens[model] += value
            elif name == names.ROUTER_HELD:
                out.held[model] += value
            elif name == names.bucket(names.TIME_TO_FIRST_TOKEN):
                le = float(sample.labels["le"])
                out.ttft[model][le] = out.ttft[model].get(le, 0.0) + value  # summed over profiles
            elif name == names.bucket(names.INTER_TOKEN_LATENCY):
                le = float(sample.labels["le"])
                out.itl[model][le] = out.itl[model].get(le, 0.0) + value
            elif name == names.bucket(names.REQUEST_PROMPT_TOKENS):
                out.prompt_length[model][float(sample.labels["le"])] = value
            elif name == names.bucket(names.REQUEST_GENERATION_TOKENS):
                out.answer_length[model][float(sample.labels["le"])] = value
            elif name == names.REQUEST_PROMPT_TOKENS + "_sum":
                out.arrived_prompt_tokens[model] += value
            elif name == names.REQUEST_PROMPT_TOKENS + "_count":
                out.arrived_prompts[model] += value
    return out


def histogram_quantile(q: float, before: dict[float, float], after: dict[float, float]) -> float | None:
    """The q-quantile (0..1) of what a cumulative histogram gained between two scrapes, as Prometheus
    computes it: linear inside the bucket; None when nothing was observed."""
    bounds = sorted(after)
    counts = [after[b] - before.get(b, 0.0) for b in bounds]
    total = counts[-1] if counts else 0.0
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for bound, cumulative in zip(bounds, counts):
        if cumulative >= rank:
            if math.isinf(bound):
                return lower
            inside = cumulative - below
            return lower + (bound - lower) * ((rank - below) / inside if inside > 0 else 1.0)
        lower, below = bound, cumulative
    return lower


def interval(
    before_by_router: dict[str, Scrape],
    after_by_router: dict[str, Scrape],
    model: str,
    duration_s: float,
    percentiles: tuple[float, ...] = (90.0,),
) -> ModelInterval:
    """One model's figures between two rounds of scrapes, over the routers present in both (a router
    that just appeared is counted from its next interval; a restarted one's counters start over)."""
    common = [r for r in after_by_router if r in before_by_router]
    before = [before_by_router[r] for r in common]
    after = [after_by_router[r] for r in common]

    def delta(attr: str) -> float:
        return sum(max(0.0, getattr(a, attr)[model] - getattr(b, attr)[model]) for b, a in zip(before, after))

    def merged(attr: str, scrapes: list[Scrape]) -> dict[float, float]:
        out: dict[float, float] = defaultdict(float)
        for s in scrapes:
            for bound, count in getattr(s, attr)[model].items():
                out[bound] += count
        return out

    # Arrivals, not answers: when the fleet is short, answers fall behind arrivals and the forecast with
    # them, which would shrink the fleet exactly when it needs to grow.
    answered = delta("requests")
    requests = delta("received") or answered
    quantiles = {}
    for attr in ("ttft", "itl"):
        b, a = merged(attr, before), merged(attr, after)
        quantiles[attr] = {p: v for p in percentiles if (v := histogram_quantile(p / 100.0, b, a)) is not None}
    lengths = merged("prompt_length", before), merged("prompt_length", after)
    answers = merged("answer_length", before), merged("answer_length", after)
    # Prompt lengths of the requests that arrived (routers count them on arrival), for the reason
    # above: answers lag most when prompts grow, and the shift would reach the plan only after the
    # requests it should have sized for. Routers that count lengths only when answered: the answers.
    prompts = delta("arrived_prompts")
    if prompts:
        input_mean: float | None = delta("arrived_prompt_tokens") / prompts
    else:
        input_mean = delta("prompt_tokens") / answered if answered else None
    return ModelInterval(
        duration_s,
        requests,
        sum(s.held[model] for s in after_by_router.values()),
        input_mean,
        delta("output_tokens") / answered if answered else None,
        quantiles["ttft"],
        quantiles["itl"],
        histogram_quantile(0.90, *lengths),
        histogram_quantile(0.99, *lengths),
        answered,
        histogram_quantile(0.90, *answers),
    )


class RouterScraper:
    """Scrapes every router's /metrics; a router that does not answer counts as an empty scrape.

    Routers whose /metrics needs a key (``tessera router --metrics-api-key``) are sent
    ``metrics_api_key``, by default TESSERA_METRICS_API_KEY, the variable that flag defaults to.
    """

    def __init__(self, metrics_api_key: str | None = None) -> None:
        key = os.environ.get("TESSERA_METRICS_API_KEY", "") if metrics_api_key is None else metrics_api_key
        headers = {"Authorization": f"Bearer {key}"} if key else None
        self._client = httpx.AsyncClient(timeout=SCRAPE_TIMEOUT_S, headers=headers)
        self._failing: set[str] = set()

    async def scrape(self, addresses: list[str]) -> dict[str, Scrape]:
        return dict(zip(addresses, await asyncio.gather(*(self._one(a) for a in addresses))))

    async def _one(self, address: str) -> Scrape:
        try:
            resp = await self._client.get(f"http://{address}/metrics")
            resp.raise_for_status()
        except httpx.HTTPError as exc:
            if address not in self._failing:
                log.warning("cannot read router metrics at %s (%s); its load is not counted", address, exc)
                self._failing.add(address)
            return Scrape()
        self._failing.discard(address)
        return parse(resp.text)

    async def close(self) -> None:
        await self._client.aclose()
