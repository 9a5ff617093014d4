"""queueing.response_at_percentile: the percentile of a request's wait plus its own time."""

from __future__ import annotations

import math
import random

import pytest

from tessera.planning.queueing import response_at_percentile, wait_at_percentile


def test_one_own_time_adds_to_the_wait_percentile_exactly():
    """Every request alike: P(W + s > t) = P(W > t - s), so the percentile is s + the wait's."""
    for rho in (0.2, 0.6, 0.9):
        wait = wait_at_percentile(rho, 0.1, 1.3, 99.0)
        assert response_at_percentile(rho, 0.1, 1.3, [(0.25, 1.0)], 99.0) == pytest.approx(0.25 + wait, rel=1e-4)


def test_without_a_queue_it_is_the_own_times_percentile():
    own = [(float(i), 0.01) for i in range(1, 101)]  # 1..100 s, a share of 1% each
    assert response_at_percentile(0.0, 0.0, 0.0, own, 99.0) == pytest.approx(99.0, rel=1e-4)
    assert response_at_percentile(0.0, 0.0, 0.0, own, 99.5) == pytest.approx(100.0, rel=1e-4)


def test_it_matches_sampled_waits_and_own_times_and_lies_below_the_sum_of_percentiles():
    """Against 400k sampled requests: waiting with probability rho an exponential of mean W/rho,
    own times drawn from the mix. The sum of the two p99s (what the capacity model added before)
    overstates the p99 of the sum."""
    rho, service, scv = 0.7, 0.08, 1.3
    own = [(0.05, 0.5), (0.1, 0.3), (0.3, 0.15), (0.8, 0.04), (1.5, 0.01)]
    model = response_at_percentile(rho, service, scv, own, 99.0)
    scale = (1 + scv) / 2 * service / (1 - rho)
    rng = random.Random(5)
    times, weights = zip(*own, strict=True)
    samples = sorted(
        (rng.expovariate(1 / scale) if rng.random() < rho else 0.0) + rng.choices(times, weights)[0]
        for _ in range(400_000)
    )
    sampled = samples[int(0.99 * len(samples))]
    assert model == pytest.approx(sampled, rel=0.03)
    own_p99 = 1.5  # the 1% of 1.5 s
    assert model < wait_at_percentile(rho, service, scv, 99.0) + own_p99


def test_a_saturated_queue_has_no_percentile():
    assert math.isinf(response_at_percentile(1.0, 0.1, 1.0, [(0.1, 1.0)], 99.0))
