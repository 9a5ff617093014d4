"""``tessera up``'s view of the process tree under it: workers that die at start, leftovers at stop.

The autoscaler launches the workers, so ``up`` sees them only as its grandchildren (psutil). A
worker that exits before the cluster serves has failed to start: ``up`` prints the end of its log,
where the reason is, rather than leave the user watching "waiting for workers".
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import psutil

log = logging.getLogger("tessera.up")

LOG_TAIL_LINES = 25


def workers_of(parent_pid: int) -> dict[int, tuple[psutil.Process, str]]:
    """pid -> (process, worker id) of the ``tessera worker`` processes ``parent_pid`` started."""
    out: dict[int, tuple[psutil.Process, str]] = {}
    try:
        children = psutil.Process(parent_pid).children()
    except psutil.Error:
        return out
    for child in children:
        try:
            cmd = child.cmdline()
        except psutil.Error:
            continue
        if "worker" in cmd and "--worker-id" in cmd:
            i = cmd.index("--worker-id")
            if i + 1 < len(cmd):
                out[child.pid] = (child, cmd[i + 1])
    return out


def _running(p: psutil.Process) -> bool:
    try:
        return p.is_running() and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


class WorkerStarts:
    """Notices the workers that end (die or are given up on) while the cluster is not serving yet.

    A worker counts once the autoscaler started it, and is followed by pid from then on: one that a
    crashed autoscaler left behind (adopted by its successor) has not ended.
    """

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self._seen: dict[int, tuple[psutil.Process, str]] = {}
        self.failures: list[str] = []

    def poll(self, autoscaler_pid: int | None) -> list[str]:
        """The ids of the workers that ended since the last poll."""
        if autoscaler_pid:
            self._seen.update(workers_of(autoscaler_pid))
        gone = [pid for pid, (p, _) in self._seen.items() if not _running(p)]
        ids = [self._seen.pop(pid)[1] for pid in gone]
        self.failures += ids
        return ids

    def log_path(self, worker_id: str) -> Path:
        return self.log_dir / f"{worker_id}.log"


def log_tail(path: Path, lines: int = LOG_TAIL_LINES) -> str:
    """The last ``lines`` lines of a log file ("" if it cannot be read)."""
    try:
        with open(path, errors="replace") as f:
            return "".join(deque(f, maxlen=lines))
    except OSError:
        return ""


def reap_orphans(own: set[int]) -> None:
    """Reap the exited processes that became ours as a subreaper; ``own``: the pids our Popen objects
    wait for themselves (reaping those here would lose their exit codes)."""
    import os

    try:
        children = psutil.Process().children()
    except psutil.Error:
        return
    for child in children:
        try:
            if child.pid not in own and child.status() == psutil.STATUS_ZOMBIE:
                os.waitpid(child.pid, os.WNOHANG)
        except (psutil.Error, ChildProcessError):
            continue


def descendants() -> set[psutil.Process]:
    """Every process under this one (workers and their engines included)."""
    try:
        return set(psutil.Process().children(recursive=True))
    except psutil.Error:
        return set()


def kill_leftovers(procs: set[psutil.Process], wait_s: float = 5.0) -> int:
    """SIGKILL those of ``procs`` still running (pid reuse is checked); how many there were."""
    alive = [p for p in procs if _running(p)]
    for p in alive:
        try:
            log.warning("pid %d (%s) outlived its service; killing it", p.pid, " ".join(p.cmdline()[:4]))
            p.kill()
        except psutil.Error:
            continue
    psutil.wait_procs(alive, timeout=wait_s)
    return len(alive)
