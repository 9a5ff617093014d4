"""`tessera up` stops everything on SIGTERM, leaves nothing behind when killed outright, and says why
a worker that dies at start died."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import psutil

from tessera.runtime.net import free_port
from tests.support.harness import RUN_ID, wait_for

UP_RUN = RUN_ID + "-up-lifecycle"
STOP_TIMEOUT_S = 20  # --stop-timeout: up must be gone within it (+ etcd's 10 s)


def _start_up(tmp_path, *extra: str) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tessera.cli",
            "up",
            "tiny",  # MODEL, positional as with `vllm serve`
            "--engine",
            "sim",
            "--port",
            str(free_port()),
            "--grpc-port",
            str(free_port()),
            "--log-dir",
            str(tmp_path),
            "--stop-timeout",
            str(STOP_TIMEOUT_S),
            *extra,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "TESSERA_TEST_RUN": UP_RUN},
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    return proc, lines


def _wait_serving(proc: subprocess.Popen, lines: list[str]) -> None:
    def serving() -> bool:
        if proc.poll() is not None:
            raise AssertionError("tessera up exited early:\n" + "".join(lines[-30:]))
        return any("Tessera is serving" in line for line in lines)

    wait_for(serving, 120, interval=0.5, what="tessera up to serve")


def _tree(proc: subprocess.Popen) -> dict[str, list[psutil.Process]]:
    """The processes under `up`, by what they are."""
    out: dict[str, list[psutil.Process]] = {}
    for p in psutil.Process(proc.pid).children(recursive=True):
        cmd = " ".join(p.cmdline())
        kind = next((k for k in ("scheduler", "router", "autoscaler", "worker") if f"tessera.cli {k}" in cmd), None)
        kind = kind or ("etcd" if "etcd" in p.name() else "other")
        out.setdefault(kind, []).append(p)
    return out


def _alive(procs: list[psutil.Process]) -> list[str]:
    out = []
    for p in procs:
        try:
            if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                out.append(f"{p.pid} {' '.join(p.cmdline()[:5])}")
        except psutil.NoSuchProcess:
            continue
    return out


def _kill_all(procs: list[psutil.Process]) -> None:
    for p in procs:
        try:
            p.kill()
        except psutil.Error:
            pass


def test_sigterm_stops_every_child_in_order_within_the_grace_period(tmp_path):
    proc, lines = _start_up(tmp_path)
    procs: list[psutil.Process] = []
    try:
        _wait_serving(proc, lines)
        tree = _tree(proc)
        assert {"etcd", "scheduler", "router", "autoscaler", "worker"} <= set(tree), tree
        procs = [p for ps in tree.values() for p in ps]
        t0 = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT_S + 15) == 0
        took = time.monotonic() - t0
        assert _alive(procs) == []
        out = "".join(lines)
        assert "SIGTERM: stopping everything" in out and "stopped" in out

        def at(text: str) -> int:
            return next(i for i, line in enumerate(lines) if text in line)

        # in order: the router stops taking requests, then the autoscaler stops its workers, then the rest
        assert at("shutting down: finishing requests in flight") < at("stopping the workers this autoscaler launched")
        assert at("stopping the workers this autoscaler launched") < at("tessera.up: stopped")
        assert took < STOP_TIMEOUT_S + 10, f"took {took:.1f}s"
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_all(procs)


def test_sigkill_of_up_leaves_no_child_behind(tmp_path):
    proc, lines = _start_up(tmp_path)
    procs: list[psutil.Process] = []
    try:
        _wait_serving(proc, lines)
        tree = _tree(proc)
        assert {"etcd", "scheduler", "router", "autoscaler", "worker"} <= set(tree), tree
        procs = [p for ps in tree.values() for p in ps]
        proc.kill()  # up alone: its children are in process groups of their own
        proc.wait(10)
        left = wait_for(lambda: not _alive(procs) or None, 12, interval=0.5, what="every child of up to end")
        assert left
    except TimeoutError as exc:
        raise AssertionError(f"{exc}: still running {_alive(procs)}") from None
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        _kill_all(procs)


def test_a_worker_that_dies_at_start_has_its_error_printed(tmp_path):
    # block_size is a real engine argument (so the preflight lets it through) with a value the engine refuses
    proc, lines = _start_up(tmp_path, "--engine-arg", "block_size=notanumber")
    t0 = time.monotonic()
    try:
        code = proc.wait(120)
        out = "".join(lines)
        assert code == 1, out[-3000:]
        assert "exited before serving" in out
        assert "invalid literal for int() with base 10: 'notanumber'" in out  # the worker's own error, from its log
        assert "giving up" in out
        assert time.monotonic() - t0 < 120
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def test_workers_outlive_a_killed_autoscaler_which_up_restarts(tmp_path):
    """Workers end with `up`, not with the autoscaler: the restarted one adopts them."""
    proc, lines = _start_up(tmp_path)
    procs: list[psutil.Process] = []
    try:
        _wait_serving(proc, lines)
        tree = _tree(proc)
        procs = [p for ps in tree.values() for p in ps]
        (autoscaler,), workers = tree["autoscaler"], tree["worker"]
        autoscaler.kill()
        wait_for(lambda: any("autoscaler exited with code -9; restarting it" in line for line in lines), 10)
        time.sleep(8)  # past the 5 s an orphaned process would get before its group is killed
        assert len(_alive(workers)) == len(workers)
        # still under up (its subreaper), adopted by the new autoscaler, none launched
        assert {p.pid for p in _tree(proc)["worker"]} == {p.pid for p in workers}
        procs = [p for ps in _tree(proc).values() for p in ps]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(STOP_TIMEOUT_S + 15) == 0
        assert _alive(procs) == []  # the adopted workers too
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(STOP_TIMEOUT_S + 15)
        _kill_all(procs + [p for ps in _tree_or_empty(proc).values() for p in ps])


def _tree_or_empty(proc: subprocess.Popen) -> dict[str, list[psutil.Process]]:
    try:
        return _tree(proc)
    except psutil.Error:
        return {}
