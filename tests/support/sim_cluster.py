"""A small cluster of real Tessera processes with simulated workers, for tests of faults and hostile input."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc

from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tessera.v1 import common_pb2, router_pb2, router_pb2_grpc
from tests.support.harness import ServiceProcess, wait_for
from tests.support.models import TINY


class SimCluster:
    """etcd, a scheduler, a router and simulated workers (timed as Llama-3-8B on H100s), each a real process."""

    def __init__(
        self,
        log_dir: Path,
        workers: tuple[str, ...] = ("w1", "w2"),
        router_args: tuple[str, ...] = (),
        worker_args: tuple[str, ...] = (),
        env: dict[str, str] | None = None,
        args_by_worker: dict[str, tuple[str, ...]] | None = None,
    ) -> None:
        """env: extra environment for every service (an OTLP endpoint, say); args_by_worker: flags for
        one worker only (its role, accelerator, engine arguments), after worker_args."""
        self.log_dir = log_dir
        self.etcd = LocalEtcd(
            client_port=free_port(), data_dir=str(log_dir / "etcd"), log_path=str(log_dir / "etcd.log")
        ).start()
        common = ["--etcd", self.etcd.endpoint, "--lease-ttl", "3"]
        self.scheduler = ServiceProcess("scheduler", ["scheduler", *common, "--port", "0"], log_dir, env).start()
        self.grpc_port, self.http_port = free_port(), free_port()
        self.router = ServiceProcess(
            "router",
            [
                "router",
                *common,
                "--port",
                str(self.http_port),
                "--grpc-port",
                str(self.grpc_port),
                *router_args,
            ],
            log_dir,
            env,
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
                    *worker_args,
                    *(args_by_worker or {}).get(wid, ()),
                ],
                log_dir,
                env,
            ).start()
            for wid in workers
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

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def wait_ready(self, timeout: float = 90) -> None:
        try:
            wait_for(lambda: self.healthy() == set(self.workers), timeout, interval=0.5, what="the simulated workers")
        except TimeoutError:
            print(self.logs())
            raise

    def stream(self, max_tokens: int = 600, request_id: str = ""):
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

    @classmethod
    @contextlib.contextmanager
    def running(cls, log_dir: Path, **kwargs):
        """A ready cluster for a fixture: its services' logs are printed if anything fails, and it is closed."""
        c = cls(log_dir, **kwargs)
        try:
            c.wait_ready()
            yield c
        except BaseException:
            print(c.logs())
            raise
        finally:
            c.close()

    def close(self) -> None:
        self.channel.close()
        for p in (*self.workers.values(), self.router, self.scheduler):
            if p.proc is not None and p.proc.poll() is None:
                os.killpg(p.proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
            p.stop()
        self.etcd.stop(wipe=True)
