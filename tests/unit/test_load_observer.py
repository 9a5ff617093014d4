"""The autoscaler's reading of router metrics: arrivals, lengths, latency percentiles, held demand."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from services.autoscaler.load_observer import histogram_quantile, interval, parse
from services.router.metrics import PROMPT_LENGTH_BUCKETS


def scrape(
    received: int, answered: int, prompt: int, output: int, held: int, ttfts: list[float], prompts: list[int] = ()
) -> str:
    """What a router's /metrics says after this much traffic for model m (the router's own metric names)."""
    reg = CollectorRegistry()
    Counter("tessera_router_requests_received", "", ["model"], registry=reg).labels("m").inc(received)
    Counter("tessera_router_requests", "", ["model", "endpoint", "status"], registry=reg).labels(
        "m", "/v1/completions", "200"
    ).inc(answered)
    Counter("tessera_prompt_tokens", "", ["model"], registry=reg).labels("m").inc(prompt)
    Counter("tessera_generation_tokens", "", ["model"], registry=reg).labels("m").inc(output)
    Gauge("tessera_router_held_requests", "", ["model"], registry=reg).labels("m").set(held)
    h = Histogram("tessera_time_to_first_token_seconds", "", ["model"], registry=reg, buckets=(0.1, 0.2, 0.5, 1.0, 2.0))
    for t in ttfts:
        h.labels("m").observe(t)
    lengths = Histogram("tessera_request_prompt_tokens", "", ["model"], registry=reg, buckets=PROMPT_LENGTH_BUCKETS)
    for n in prompts:
        lengths.labels("m").observe(n)
    return generate_latest(reg).decode()


def test_an_interval_counts_arrivals_not_answers_and_reads_lengths_and_percentiles():
    before = {"r1": parse(scrape(10, 10, 1000, 200, 0, [0.15] * 10))}
    after = {"r1": parse(scrape(40, 25, 2500, 500, 3, [0.15] * 10 + [0.15] * 12 + [0.8] * 3))}
    seen = interval(before, after, "m", 10.0, (90.0,))
    assert seen.requests == 30  # arrivals; only 15 were answered (the fleet is short)
    assert seen.input_mean == pytest.approx(100.0) and seen.output_mean == pytest.approx(20.0)
    assert seen.held == 3
    assert 0.5 < seen.ttft_s[90.0] <= 1.0  # 3 of the interval's 15 first tokens took 0.8 s


def test_a_router_seen_once_is_not_counted_until_its_next_scrape_and_quantiles_need_data():
    after = {"r1": parse(scrape(5, 5, 50, 10, 0, [0.1] * 5)), "r2": parse(scrape(99, 99, 990, 99, 0, []))}
    seen = interval({"r1": parse(scrape(0, 0, 0, 0, 0, []))}, after, "m", 5.0)
    assert seen.requests == 5  # r2's counters are its lifetime, not this interval's
    assert histogram_quantile(0.9, {}, {0.1: 0.0, float("inf"): 0.0}) is None


def test_the_interval_reads_the_p90_and_p99_prompt_length_of_its_own_requests():
    """The planner sizes for the p99 prompt: the interval's tail, not the router's lifetime, within
    the histogram's resolution (buckets 19% apart)."""
    old = [30000] * 50  # a past interval of very long prompts
    new = [1000] * 85 + [5000] * 10 + [12000] * 5
    before = {"r1": parse(scrape(50, 50, 0, 0, 0, [], old))}
    after = {"r1": parse(scrape(150, 150, 0, 0, 0, [], old + new))}
    seen = interval(before, after, "m", 30.0)
    assert 4200 < seen.input_p90 <= 5000 * 1.19
    assert 10000 < seen.input_p99 <= 12000 * 1.19
    quiet = interval(after, after, "m", 30.0)
    assert quiet.input_p90 is None and quiet.input_p99 is None


def test_the_prompt_length_is_that_of_the_requests_that_arrived_not_of_those_answered():
    """Short prompts were answered; long ones arrived and wait on a fleet too small for them. The
    interval must see the long ones now, not when they are answered (after the fleet should have grown)."""
    before = {"r1": parse(scrape(10, 10, 500, 100, 0, [], [50] * 10))}
    after = {"r1": parse(scrape(30, 12, 600, 120, 0, [], [50] * 10 + [50] * 2 + [900] * 18))}
    seen = interval(before, after, "m", 10.0)
    assert seen.input_mean == pytest.approx((2 * 50 + 18 * 900) / 20)  # 815, where the answers say 50
    assert seen.input_p90 > 700
