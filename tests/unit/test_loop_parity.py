"""One planning loop for the live autoscaler and the simulator.

1. A recording of a live run (tests/unit/data/loop_parity.jsonl, made by
   tests/integration/test_loop_parity_live.py: `tessera up --slo-policy` with sim workers under a
   load step, the autoscaler writing TESSERA_RECORD_DECISIONS) replays through `tessera sim`'s
   driver to the decisions the service made, interval by interval; and the service's observer
   turns each recorded router interval into the observation it recorded.
2. For every policy in deploy/slo-policies/, the service's driver (ModelAutoscaler, fed router
   intervals) and the simulator's (build_autoscaler("tessera"), fed simulated intervals) plan the
   same fleets from the same load: a scale from zero with held requests, a ramp, a burst inside an
   interval, latencies over the targets near the knee (corrections), and a quiet tail.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from services.autoscaler.load_observer import ModelInterval
from services.autoscaler.model_autoscaler import ModelAutoscaler, observation
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType
from tessera.planning.forecast import IntervalStats
from tessera.planning.load import LoadMix
from tessera.planning.observation import observation_from_json, observation_to_json, parse_label
from tessera.planning.slo_policy import parse_slo_policy
from tessera.sim.autoscalers import Observation, TypeObservation, build_autoscaler
from tessera.sim.replay import replay
from tests.support.paths import REPO

RECORDING = Path(__file__).parent / "data" / "loop_parity.jsonl"


def recorded() -> list[dict]:
    return [json.loads(line) for line in RECORDING.read_text().splitlines()]


def test_a_recorded_live_run_replays_to_the_same_decisions_through_the_simulators_driver():
    lines = recorded()
    pairs = replay(lines)
    assert len(pairs) == sum("decision" in line for line in lines) >= 15
    sizes = [sum(p.recorded["counts"].values()) for p in pairs]
    assert max(sizes) > sizes[0] and sizes[-1] < max(sizes), sizes  # it grew and shrank: not a quiet fleet
    assert any(p.recorded["corrections"] for p in pairs)  # and it learnt a correction on the way
    for i, pair in enumerate(pairs):
        assert pair.replayed == pair.recorded, f"interval {i}"


def test_the_replay_notices_a_decision_the_loop_would_not_make():
    """The parity check can fail: one recorded fleet changed by hand no longer matches."""
    lines = recorded()
    last = next(line for line in reversed(lines) if "decision" in line)
    label = next(iter(last["decision"]["counts"]))
    last["decision"]["counts"][label] += 1
    changed = replay(lines)[-1]
    assert changed.replayed != changed.recorded


def test_the_services_observer_rebuilds_each_recorded_observation_from_the_router_interval():
    policy, asked = None, {}
    for line in recorded():
        if "policy" in line:
            policy = parse_slo_policy(line["yaml"])
            continue
        raw = dict(line["interval"])
        for key in ("ttft_s", "itl_s"):
            raw[key] = {float(p): v for p, v in raw[key].items()}
        ready = None if line["ready"] is None else {parse_label(k): n for k, n in line["ready"].items()}
        obs = observation_from_json(line["observation"])
        rebuilt = observation(policy, ModelInterval(**raw), obs.now_s, line["peak_rps"], asked, ready)
        assert observation_to_json(rebuilt) == line["observation"]
        asked = {parse_label(k): n for k, n in line["decision"]["counts"].items()}


# -- 2. the same inputs through both drivers, for every shipped policy ------------------------------

POLICIES = sorted((REPO / "deploy" / "slo-policies").glob("*.yaml"))

# (arrivals in the interval, seconds of the interval they arrive in, requests held at its end,
#  observed TTFT and TPOT percentiles in seconds)
SCRIPT = [
    (0, 30, 3, None, None),  # a model at zero: requests held for a first instance
    (150, 30, 0, 0.20, 0.020),
    (600, 30, 0, 0.30, 0.030),
    (1500, 30, 0, 0.45, 0.045),
    (1500, 8, 0, 0.90, 0.060),  # a burst: the same requests inside 8 s, latencies over the targets
    (2400, 30, 0, 0.60, 0.055),
    (2400, 30, 0, 0.40, 0.040),
    (900, 30, 0, 0.20, 0.020),
    *[(300, 30, 0, 0.10, 0.015)] * 12,  # quiet: the fleet comes down after the hysteresis' wait
]
PROMPT = (1500.0, 3000.0, 6000.0, 200.0)  # mean, p90, p99 prompt tokens; mean answer tokens


def _intervals(interval_s: float):
    """Per step: end time, arrival times, held, TTFT and TPOT percentiles."""
    for k, (n, spread, held, ttft, tpot) in enumerate(SCRIPT):
        start = k * interval_s
        times = tuple(start + spread * (i + 0.5) / n for i in range(n))
        yield start + interval_s, times, held, ttft, tpot


def _peak(times: tuple[float, ...], start: float, window: float) -> float:
    """What the service measures: arrivals counted once a window, the highest rate kept."""
    if not times:
        return 0.0
    return float(np.bincount(((np.asarray(times) - start) // window).astype(int)).max()) / window


def _served(n: int, itype: InstanceType, ready: dict[InstanceType, int]) -> int:
    """The requests a type finished: an even share per ready instance among the types that do its
    part of a request (prompts: mixed and prefill; a decode type's answers: mixed and decode)."""
    part = "prefill" if itype.role == "decode" else "decode"
    peers = [t for t in ready if t.role != part]
    total = sum(ready[t] for t in peers)
    return int(n * ready[itype] / total) if total else 0


@pytest.mark.parametrize("path", POLICIES, ids=[p.name for p in POLICIES])
def test_the_live_and_the_simulated_loop_plan_the_same_fleets_from_the_same_load(path):
    policy = parse_slo_policy(path.read_text())
    live = ModelAutoscaler.for_policy(policy)
    sim = build_autoscaler("tessera", policy, CapacityModel(engines_for(policy)), LoadMix(0.0), warm_start=False)
    window, interval_s = policy.forecast.peak_window_s, policy.interval_s
    mean, p90, p99, output = PROMPT
    asked: dict[InstanceType, int] = {}
    before: dict[InstanceType, int] = {}
    fleets, factors = [], []
    for now, times, held, ttft, tpot in _intervals(interval_s):
        ready = {t: min(n, before.get(t, 0)) for t, n in asked.items()}  # asked a step ago: ready now
        ready = {t: n for t, n in ready.items() if n}
        n = len(times)
        shape = (mean, p90, output, p99) if n else (None, None, None, None)
        seen = ModelInterval(
            interval_s,
            n,
            held,
            shape[0],
            shape[2],
            {policy.targets.ttft.percentile: ttft} if ttft else {},
            {policy.targets.tpot.percentile: tpot} if tpot else {},
            shape[1],
            shape[3],
            n,
        )
        live_counts = live.step(seen, now, _peak(times, now - interval_s, window) if n else None, ready)
        fleet = {}
        for t in sorted(set(asked) | set(ready)):
            served = _served(n, t, ready) if t in ready else 0
            fleet[t] = TypeObservation(
                ready.get(t, 0),
                asked.get(t, 0) - ready.get(t, 0),
                (),
                served,
                (ttft,) * served if ttft and t.role != "decode" else (),
                (tpot,) * served if tpot and t.role != "prefill" else (),
            )
        arrivals = IntervalStats(interval_s, n, *(shape[:3] if n else (None, None, None)), None, shape[3])
        sim_decision = sim.decide(Observation(now, interval_s, arrivals, held, fleet, times))
        last = live.loop.last
        assert last is not None
        assert sim_decision.counts == live_counts, f"t={now}"
        assert sim_decision.reasons == last.reasons and sim_decision.forecast_rps == last.load.rate_rps
        assert sim_decision.plan == last.plan.summary().splitlines()[0]
        assert sim_decision.factors == last.factors()
        before, asked = asked, live_counts
        fleets.append(sum(live_counts.values()))
        factors.append(last.factors())
    assert fleets[0] >= 1 and max(fleets) > fleets[1] and fleets[-1] < max(fleets), fleets  # up and back down
    assert any(factors), "no correction was learnt: the script does not exercise the corrections"
