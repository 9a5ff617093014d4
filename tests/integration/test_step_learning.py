"""Workers learn how fast their machine runs steps, and the scheduler sees it (issue 18, item 5).

Two simulated H100 workers behind a router: w1 runs its prefills twice and its decode steps 1.5
times as long as the performance model says (a machine the model does not know yet), w2 runs as
the model says. After a few dozen requests through the router, `tessera status` (the scheduler's
view) must show each worker's learnt multiples: about 2.0 and 1.5 for w1, about 1.0 for w2.
"""

from __future__ import annotations

import concurrent.futures

import pytest

from tessera.v1 import common_pb2, router_pb2
from tests.support.harness import wait_for
from tests.support.models import TINY
from tests.support.sim_cluster import SimCluster

TOLERANCE = 0.15


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SimCluster.running(
        tmp_path_factory.mktemp("step-learning"),
        workers=("w1", "w2"),
        args_by_worker={"w1": ("--sim-step-time-scale", "prefill=2,decode=1.5")},
    ) as c:
        yield c


def generate(cluster: SimCluster, words: int, max_tokens: int, request_id: str) -> int:
    """Tokens streamed for a prompt of ``words`` words. Prompts of a thousand tokens make a prefill
    step of tens of milliseconds, so the few milliseconds a request spends between the worker's
    book and the engine do not count for much in what is learnt."""
    stream = cluster.stub.Generate(
        router_pb2.RouterGenerateRequest(
            model=TINY,
            text=f"{request_id} " + "hello " * words,
            request_id=request_id,
            sampling=common_pb2.SamplingParams(max_tokens=max_tokens, ignore_eos=True),
        ),
        timeout=60,
    )
    return sum(len(r.delta.token_ids) for r in stream)


def learnt(cluster: SimCluster) -> dict[str, tuple[float | None, float | None]]:
    return {w["id"]: (w["prefill_time_scale"], w["decode_time_scale"]) for w in cluster.status()["workers"]}


def test_each_worker_learns_its_machines_step_times(cluster):
    before = learnt(cluster)
    assert before == {"w1": (None, None), "w2": (None, None)}  # nothing served, nothing learnt
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        # Two at a time, one per worker (the second goes where the first is not): each first token
        # times a prefill that had its engine to itself.
        for i in range(16):
            pair = pool.map(lambda j, i=i: generate(cluster, 1000, 16, f"solo-{i}-{j}"), range(2))
            assert list(pair) == [16, 16]
        # Then batches: decode steps of several sequences.
        assert all(n == 48 for n in pool.map(lambda i: generate(cluster, 50, 48, f"batch-{i}"), range(12)))

    def settled() -> bool:
        now = learnt(cluster)
        return all(v is not None for pair in now.values() for v in pair)

    try:
        wait_for(settled, 10, interval=0.5, what="both workers learnt step times in the scheduler view")
    except TimeoutError:
        raise AssertionError(learnt(cluster)) from None
    now = learnt(cluster)
    assert now["w1"][0] == pytest.approx(2.0, rel=TOLERANCE), now
    assert now["w1"][1] == pytest.approx(1.5, rel=TOLERANCE), now
    assert now["w2"][0] == pytest.approx(1.0, rel=TOLERANCE), now
    assert now["w2"][1] == pytest.approx(1.0, rel=TOLERANCE), now


def test_a_bad_scale_stops_the_worker_with_its_name(tmp_path):
    from tests.support.harness import ServiceProcess

    worker = ServiceProcess(
        "bad",
        [
            "worker",
            "--engine",
            "sim",
            "--model",
            "tiny",
            "--sim-step-time-scale",
            "prefill=nan",
            "--etcd",
            "127.0.0.1:1",
        ],
        tmp_path,
    ).start()
    try:
        wait_for(lambda: worker.proc.poll() is not None, 60, interval=0.5, what="the worker to exit")
        assert worker.proc.returncode == 2
        assert "--sim-step-time-scale" in worker.log_tail(5)
    finally:
        worker.stop()
