"""The live autoscaler and the simulator run one planning loop: a live run's recorded observations,
replayed through `tessera sim`'s driver of the loop, give the decisions the service made.

`tessera up --slo-policy` with simulated workers and the autoscaler recording its policy,
observations and decisions (TESSERA_RECORD_DECISIONS); a load step makes the fleet grow, so the
recording holds scale-ups, holds and learnt state, not only a quiet fleet. The small recording in
tests/unit/data/loop_parity.jsonl came from this test (pytest --basetemp).
"""

from __future__ import annotations

import asyncio
import json
import os

from tessera.sim.replay import replay
from tests.integration.test_slo_autoscaling_live import POLICY, offer, workers
from tests.support.harness import tessera_up, wait_for

# The live autoscaling test's policy on a smaller inventory (a few sim workers on this machine's
# two cores), learning corrections from a handful of requests an interval.
SMALL = POLICY.replace("inventory: {cpu: {free: 24}}", "inventory: {cpu: {free: 6}}").replace(
    "instances: {min: 1, max: 24}", "instances: {min: 1, max: 6}\ncorrections: {min_samples: 4}"
)


def test_a_live_runs_decisions_replay_to_the_same_decisions_in_the_simulators_loop(tmp_path):
    policy = tmp_path / "policy.yaml"
    assert SMALL != POLICY
    policy.write_text(SMALL)
    recording = tmp_path / "decisions.jsonl"
    env = {**os.environ, "TESSERA_RECORD_DECISIONS": str(recording)}
    with tessera_up(tmp_path, "--slo-policy", str(policy), env=env) as (_, port, lines):
        url = f"http://127.0.0.1:{port}"
        etcd = next(line.split("--etcd")[1].split()[0] for line in lines if "tessera status --etcd" in line)
        wait_for(lambda: workers(etcd) >= 1, 60, interval=0.5, what="the policy's one warm instance")
        results: list[int] = []
        asyncio.run(offer(url, 3.0, 16, results))
        wait_for(lambda: workers(etcd) >= 2, 30, interval=1, what="the fleet to grow")
        asyncio.run(offer(url, 1.0, 8, results))
    assert results and all(code == 200 for code in results), set(results)

    lines_ = [json.loads(line) for line in recording.read_text().splitlines()]
    decisions = [line for line in lines_ if "decision" in line]
    assert len(decisions) >= 10, f"only {len(decisions)} intervals recorded"
    sizes = [sum(d["decision"]["counts"].values()) for d in decisions]
    assert max(sizes) > sizes[0], f"the recorded fleet never grew: {sizes}"
    assert any(d["observation"]["fleet"] for d in decisions)
    # the routers' answer-length histogram reaches the plan (the TPOT tail of short answers needs it)
    assert any(d["observation"]["arrivals"].get("output_p90") for d in decisions)
    pairs = replay(lines_)
    assert len(pairs) == len(decisions)
    for i, pair in enumerate(pairs):
        assert pair.replayed == pair.recorded, f"interval {i}: live {pair.recorded} != simulated {pair.replayed}"
