"""Processes ``tessera up`` started, workers included, do not outlive it.

``tessera up`` starts etcd, the scheduler, the autoscaler and the router, and the autoscaler
starts workers; each runs in its own process group (so a Ctrl-C reaches only ``up``, which stops
them in order). An ``up`` killed outright (SIGKILL, the OOM killer) cannot stop them, so each
arranges its own end:

- ``up`` names itself in ``TESSERA_LAUNCHER_PID`` in its children's environment
  (:func:`child_env`); the autoscaler's workers inherit it;
- each ``tessera`` process, first thing (:func:`end_with_launcher`), asks the kernel for SIGTERM
  when ``up`` dies if ``up`` is its parent (Linux ``prctl(PR_SET_PDEATHSIG)``), and runs a
  watchdog thread that notices ``up`` gone (a worker's parent is the autoscaler, so only the
  watchdog serves it), sends itself SIGTERM (its orderly stop), and :data:`ORPHAN_GRACE_S` later
  kills its whole process group (a worker's engine processes included) in case that stop hangs
  (etcd went with ``up``, say).

A worker does not end with its autoscaler: a standby autoscaler that takes over adopts the
workers of the one that died (tests/integration/test_resilience.py), and ``up`` restarts a
crashed autoscaler the same way. etcd, not Python, gets the parent-death signal from
:func:`pdeathsig_preexec`, run between fork and exec: only safe in a launcher with no other
threads at that point (which ``up`` is when it starts etcd).
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import psutil

log = logging.getLogger("tessera.lifetime")

LAUNCHER_ENV = "TESSERA_LAUNCHER_PID"
ORPHAN_GRACE_S = 5.0  # from the launcher's death to SIGKILL of what is left of a process's group
POLL_S = 0.5
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PR_SET_CHILD_SUBREAPER = 36


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) naming this process as the launcher its children must not outlive."""
    return {**(os.environ if env is None else env), LAUNCHER_ENV: str(os.getpid())}


def _prctl(option: int, value: int) -> bool:
    """Linux prctl(2); False where there is none."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(option, value, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def _set_pdeathsig(sig: int) -> bool:
    """Ask the kernel for ``sig`` when our parent (thread) exits."""
    return _prctl(_PR_SET_PDEATHSIG, sig)


def become_subreaper() -> bool:
    """Orphans under us (a crashed autoscaler's workers) become our children, not init's: a launcher
    keeps seeing, and can stop, its whole tree. It must then reap them (see tessera.cli.supervision)."""
    return _prctl(_PR_SET_CHILD_SUBREAPER, 1)


def pdeathsig_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` giving a non-Python child ``sig`` when we die (see the module docstring)."""
    parent = os.getpid()

    def preexec() -> None:
        _set_pdeathsig(sig)
        if os.getppid() != parent:  # we died between fork and prctl: the signal will never come
            os._exit(1)

    return preexec


def end_with_launcher(grace_s: float = ORPHAN_GRACE_S) -> bool:
    """If ``TESSERA_LAUNCHER_PID`` names a launcher, end with it; True if armed."""
    value = os.environ.get(LAUNCHER_ENV, "")
    if not value.isdigit() or int(value) == os.getpid():
        return False
    import psutil  # only here: most tessera commands never get this far

    pid = int(value)
    try:
        launcher = psutil.Process(pid)
    except psutil.NoSuchProcess:
        _end_group()  # gone before we started
        return True
    if pid == os.getppid():
        _set_pdeathsig(signal.SIGTERM)  # at once, where the watchdog takes up to POLL_S
    threading.Thread(target=_watch, args=(launcher, grace_s), name="end-with-launcher", daemon=True).start()
    return True


def _alive(launcher: psutil.Process) -> bool:
    import psutil

    try:
        # is_running() also catches a reused pid; a zombie is a launcher that has ended
        return launcher.is_running() and launcher.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _watch(launcher: psutil.Process, grace_s: float) -> None:
    while _alive(launcher):
        time.sleep(POLL_S)
    log.warning("the tessera up that started this process (pid %d) is gone: stopping", launcher.pid)
    os.kill(os.getpid(), signal.SIGTERM)  # the orderly stop, where prctl did not already ask for it
    time.sleep(grace_s)
    _end_group()


def _end_group() -> None:
    """SIGKILL our process group if we lead it (our engine processes go with us), else ourselves."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
