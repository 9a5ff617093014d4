"""Starting and stopping what the router benchmarks measure (Tessera clusters, extra routers, vllm-router),
and where their results go.

Shared by benchmarks/router_overhead.py, router_comparison.py and
router_throughput.py. Every process is started in its own session (process
group) and registered with a ``Processes`` stack, which stops them all in
reverse order, group and children included, on success, failure, Ctrl-C or
SIGTERM (``sigterm_exits`` turns SIGTERM into SystemExit so ``with`` blocks
unwind; ``run_async`` makes it cancel a running coroutine, as asyncio.run
does for Ctrl-C). A second Ctrl-C while stopping kills what is left at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import psutil

from tessera.runtime.net import free_port

ROOT = Path(__file__).resolve().parent.parent
TESSERA = [sys.executable, "-m", "tessera.cli"]
T = TypeVar("T")


def sigterm_exits() -> None:
    """SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so every process started gets stopped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))


def run_async(coro: Awaitable[T]) -> T:
    """asyncio.run, with SIGTERM cancelling the coroutine like Ctrl-C does.

    A SystemExit raised by a plain signal handler inside a running event loop
    can land in a task and be lost; cancelling the main task always unwinds.
    """
    terminated = False

    def terminate(task: asyncio.Task) -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    async def main() -> T:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, terminate, asyncio.current_task())
        try:
            return await coro
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            sigterm_exits()

    try:
        return asyncio.run(main())
    except asyncio.CancelledError:
        if terminated:
            raise SystemExit(128 + signal.SIGTERM) from None
        raise


def run_in_workdir(prefix: str, run: Callable[[Path], Awaitable[T]], keep: bool = False) -> T:
    """A benchmark's coroutine run in a fresh temporary folder (its services' logs), SIGTERM unwinding
    like Ctrl-C; the folder is removed afterwards unless ``keep``."""
    sigterm_exits()
    work = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        return run_async(run(work))
    finally:
        if not keep:
            shutil.rmtree(work, ignore_errors=True)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def stop_tree(
    proc: subprocess.Popen,
    sig: int = signal.SIGTERM,
    grace_s: float = 20.0,
    leader_only: bool = False,
    hurry: bool = False,
) -> None:
    """Stop ``proc``, its process group and every descendant (even those in sessions of their own).

    ``sig`` goes to the group, or to the leader alone when it stops its own
    children in order (`tessera up`); whatever is still alive ``grace_s``
    later (at once if ``hurry``) is killed, by the pids recorded before stopping.
    """
    try:
        tree = psutil.Process(proc.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        tree = []
    if proc.poll() is None and not hurry:
        if leader_only:
            proc.send_signal(sig)
        else:
            _signal_group(proc.pid, sig)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            pass
    _signal_group(proc.pid, signal.SIGKILL)
    _, alive = psutil.wait_procs(tree, timeout=5)
    for child in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            child.kill()
    if proc.poll() is None:
        proc.wait(10)


class Processes:
    """The processes a benchmark started, stopped last-in first-out.

    Each entry is a callable ``stop(hurry)``; ``hurry`` means kill now.
    """

    def __init__(self) -> None:
        self._stops: list[Callable[[bool], None]] = []

    def spawn(
        self,
        cmd: list[str],
        log_path: Path,
        env: dict[str, str] | None = None,
        sig: int = signal.SIGTERM,
        grace_s: float = 20.0,
        leader_only: bool = False,
    ) -> subprocess.Popen:
        """Start ``cmd`` in a new session, output to ``log_path``; stopped later with ``stop_tree``."""
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                cmd,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                env={**os.environ, **(env or {})},
                cwd=ROOT,
            )
        self._stops.append(lambda hurry: stop_tree(proc, sig, grace_s, leader_only, hurry))
        return proc

    def on_stop(self, stop: Callable[[bool], None]) -> None:
        self._stops.append(stop)

    def stop_last(self) -> None:
        """Stop the most recent process (e.g. a router between runs)."""
        self._stops.pop()(False)

    def stop_all(self) -> None:
        hurry = False
        while self._stops:
            stop = self._stops.pop()
            try:
                stop(hurry)
            except KeyboardInterrupt:  # Ctrl-C again: kill this one and the rest without waiting
                hurry = True
                stop(True)
            except Exception as exc:  # noqa: BLE001 - keep stopping the rest
                print(f"[bench_cluster] stopping: {exc}", file=sys.stderr)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()


