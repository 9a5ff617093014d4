"""A launched process does not outlive the process that launched it.

``tessera up`` starts etcd, the scheduler, the autoscaler and the router, and the autoscaler
starts workers; each runs in its own process group (so a Ctrl-C reaches only its launcher,
which stops them in order). A launcher killed outright (SIGKILL, the OOM killer) cannot stop
them, so each child arranges its own end:

- the launcher names itself in ``TESSERA_PARENT_PID`` in the child's environment
  (:func:`child_env`);
- the child, first thing (:func:`die_with_parent`), asks the kernel for SIGTERM when that
  parent dies (Linux ``prctl(PR_SET_PDEATHSIG)``), so it starts its own orderly stop, and
  runs a watchdog thread that kills its whole process group (itself and, for a worker, its
  engine processes) :data:`ORPHAN_GRACE_S` after the parent is gone, in case that stop hangs
  (etcd gone with it, say). The watchdog also covers systems without ``prctl``.

A program that is not Python (etcd) gets the parent-death signal from :func:`pdeathsig_preexec`,
run between fork and exec: only safe in a launcher with no other threads at that point (which
``tessera up`` is when it starts etcd).
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

log = logging.getLogger("tessera.lifetime")

PARENT_ENV = "TESSERA_PARENT_PID"
ORPHAN_GRACE_S = 5.0  # from the parent's death to SIGKILL of what is left of the child's group
_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def child_env(env: dict[str, str] | None = None) -> dict[str, str]:
    """``env`` (default: ours) plus this process as the parent a child must not outlive."""
    return {**(os.environ if env is None else env), PARENT_ENV: str(os.getpid())}


def _set_pdeathsig(sig: int) -> bool:
    """Ask the kernel for ``sig`` when our parent (thread) exits; False where there is no prctl."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def pdeathsig_preexec(sig: int = signal.SIGKILL) -> Callable[[], None]:
    """A ``preexec_fn`` giving a non-Python child ``sig`` when we die (see the module docstring)."""
    parent = os.getpid()

    def preexec() -> None:
        _set_pdeathsig(sig)
        if os.getppid() != parent:  # we died between fork and prctl: the signal will never come
            os._exit(1)

    return preexec


def die_with_parent(grace_s: float = ORPHAN_GRACE_S) -> bool:
    """If a launcher named itself in ``TESSERA_PARENT_PID``, end with it; True if armed.

    The variable is taken out of our environment: our own children get it only from us
    (:func:`child_env`), naming us.
    """
    value = os.environ.pop(PARENT_ENV, "")
    if not value.isdigit():
        return False
    parent = int(value)
    _set_pdeathsig(signal.SIGTERM)
    if os.getppid() != parent:  # the launcher is already gone
        _end_group()
    threading.Thread(target=_watch, args=(parent, grace_s), name="die-with-parent", daemon=True).start()
    return True


def _watch(parent: int, grace_s: float) -> None:
    while os.getppid() == parent:
        time.sleep(0.5)
    log.warning("the process that started this one (pid %d) is gone: stopping", parent)
    os.kill(os.getpid(), signal.SIGTERM)  # the orderly stop, where prctl did not already ask for it
    time.sleep(grace_s)
    _end_group()


def _end_group() -> None:
    """SIGKILL our process group if we lead it (our engine processes go with us), else ourselves."""
    if os.getpgrp() == os.getpid():
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)
