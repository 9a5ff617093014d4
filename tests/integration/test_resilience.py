"""Nothing is lost when workers die, etcd restarts, or an autoscaler fails over. Runs last."""

from __future__ import annotations

import concurrent.futures
import shutil
import time
import urllib.request

import grpc
import pytest

from tessera.runtime.net import split_host_port
from tessera.v1 import autoscaler_pb2, autoscaler_pb2_grpc
from tests.support.harness import ServiceProcess, cluster_status, kill_worker_group, pid_listening_on, wait_for
from tests.support.models import CLUSTER_MODELS, SMOLLM2, TINY

pytestmark = pytest.mark.disruptive

LONG = 1200  # tokens: several seconds of streaming on the tiny model


def status(cluster) -> dict:
    return cluster_status(cluster.etcd.endpoint)


def tiny_workers(cluster) -> list[dict]:
    return [w for w in status(cluster)["workers"] if w["model"] == TINY]


def plan(address: str) -> autoscaler_pb2.Plan:
    with grpc.insecure_channel(address) as ch:
        return autoscaler_pb2_grpc.AutoscalerStub(ch).GetPlan(autoscaler_pb2.GetPlanRequest(), timeout=5)


def stream_to_the_end(client, max_tokens: int) -> tuple[int, str | None, int]:
    """Stream a completion; return (completion tokens, finish reason, chunks)."""
    chunks, finish, usage = 0, None, None
    for c in client.completions.create(
        model=TINY,
        prompt="Tell me a long story.",
        max_tokens=max_tokens,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    ):
        if c.choices:
            chunks += 1
            finish = c.choices[0].finish_reason or finish
        if c.usage:
            usage = c.usage.completion_tokens
    return usage or 0, finish, chunks


def router_metric(cluster, name: str, label: str = "") -> float:
    text = urllib.request.urlopen(cluster.base_url + "/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and label in line and not line.startswith("#")
    )


def test_client_disconnect_aborts_the_request_in_the_engine(cluster, openai_client):
    stream = openai_client.completions.create(
        model=TINY, prompt="Go on and on.", max_tokens=LONG, stream=True, extra_body={"ignore_eos": True}
    )
    for i, _ in enumerate(stream):
        if i == 20:
            break
    stream.close()  # the client hangs up after 20 chunks of 1200
    # The engine stops working on it long before the 1200 tokens would be done.
    wait_for(
        lambda: all(w["tokens_in_flight"] == 0 and w["num_running"] == 0 for w in tiny_workers(cluster)),
        3,
        interval=0.2,
        what="the workers to drop the abandoned request",
    )


def test_a_dead_worker_is_retried_before_the_first_token(cluster, openai_client):
    """A worker that is registered but gone (crashed, lease not yet expired) costs a retry, not an error."""
    import asyncio

    from tessera.runtime.etcd import keys
    from tessera.runtime.etcd.client import EtcdConnector
    from tessera.runtime.etcd.records import identity_to_json
    from tessera.runtime.net import free_port
    from tessera.v1 import common_pb2 as pb

    ghost = pb.WorkerIdentity(
        id="ghost",
        address=f"127.0.0.1:{free_port()}",
        model=TINY,
        role=pb.ROLE_MIXED,
        max_model_len=2048,
        kv_block_size=32,
        kv_capacity_blocks=1000,
    )

    async def put(value: bytes | None) -> None:
        conn = EtcdConnector(cluster.etcd.endpoint)
        client = await conn.connect()
        if value is None:
            await client.delete(keys.worker("ghost").encode())
        else:
            await client.put(keys.worker("ghost").encode(), value)
        await conn.discard(client)

    before = router_metric(cluster, "tessera_router_retries_total", 'when="before_first_token"')
    asyncio.run(put(identity_to_json(ghost)))
    try:
        wait_for(lambda: any(w["id"] == "ghost" for w in status(cluster)["workers"]), 10, what="the ghost")
        for _ in range(30):  # round robin reaches the ghost every third request
            r = openai_client.completions.create(
                model=TINY, prompt="hello", max_tokens=3, extra_headers={"x-tessera-profile": "round_robin"}
            )
            assert r.usage.completion_tokens >= 1
    finally:
        asyncio.run(put(None))
    assert router_metric(cluster, "tessera_router_retries_total", 'when="before_first_token"') > before


def test_a_request_for_a_model_with_no_worker_is_held_until_one_starts(cluster, openai_client):
    """Scale from zero, and a model's only worker dying: the request waits for the next worker, not a 503."""
    smol = next(w for w in status(cluster)["workers"] if w["model"] == SMOLLM2)
    kill_worker_group(pid_listening_on(split_host_port(smol["address"])[1]))
    wait_for(
        lambda: not any(w["model"] == SMOLLM2 and w["healthy"] for w in status(cluster)["workers"]),
        30,
        interval=0.5,
        what="the SmolLM2 worker to leave placement",
    )
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        answer = pool.submit(
            lambda: openai_client.with_options(timeout=300).chat.completions.create(
                model=SMOLLM2, messages=[{"role": "user", "content": "hi"}], max_tokens=3
            )
        )
        # The held request is visible to the autoscaler as demand for the model.
        wait_for(
            lambda: router_metric(cluster, "tessera_router_held_requests", SMOLLM2) >= 1,
            30,
            interval=0.2,
            what="the request to be held",
        )
        # The autoscaler brings the model back, and the held request is served by the new worker.
        r = answer.result(timeout=300)
    assert r.choices[0].message.content is not None
    assert router_metric(cluster, "tessera_router_held_requests", SMOLLM2) == 0


