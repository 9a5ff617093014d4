"""Starting and stopping real Tessera processes in tests, and cleaning up after them.

Every process a test run starts (and every worker the autoscaler launches
from it) inherits TESSERA_TEST_RUN; teardown kills whatever still carries it,
so a failed test never leaves engines running.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from tessera.runtime.net import free_port

RUN_MARKER = "TESSERA_TEST_RUN"
RUN_ID = os.environ.setdefault(RUN_MARKER, uuid.uuid4().hex)


def wait_for(predicate: Callable[[], Any], timeout: float, interval: float = 0.25, what: str = "condition") -> Any:
    """Poll until ``predicate()`` is truthy; return its value or fail with ``what``."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except AssertionError:
            raise  # a definite failure, not a condition to wait out
        except Exception as exc:  # noqa: BLE001 - retried until the deadline
            last_exc = exc
        time.sleep(interval)
    raise TimeoutError(
        f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc})" if last_exc else "")
    )


class ServiceProcess:
    """One `tessera <service>` process with its log in a file."""

    def __init__(self, name: str, args: list[str], log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.name = name
        self.cmd = [sys.executable, "-m", "tessera.cli", *args]
        self.log_path = log_dir / f"{name}.log"
        self.env = {**os.environ, **(env or {})}
        self.proc: subprocess.Popen | None = None

    def start(self) -> ServiceProcess:
        logf = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.cmd, stdout=logf, stderr=subprocess.STDOUT, env=self.env, start_new_session=True
        )
        logf.close()
        return self

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 40.0) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the whole process group: a machine dying, not a clean stop."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def kill_run_processes() -> int:
    """Kill every process started by this test run (and its process group)."""
    me = os.getpid()
    killed = 0
    for proc in psutil.process_iter(["pid"]):
        if proc.pid == me:
            continue
        try:
            if proc.environ().get(RUN_MARKER, "").startswith(RUN_ID):
                if os.getpgid(proc.pid) == os.getpgid(me):
                    proc.kill()  # shares pytest's group: kill just this one
                else:
                    os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
                killed += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess, ProcessLookupError):
            continue
    return killed


def kill_worker_group(pid: int) -> None:
    os.killpg(os.getpgid(pid), signal.SIGKILL)


def pid_listening_on(port: int) -> int | None:
    for conn in psutil.net_connections(kind="tcp"):
        if conn.laddr and conn.laddr.port == port and conn.status == psutil.CONN_LISTEN:
            return conn.pid
    return None


def up_etcd(lines: list[str]) -> str:
    """The etcd endpoint `tessera up` printed (its "tessera status --etcd E" hint)."""
    return next(line.split("--etcd")[1].split()[0] for line in lines if "tessera status --etcd" in line)


def cluster_status(etcd: str) -> dict:
    """`tessera status --json`: workers, services and the autoscaler's plan, as an operator reads them."""
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", etcd],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return json.loads(out)


@contextlib.contextmanager
def tessera_up(
    log_dir,
    *up_args: str,
    ready_timeout: float = 120,
    tessera: tuple[str, ...] = (sys.executable, "-m", "tessera.cli"),
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
):
    """`tessera up ...` (simulated tiny-model workers unless up_args say otherwise) in the background
    until it serves; Ctrl-C on the way out. ``tessera``, ``env`` and ``cwd``: another installation's
    command, run in its own environment (tests/deploy/test_clean_install.py)."""
    port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            *tessera,
            "up",
            "--engine",
            "sim",
            "--model",
            "tiny",
            *up_args,
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--log-dir",
            str(log_dir),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**(os.environ if env is None else env), "TESSERA_TEST_RUN": RUN_ID + "-up"},
        cwd=cwd,
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()

    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError("tessera up exited early:\n" + "".join(lines[-30:]))
        return any("Tessera is serving" in line for line in lines)

    try:
        wait_for(serving, ready_timeout, interval=0.5, what="the cluster to serve")
        yield proc, port, lines
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