def wait_until(
    ready: Callable[[], bool],
    timeout_s: float,
    what: str,
    proc: subprocess.Popen | None = None,
    log: Path | None = None,
) -> None:
    """Poll ``ready`` until it holds; fail early when ``proc`` exits."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"{what} exited with {proc.returncode}; see {log}")
        try:
            if ready():
                return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise SystemExit(f"{what} not ready after {timeout_s:.0f}s; see {log}")


def http_json(url: str, timeout: float = 5.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        body = resp.read()
        return json.loads(body) if body else None


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def status(etcd: str) -> dict[str, Any]:
    """`tessera status --json`: workers with their addresses, services, the plan."""
    out = subprocess.run(
        [*TESSERA, "status", "--json", "--etcd", etcd], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    return json.loads(out)


def worker_addresses(etcd: str) -> list[tuple[str, str]]:
    """(gRPC address, OpenAI HTTP address) of every registered worker, sorted by id."""
    return [(w["address"], w.get("http_address", "")) for w in status(etcd)["workers"]]


def start_cluster(
    procs: Processes,
    model: str,
    log_dir: Path,
    workers: int = 1,
    env: dict[str, str] | None = None,
    extra: list[str] | None = None,
) -> tuple[int, int, str]:
    """`tessera up` in the background; returns (HTTP port, gRPC port, etcd endpoint) once it is serving.

    Stopped with SIGINT to `up` alone: its own orderly shutdown, workers included.
    """
    port, grpc_port = free_port(), free_port()
    up_log = log_dir / "up.log"
    cmd = [
        *TESSERA,
        "up",
        "--model",
        model,
        "--workers",
        str(workers),
        "--port",
        str(port),
        "--grpc-port",
        str(grpc_port),
        "--log-dir",
        str(log_dir),
        *(extra or []),
    ]
    proc = procs.spawn(
        cmd,
        up_log,
        env={"VLLM_CPU_KVCACHE_SPACE": "1", **(env or {})},
        sig=signal.SIGINT,
        grace_s=120,
        leader_only=True,
    )
    wait_until(lambda: "Ctrl-C stops everything" in up_log.read_text(), 600, "tessera up", proc, up_log)
    etcd = up_log.read_text().split("tessera status --etcd", 1)[1].split()[0]
    return port, grpc_port, etcd


def start_router(procs: Processes, etcd: str, log_path: Path, profile: str = "") -> int:
    """One more Tessera router on the cluster (optionally asking for a placement profile); its HTTP port."""
    port = free_port()
    cmd = [*TESSERA, "router", "--etcd", etcd, "--port", str(port), "--grpc-port", str(free_port())]
    proc = procs.spawn(cmd + (["--profile", profile] if profile else []), log_path)
    wait_until(lambda: bool(http_json(f"http://127.0.0.1:{port}/health")["models"]), 60, "router", proc, log_path)
    return port


def start_vllm_router(
    procs: Processes,
    worker_urls: list[str],
    log_path: Path,
    policy: str = "cache_aware",
    extra: list[str] | None = None,
) -> int:
    """vllm-router (PyPI vllm-router) in front of the given OpenAI HTTP backends; its port."""
    exe = Path(sys.executable).with_name("vllm-router")
    if not exe.exists():
        raise SystemExit("vllm-router is not installed: pip install -e '.[dev]'")
    port = free_port()
    proc = procs.spawn(
        [
            str(exe),
            "--worker-urls",
            *worker_urls,
            "--policy",
            policy,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--prometheus-port",
            str(free_port()),
            *(extra or []),
        ],
        log_path,
    )
    wait_until(lambda: http_ok(f"http://127.0.0.1:{port}/health"), 120, "vllm-router", proc, log_path)
    return port


def start_zero_latency_cluster(
    procs: Processes, model: str, log_dir: Path, workers: int = 1, worker_args: list[str] | None = None
) -> tuple[int, int, str]:
    """etcd, scheduler, router and engine-less workers as separate processes; (HTTP port, gRPC port, etcd)."""
    from tessera.runtime.etcd.server import LocalEtcd
    from tessera.runtime.models.registry import resolve

    etcd = LocalEtcd(client_port=free_port(), log_path=str(log_dir / "zl-etcd.log")).start()
    procs.on_stop(lambda hurry: (etcd.kill() if hurry else None, etcd.stop()))
    port, grpc_port = free_port(), free_port()
    procs.spawn([*TESSERA, "scheduler", "--etcd", etcd.endpoint, "--port", "0"], log_dir / "zl-scheduler.log")
    router = procs.spawn(
        [*TESSERA, "router", "--etcd", etcd.endpoint, "--port", str(port), "--grpc-port", str(grpc_port)],
        log_dir / "zl-router.log",
    )
    spec = resolve(model)
    for i in range(workers):
        procs.spawn(
            [
                sys.executable,
                str(ROOT / "benchmarks" / "zero_latency_worker.py"),
                "--etcd",
                etcd.endpoint,
                "--model",
                spec.name,
                "--model-path",
                spec.path,
                "--worker-id",
                f"zero-latency-{i}",
                *(worker_args or []),
            ],
            log_dir / f"zl-worker-{i}.log",
        )

    def ready() -> bool:
        return len(status(etcd.endpoint)["workers"]) == workers and bool(
            http_json(f"http://127.0.0.1:{port}/health")["models"]
        )

    wait_until(ready, 60, "zero-latency cluster", router, log_dir)
    return port, grpc_port, etcd.endpoint


def prepare_dirs(out: str, log_dir: str) -> Path:
    """Create the results folder of ``out`` (a path without suffix) and ``log_dir``; return the latter."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(log_dir).mkdir(parents=True, exist_ok=True)
    return Path(log_dir)


def save_results(
    summary: dict[str, Any],
    out: str,
    plot: Callable[[dict[str, Any], Path], None],
    table: Callable[[dict[str, Any]], None],
    indent: int | None = None,
) -> None:
    """``out``.json and ``out``.png, then the table on stdout."""
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out + ".json").write_text(json.dumps(summary, indent=indent))
    plot(summary, Path(out + ".png"))
    table(summary)
    print(f"saved {out}.json and {out}.png")