def test_killing_a_worker_loses_no_request_and_it_is_replaced(cluster, openai_client):
    before = tiny_workers(cluster)
    assert len(before) == 2
    victim = before[0]
    pid = pid_listening_on(split_host_port(victim["address"])[1])
    assert pid, "worker process not found"

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        futures = [pool.submit(stream_to_the_end, openai_client, LONG) for _ in range(6)]
        time.sleep(2.0)  # every stream is under way on one of the two workers
        kill_worker_group(pid)
        killed_at = time.monotonic()
        # Requests sent right after the death succeed on the survivor.
        for _ in range(3):
            r = openai_client.completions.create(model=TINY, prompt="still there?", max_tokens=4)
            assert r.choices[0].finish_reason in ("length", "stop")
        # The dead worker leaves `tessera status` within the lease TTL (5 s) and some slack,
        # while the streams it held go on elsewhere.
        wait_for(
            lambda: victim["id"] not in {w["id"] for w in tiny_workers(cluster)},
            5 + 5,
            what="the killed worker to leave tessera status",
        )
        assert time.monotonic() - killed_at < 12
        results = [f.result(timeout=300) for f in futures]
    # Every stream finished with all its tokens: those on the dead worker resumed elsewhere.
    assert all(tokens == LONG and finish == "length" for tokens, finish, _ in results), results
    # The autoscaler launches a replacement, which registers and serves.
    wait_for(lambda: len(tiny_workers(cluster)) == 2, 240, interval=2, what="a replacement worker")
    p = plan(next(s["address"] for s in status(cluster)["services"] if s["kind"] == "autoscaler"))
    assert any(d.action == "restart" and d.instance == victim["id"] for d in p.recent_decisions)


@pytest.mark.parametrize("wipe", [False, True], ids=["restart", "restart-with-data-loss"])
def test_requests_keep_succeeding_while_etcd_restarts(cluster, openai_client, wipe):
    def ask():
        r = openai_client.chat.completions.create(
            model=TINY, messages=[{"role": "user", "content": "hi"}], max_tokens=4, temperature=0
        )
        return r.choices[0].message.content is not None

    assert ask()
    cluster.etcd.kill()
    if wipe:
        shutil.rmtree(cluster.etcd.data_dir)
    outage_end = time.monotonic() + 8  # longer than every lease TTL
    while time.monotonic() < outage_end:
        assert ask()
        time.sleep(0.5)
    cluster.etcd.start()
    for _ in range(10):
        assert ask()
        time.sleep(0.3)
    # Every worker and service is registered again.
    wait_for(
        lambda: (
            len(status(cluster)["workers"]) == len(CLUSTER_MODELS)
            and {s["kind"] for s in status(cluster)["services"]} == {"router", "scheduler", "autoscaler"}
        ),
        30,
        interval=1,
        what="re-registration after the etcd restart",
    )
    assert ask()


def test_two_autoscalers_never_both_act(cluster, openai_client):
    desired = cluster.log_dir / "desired.yaml"
    second = ServiceProcess(
        "autoscaler-b",
        [
            "autoscaler",
            "--etcd",
            cluster.etcd.endpoint,
            "--lease-ttl",
            "3",
            "--desired",
            str(desired),
            "--autoscaler-id",
            "autoscaler-b",
            "--worker-log-dir",
            str(cluster.log_dir / "workers-b"),
        ],
        cluster.log_dir,
        cluster.env,
    ).start()
    try:

        def b_address():
            return next(
                (
                    s["address"]
                    for s in status(cluster)["services"]
                    if s["kind"] == "autoscaler" and s["id"] == "autoscaler-b"
                ),
                None,
            )

        address_b = wait_for(b_address, 30, what="the second autoscaler to register")
        time.sleep(4)
        p = plan(address_b)
        assert not p.this_is_leader and p.leader_id == "autoscaler-a"
        assert len(p.recent_decisions) == 0
        assert len(status(cluster)["workers"]) == len(CLUSTER_MODELS)  # nothing launched twice

        # The leader dies without a goodbye; its workers keep running.
        cluster.autoscaler.kill()
        wait_for(lambda: plan(address_b).this_is_leader, 15, what="the second autoscaler to take over")
        p = plan(address_b)
        assert p.ready["tiny"] == 2 and p.ready["smollm2"] == 1
        assert not any(d.action == "start" for d in p.recent_decisions)  # adopted, not relaunched

        # The new leader replaces a worker that dies.
        victim = tiny_workers(cluster)[0]
        kill_worker_group(pid_listening_on(split_host_port(victim["address"])[1]))
        wait_for(
            lambda: any(d.action == "start" for d in plan(address_b).recent_decisions),
            30,
            what="the new leader to launch a replacement",
        )
        assert openai_client.completions.create(model=TINY, prompt="hi", max_tokens=3).choices
        wait_for(lambda: len(tiny_workers(cluster)) == 2, 240, interval=2, what="the replacement to register")
    finally:
        second.stop()
    assert {w["model"] for w in status(cluster)["workers"]} >= {SMOLLM2}
