"""Faults the router must ride out with nothing lost: a worker whose engine hangs while its gRPC stays up,
a frozen worker process (SIGSTOP), and a worker that disappears mid-stream.

Simulated workers (timed as Llama-3-8B on an H100, so streams last seconds) behind a real etcd,
scheduler and router; the router's silence deadline and the workers' stall timeout are set short.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import grpc
import pytest

from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tessera.v1 import common_pb2, router_pb2, router_pb2_grpc
from tests.support.harness import ServiceProcess, wait_for
from tests.support.models import TINY

SILENCE_S = 3
STALL_S = 2
MAX_TOKENS = 600  # about 5 s of decode at the simulated speed: long enough to fault mid-stream


class FaultCluster:
    def __init__(self, log_dir) -> None:
        self.log_dir = log_dir
        self.etcd = LocalEtcd(
            client_port=free_port(), data_dir=str(log_dir / "etcd"), log_path=str(log_dir / "etcd.log")
        ).start()
        common = ["--etcd", self.etcd.endpoint, "--lease-ttl", "3"]
        self.scheduler = ServiceProcess("scheduler", ["scheduler", *common, "--port", "0"], log_dir).start()
        self.grpc_port = free_port()
        self.router = ServiceProcess(
            "router",
            [
                "router",
                *common,
                "--port",
                str(free_port()),
                "--grpc-port",
                str(self.grpc_port),
                "--stream-silence-s",
                str(SILENCE_S),
            ],
            log_dir,
        ).start()
        self.workers = {
            wid: ServiceProcess(
                wid,
                [
                    "worker",
                    *common,
                    "--engine",
                    "sim",
                    "--model",
                    "tiny",
                    "--accelerator",
                    "h100",
                    "--sim-arch",
                    "llama3-8b",
                    "--worker-id",
                    wid,
                    "--http-port",
                    "-1",
                    "--stall-timeout-s",
                    str(STALL_S),
                ],
                log_dir,
            ).start()
            for wid in ("w1", "w2")
        }
        self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        self.stub = router_pb2_grpc.RouterStub(self.channel)

    def status(self) -> dict:
        out = subprocess.run(
            [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", self.etcd.endpoint],
            capture_output=True,
            text=True,
            timeout=30,
        )
        return json.loads(out.stdout)

    def healthy(self) -> set[str]:
        return {w["id"] for w in self.status()["workers"] if w["healthy"]}

    def stream(self, max_tokens: int = MAX_TOKENS, request_id: str = ""):
        return self.stub.Generate(
            router_pb2.RouterGenerateRequest(
                model=TINY,
                text="hello " * 50,
                request_id=request_id,
                sampling=common_pb2.SamplingParams(max_tokens=max_tokens, ignore_eos=True),
            ),
            timeout=120,
        )

    def logs(self) -> str:
        return "\n".join(
            f"--- {p.name}\n{p.log_tail(30)}" for p in (self.router, self.scheduler, *self.workers.values())
        )

    def close(self) -> None:
        self.channel.close()
        for p in (*self.workers.values(), self.router, self.scheduler):
            if p.proc is not None and p.proc.poll() is None:
                os.killpg(p.proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            p.stop()
        self.etcd.stop(wipe=True)


@pytest.fixture(scope="module")
def faults(tmp_path_factory):
    c = FaultCluster(tmp_path_factory.mktemp("faults"))
    try:
        wait_for(lambda: c.healthy() == {"w1", "w2"}, 90, interval=0.5, what="two simulated workers")
        yield c
    except BaseException:
        print(c.logs())
        raise
    finally:
        c.close()


def _faulted_stream(c: FaultCluster, fault: int) -> tuple[int, list[str], float, str]:
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
