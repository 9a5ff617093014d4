"""The diurnal day (tessera.sim.workloads.diurnal): its mean rate, its envelope's shape, its mix, and
that it is a pure function of its seed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tessera.sim.workloads import (
    AZURE2024_CODE_WEEKDAY,
    DAY_S,
    DIURNAL_PEAK_HOUR,
    SimRequest,
    WorkloadError,
    diurnal,
    diurnal_envelope,
    envelope_peak,
)

MIX = [SimRequest(f"m{i}", 0.0, 100 * (i + 1), 10 * (i + 1)) for i in range(5)]


def test_measured_envelope_has_mean_one_and_the_weekdays_shape() -> None:
    """The default envelope is the Azure 2024 code service's weekday, read off the dataset's figure."""
    ts = np.arange(0.0, DAY_S, 60.0)
    env = np.array([diurnal_envelope(float(t)) for t in ts])
    assert env.mean() == pytest.approx(1.0, abs=1e-3)
    assert env.max() == pytest.approx(envelope_peak(), rel=1e-3)
    assert 9.0 < env.max() / env.min() < 10.5  # the measured weekday: ~10x peak over trough
    assert env.mean() / env.max() == pytest.approx(0.446, abs=0.01)  # what a perfect follower pays
    assert 18.5 <= ts[env.argmax()] / 3600.0 <= 19.6  # 19:00 UTC, US working hours
    assert 7.5 <= ts[env.argmin()] / 3600.0 <= 9.5
    # the figure's values: the hour's middle carries the hour's value exactly
    mean = np.mean(AZURE2024_CODE_WEEKDAY)
    assert diurnal_envelope(19.5 * 3600.0) == pytest.approx(AZURE2024_CODE_WEEKDAY[19] / mean)


def test_sinusoid_envelope_has_mean_one_and_the_stated_peak_to_trough() -> None:
    ts = np.arange(0.0, DAY_S, 60.0)
    env = np.array([diurnal_envelope(float(t), "sinusoid") for t in ts])
    assert env.mean() == pytest.approx(1.0, abs=1e-9)
    assert env.max() / env.min() == pytest.approx(3.0, rel=1e-3)
    assert ts[env.argmax()] / 3600.0 == pytest.approx(DIURNAL_PEAK_HOUR)
    assert ts[env.argmin()] / 3600.0 == pytest.approx((DIURNAL_PEAK_HOUR + 12) % 24)
    assert diurnal_envelope(0.0, "sinusoid", peak_to_trough=1.0) == 1.0
    assert diurnal_envelope(0.0, "flat") == 1.0


def test_day_has_the_mean_rate_and_follows_the_envelope() -> None:
    reqs = diurnal(MIX, 2.0, seed=3)
    assert len(reqs) / DAY_S == pytest.approx(2.0, rel=0.02)
    hours = np.bincount([int(r.arrival_s // 3600) for r in reqs], minlength=24) / 3600.0
    expected = np.array(
        [2.0 * np.mean([diurnal_envelope(h * 3600 + s) for s in range(0, 3600, 60)]) for h in range(24)]
    )
    # the quietest hour holds ~1,650 arrivals (+-41): within 10% of the envelope's rate
    assert np.all(np.abs(hours / expected - 1) < 0.10)
    assert hours.argmax() in (18, 19, 20) and hours.argmin() in (7, 8, 9)
    assert hours.max() / hours.min() == pytest.approx(9.5, rel=0.15)


def test_sinusoid_day_follows_its_envelope() -> None:
    reqs = diurnal(MIX, 2.0, envelope="sinusoid", seed=3)
    hours = np.bincount([int(r.arrival_s // 3600) for r in reqs], minlength=24) / 3600.0
    assert len(reqs) / DAY_S == pytest.approx(2.0, rel=0.02)
    assert hours.argmax() in (13, 14) and hours.argmin() in (1, 2)
    assert hours.max() / hours.min() == pytest.approx(3.0, rel=0.15)


def test_a_compressed_day_has_the_days_shape_in_less_time() -> None:
    quarter = DAY_S / 4
    reqs = diurnal(MIX, 8.0, quarter, seed=3, day_s=quarter)
    assert len(reqs) / quarter == pytest.approx(8.0, rel=0.02)
    hours = np.bincount([int(r.arrival_s // (quarter / 24)) for r in reqs], minlength=24)
    assert hours.argmax() in (18, 19, 20) and hours.argmin() in (7, 8, 9)
    assert diurnal_envelope(19.5 * 900.0, day_s=quarter) == pytest.approx(diurnal_envelope(19.5 * 3600.0))


def test_requests_are_drawn_from_the_mix_in_arrival_order() -> None:
    reqs = diurnal(MIX, 1.0, duration_s=3600.0, seed=0)
    assert all(a.arrival_s <= b.arrival_s for a, b in zip(reqs, reqs[1:]))
    shapes = {(r.prompt_tokens, r.output_tokens) for r in reqs}
    assert shapes == {(m.prompt_tokens, m.output_tokens) for m in MIX}
    assert len({r.request_id for r in reqs}) == len(reqs)
    assert all(0.0 <= r.arrival_s < 3600.0 for r in reqs)


def test_flat_envelope_is_poisson_at_the_rate() -> None:
    reqs = diurnal(MIX, 5.0, duration_s=2000.0, envelope="flat", seed=1)
    gaps = np.diff([r.arrival_s for r in reqs])
    assert len(reqs) / 2000.0 == pytest.approx(5.0, rel=0.05)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, abs=0.05)  # exponential gaps


def test_seeded_and_pure() -> None:
    a = diurnal(MIX, 1.0, duration_s=7200.0, seed=7)
    b = diurnal(MIX, 1.0, duration_s=7200.0, seed=7)
    c = diurnal(MIX, 1.0, duration_s=7200.0, seed=8)
    assert [(r.arrival_s, r.prompt_tokens) for r in a] == [(r.arrival_s, r.prompt_tokens) for r in b]
    assert [r.arrival_s for r in a] != [r.arrival_s for r in c]
    assert math.isclose(MIX[0].arrival_s, 0.0)  # the mix is not touched


def test_start_hour_shifts_the_clock() -> None:
    reqs = diurnal(MIX, 2.0, duration_s=DAY_S, start_hour=12.0, seed=3)
    hours = np.bincount([int(r.arrival_s // 3600) for r in reqs], minlength=24)
    assert hours.argmax() in (6, 7, 8)  # 19:00 is seven hours after a noon start


@pytest.mark.parametrize(
    "kwargs",
    [
        {"mean_rps": 0.0},
        {"mean_rps": 1.0, "duration_s": 0.0},
        {"mean_rps": 1.0, "envelope": "sinusoid", "peak_to_trough": 0.5},
        {"mean_rps": 1.0, "envelope": "weekly"},
        {"mean_rps": 1.0, "day_s": 0.0},
        {"mean_rps": float("nan")},
        {"mean_rps": 1.0, "day_s": float("nan")},
        {"mean_rps": 1.0, "duration_s": float("inf")},
        {"mean_rps": 1.0, "envelope": "sinusoid", "peak_to_trough": float("nan")},
    ],
)
def test_bad_arguments_name_the_problem(kwargs: dict) -> None:
    with pytest.raises(WorkloadError):
        diurnal(MIX, **kwargs)
    with pytest.raises(WorkloadError):
        diurnal([], 1.0)
