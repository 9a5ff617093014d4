"""Starting and stopping worker processes on this machine (the local actuator's hands).

Each worker runs in its own process group (its engine's child processes go
with it) and gets its own slice of the machine: its own GPU(s) via
CUDA_VISIBLE_DEVICES / HIP_VISIBLE_DEVICES where there are GPUs, its own CPU
core(s) otherwise.

On CPUs the whole worker (frontend, engine core, compute process) is pinned to
its cores, not just the compute threads (VLLM_CPU_OMP_THREADS_BIND): vLLM's
engine core busy-polls its shared-memory queue while a step computes, and left
free it takes a whole second core, starving the router and the other engines
(streams then arrive in bursts). ``TESSERA_CPU_CORES_PER_WORKER`` (default 1)
sets how many cores each worker gets.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from services.autoscaler.desired import WorkerGroup
from services.autoscaler.worker_command import shape_flags, tensor_parallel
from tessera.runtime.devices import device_slots

log = logging.getLogger("tessera.autoscaler")

STOP_GRACE_S = 30.0
PIN_ENV = "TESSERA_CPU_AFFINITY"  # cores a launched worker pins itself to (services/worker/main.py)


@dataclass
class Instance:
    """One worker process this autoscaler started."""

    id: str
    group: str
    alive: bool
    started_at: float
    exit_code: int | None = None
    log_path: str = ""


@dataclass
class _Proc:
    instance: Instance
    popen: subprocess.Popen
    slots: list[int]


class LocalProcesses:
    """Worker processes, each in its own process group with its own devices or cores."""

    def __init__(
        self, etcd: str, log_dir: str, python: str = sys.executable, extra_args: list[str] | None = None
    ) -> None:
        self.etcd = etcd
        self.log_dir = Path(log_dir)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.python = python
        self.extra_args = list(extra_args or [])
        self.device_var, gpus = device_slots()  # e.g. CUDA_VISIBLE_DEVICES and 8; none on a CPU box
        self.slot_count = gpus or (os.cpu_count() or 1)
        self.cores_per_worker = int(os.environ.get("TESSERA_CPU_CORES_PER_WORKER", "1"))
        self._procs: dict[str, _Proc] = {}

    def _take_slots(self, n: int) -> list[int]:
        """The least-used device or core indices, so workers spread over the machine."""
        usage = [0] * self.slot_count
        for p in self._procs.values():
            if p.popen.poll() is None:
                for s in p.slots:
                    usage[s] += 1
        order = sorted(range(self.slot_count), key=lambda i: (usage[i], i))
        return order[: max(1, min(n, self.slot_count))]

    def launch(self, group: WorkerGroup) -> Instance:
        worker_id = f"{group.name}-{uuid.uuid4().hex[:6]}"
        tp = tensor_parallel(group)
        simulated = group.engine == "sim"
        # A simulated worker holds no device and mostly sleeps: it takes no slot and is not pinned.
        slots = [] if simulated else self._take_slots(tp if self.device_var else self.cores_per_worker)
        env = dict(os.environ)  # with TESSERA_LAUNCHER_PID, if any: the worker ends with `tessera up`
        if simulated:
            pass
        elif self.device_var:
            env[self.device_var] = ",".join(map(str, slots))
        else:
            env["VLLM_CPU_OMP_THREADS_BIND"] = ",".join(map(str, slots))
            # The worker pins itself (and so all it spawns) first thing. Not a preexec_fn: running
            # Python between fork and exec in this gRPC-threaded process segfaulted children under load.
            env[PIN_ENV] = ",".join(map(str, slots))
        cmd = [
            self.python,
            "-m",
            "tessera.cli",
            "worker",
            "--model",
            group.model,
            "--group",
            group.name,
            "--worker-id",
            worker_id,
            "--etcd",
            self.etcd,
            *shape_flags(group),
            *self.extra_args,
        ]
        log_path = self.log_dir / f"{worker_id}.log"
        with open(log_path, "ab") as logf:
            popen = subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        instance = Instance(worker_id, group.name, True, time.time(), log_path=str(log_path))
        self._procs[worker_id] = _Proc(instance, popen, slots)
        where = (
            f"simulated {group.accelerator}"
            if simulated
            else f"{self.device_var or 'cpu core'} {','.join(map(str, slots))}"
        )
        log.info("launched worker %s (group %s, %s, pid %d, log %s)", worker_id, group.name, where, popen.pid, log_path)
        return instance

    def instances(self) -> list[Instance]:
        out = []
        for p in self._procs.values():
            code = p.popen.poll()
            if code is not None and p.instance.alive:
                p.instance.alive = False
                p.instance.exit_code = code
            out.append(p.instance)
        return out

    def forget(self, instance_id: str) -> None:
        p = self._procs.get(instance_id)
        if p is not None and p.popen.poll() is not None:
            del self._procs[instance_id]

    async def stop(self, instance_id: str) -> None:
        p = self._procs.get(instance_id)
        if p is None:
            return
        await _terminate_group(p.popen)
        p.instance.alive = False
        p.instance.exit_code = p.popen.returncode

    async def shutdown(self) -> None:
        await asyncio.gather(*(self.stop(i) for i in list(self._procs)))


async def _terminate_group(popen: subprocess.Popen, grace: float = STOP_GRACE_S) -> None:
    """SIGTERM the worker (it drains and stops its engine), then SIGKILL its whole group.

    Only the worker's main process gets SIGTERM: the engine processes must keep
    running while in-flight requests finish.
    """
    if popen.poll() is not None:
        _kill_group(popen.pid, signal.SIGKILL)  # leftovers of a crashed worker
        return
    try:
        popen.send_signal(signal.SIGTERM)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + grace
    while popen.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
    _kill_group(popen.pid, signal.SIGKILL)
    if popen.poll() is None:
        popen.wait()


def _kill_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
