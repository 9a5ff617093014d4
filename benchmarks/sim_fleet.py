"""A live Tessera cluster of simulated workers, for the benchmarks that strike or load one (chaos, overload, soak).

Every part is a real process: etcd, schedulers, autoscalers (the leader keeps
the worker group, launching simulated workers as local processes) and a router.
Each service can be killed and started again with the same arguments, and
every process of a run, workers included, carries a marker in its environment
so that a run can find (and count) all of its processes at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import grpc
import psutil
from bench_cluster import ROOT, TESSERA

from tessera.cli.status import gather_status
from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tessera.v1 import autoscaler_pb2, autoscaler_pb2_grpc

MARKER = "TESSERA_FLEET_RUN"  # in every process of a run, workers included
MODEL = "tiny"  # the tokenizer and config the simulated workers lend (served as tiny-llama)


class Service:
    """A Tessera service process that can be killed and started again with the same arguments."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str]) -> None:
        self.name, self.args, self.log_dir, self.env = name, args, log_dir, env
        self.proc: subprocess.Popen | None = None

    def start(self) -> Service:
        with open(self.log_dir / f"{self.name}.log", "ab") as log:
            self.proc = subprocess.Popen(
                [*TESSERA, *self.args],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=ROOT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None and self.proc.poll() is None else None

    def kill(self) -> None:
        """SIGKILL the whole process group: a machine dying, not a clean stop."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def stop(self, grace_s: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGCONT)  # a stopped process cannot handle SIGTERM
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            self.kill()


class SimFleet:
    """etcd, schedulers, autoscalers keeping one group of simulated workers, and a router."""

    def __init__(
        self,
        work: Path,
        schedulers: int = 1,
        autoscalers: int = 1,
        workers: int = 2,
        accelerator: str = "h100",
        engine_args: dict[str, Any] | None = None,
        router_args: list[str] | None = None,
    ) -> None:
        self.work = work
        self.workers = workers
        self.env = {**os.environ, MARKER: uuid.uuid4().hex, "HF_HUB_OFFLINE": "1"}
        self.etcd = LocalEtcd(client_port=free_port(), data_dir=str(work / "etcd"), log_path=str(work / "etcd.log"))
        common = ["--etcd", self.etcd.endpoint, "--lease-ttl", "3"]
        desired = work / "desired.yaml"
        group = {
            "name": "sim",
            "model": MODEL,
            "engine": "sim",
            "accelerator": accelerator,
            "replicas": workers,
            "engine_args": {"sim_arch": "llama3-8b", **(engine_args or {})},
        }
        desired.write_text(json.dumps({"groups": [group]}))  # JSON is YAML
        self.http_port = free_port()
        self.schedulers = [
            Service(f"scheduler-{i + 1}", ["scheduler", *common, "--port", "0"], work, self.env)
            for i in range(schedulers)
        ]
        self.autoscalers = [
            Service(
                f"autoscaler-{chr(ord('a') + i)}",
                [
                    "autoscaler",
                    *common,
                    "--desired",
                    str(desired),
                    "--autoscaler-id",
                    f"autoscaler-{chr(ord('a') + i)}",
                    "--worker-log-dir",
                    str(work / "workers"),
                ],
                work,
                self.env,
            )
            for i in range(autoscalers)
        ]
        self.router = Service(
            "router",
            ["router", *common, "--port", str(self.http_port), "--grpc-port", "0", *(router_args or [])],
            work,
            self.env,
        )
        self.served = ""  # the model name clients use, once ready

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self) -> None:
        self.etcd.start()
        for s in (*self.schedulers, *self.autoscalers, self.router):
            s.start()

    async def wait_ready(self, timeout_s: float = 120.0) -> str:
        """Wait until every worker is registered, healthy and known to the router; return the served name."""
        deadline = time.monotonic() + timeout_s
        while not await self.fleet_ok():
            if time.monotonic() > deadline:
                raise SystemExit(f"the workers did not come up in {timeout_s:.0f} s; logs in {self.work}")
            await asyncio.sleep(1)
        while True:
            with contextlib.suppress(OSError, ValueError, KeyError):
                with urllib.request.urlopen(self.base_url + "/v1/models", timeout=5) as resp:
                    models = json.loads(resp.read())["data"]
                if len(models) == 1 and models[0].get("workers", 0) >= self.workers:
                    self.served = models[0]["id"]
                    return self.served
            if time.monotonic() > deadline:
                raise SystemExit(f"the router did not see the workers in {timeout_s:.0f} s; logs in {self.work}")
            await asyncio.sleep(1)

    async def status(self) -> dict[str, Any]:
        return await asyncio.wait_for(gather_status(self.etcd.endpoint), 10)

    async def fleet_ok(self) -> bool:
        """The desired number of workers registered, and every one healthy."""
        try:
            st = await self.status()
        except Exception:  # noqa: BLE001 - etcd may be down mid-fault: not restored yet
            return False
        return len(st["workers"]) == self.workers and all(w["healthy"] for w in st["workers"])

    def worker_processes(self) -> dict[str, psutil.Process]:
        """The live worker processes of this run, by worker id (from their command lines)."""
        out: dict[str, psutil.Process] = {}
        for proc in psutil.process_iter(["cmdline"]):
            cmd = proc.info["cmdline"] or []
            if "worker" not in cmd or "--worker-id" not in cmd:
                continue
            try:
                if proc.environ().get(MARKER) != self.env[MARKER] or proc.status() == psutil.STATUS_ZOMBIE:
                    continue
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                continue
            out[cmd[cmd.index("--worker-id") + 1]] = proc
        return out

    async def leader(self) -> Service | None:
        """The autoscaler that holds the leadership, asked over its own API."""
        st = await self.status()
        for svc in st["services"]:
            if svc["kind"] != "autoscaler":
                continue
            async with grpc.aio.insecure_channel(svc["address"]) as ch:
                with contextlib.suppress(grpc.aio.AioRpcError):
                    plan = await autoscaler_pb2_grpc.AutoscalerStub(ch).GetPlan(
                        autoscaler_pb2.GetPlanRequest(), timeout=2
                    )
                    if plan.this_is_leader:
                        return next((a for a in self.autoscalers if a.name == plan.leader_id), None)
        return None

    def teardown(self) -> int:
        """Stop everything; returns how many processes of the run were still alive afterwards (killed then)."""
        for s in (self.router, *self.autoscalers, *self.schedulers):
            with contextlib.suppress(Exception):
                s.stop()
        for proc in self.worker_processes().values():  # adopted workers outlive the autoscaler that launched them
            with contextlib.suppress(psutil.NoSuchProcess, ProcessLookupError):
                os.killpg(os.getpgid(proc.pid), signal.SIGCONT)
                proc.terminate()
        time.sleep(1)
        leftovers = 0
        for proc in psutil.process_iter():
            with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
                if proc.pid != os.getpid() and proc.environ().get(MARKER) == self.env[MARKER]:
                    proc.kill()
                    leftovers += 1
        self.etcd.stop(wipe=True)
        return leftovers
