"""Faults the router must ride out with nothing lost: a worker whose engine hangs while its gRPC stays up,
a frozen worker process (SIGSTOP), and a worker that disappears mid-stream.

Simulated workers (timed as Llama-3-8B on an H100, so streams last seconds) behind a real etcd,
scheduler and router; the router's silence deadline and the workers' stall timeout are set short.
"""

from __future__ import annotations

import os
import signal
import time

import pytest

from tests.support.harness import wait_for
from tests.support.sim_cluster import SimCluster

SILENCE_S = 3
STALL_S = 2
MAX_TOKENS = 600  # about 5 s of decode at the simulated speed: long enough to fault mid-stream


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    with SimCluster.running(
        tmp_path_factory.mktemp("faults"),
        router_args=("--stream-silence-s", str(SILENCE_S)),
        worker_args=("--stall-timeout-s", str(STALL_S)),
    ) as c:
        yield c


def _faulted_stream(c: SimCluster, fault: int) -> tuple[int, list[str], float, str]:
    """Stream a request, apply `fault` (a signal) to its worker after 50 tokens; tokens, workers, largest gap."""
    tokens, workers, gaps = 0, [], [0.0]
    victim = ""
    last = time.monotonic()
    for msg in c.stream():
        now = time.monotonic()
        gaps.append(now - last)
        last = now
        if msg.worker_id and (not workers or workers[-1] != msg.worker_id):
            workers.append(msg.worker_id)
        tokens += len(msg.delta.token_ids)
        if not victim and tokens >= 50:
            victim = msg.worker_id
            os.kill(c.workers[victim].proc.pid, fault)
    return tokens, workers, max(gaps), victim


def test_a_hung_engine_is_left_mid_stream_and_takes_no_new_requests(faults):
    tokens, workers, gap, victim = _faulted_stream(faults, signal.SIGUSR1)  # the sim engine stops stepping
    try:
        assert tokens == MAX_TOKENS, (tokens, faults.logs())  # nothing lost, nothing duplicated
        assert len(workers) == 2 and workers[0] == victim, workers  # resumed on the other worker
        # found out by the stall timeout (no more heartbeats), then the router's silence deadline
        assert gap < STALL_S + SILENCE_S + 3, gap
        wait_for(lambda: victim not in faults.healthy(), 10, what="the hung worker to be reported stalled")
        other = next(w for w in faults.workers if w != victim)
        for _ in range(4):  # new requests all go to the live worker
            assert {m.worker_id for m in faults.stream(max_tokens=4) if m.worker_id} == {other}
    finally:
        os.kill(faults.workers[victim].proc.pid, signal.SIGUSR1)  # thaw
    wait_for(lambda: faults.healthy() == {"w1", "w2"}, 20, what="the thawed worker to serve again")


def test_a_frozen_worker_process_is_left_mid_stream(faults):
    tokens, workers, gap, victim = _faulted_stream(faults, signal.SIGSTOP)  # no heartbeats at all
    try:
        assert tokens == MAX_TOKENS, (tokens, faults.logs())
        assert len(workers) == 2 and workers[0] == victim, workers
        assert gap < SILENCE_S + 3, gap
    finally:
        os.kill(faults.workers[victim].proc.pid, signal.SIGCONT)
    wait_for(lambda: faults.healthy() == {"w1", "w2"}, 30, what="the resumed worker to serve again")


def test_a_killed_worker_is_left_mid_stream_at_once(faults):
    """Last: the victim stays dead (its lease expires; nothing restarts it here)."""
    tokens, workers, gap, victim = _faulted_stream(faults, signal.SIGKILL)
    assert tokens == MAX_TOKENS, (tokens, faults.logs())
    assert len(workers) == 2 and workers[0] == victim, workers
    assert gap < 2.0, gap  # a broken connection is seen at once, not after the silence deadline
    wait_for(lambda: victim not in faults.healthy(), 15, what="the killed worker to leave")
