"""Kubernetes' preStop hook: `python -m services.autoscaler.drain ADDRESS` exits 0 once the worker has drained."""

from __future__ import annotations

import asyncio
import sys


async def test_the_prestop_command_exits_0_once_drained(worker):
    address, tracker = worker
    tracker.started("a", 10)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "services.autoscaler.drain", address, "--timeout", "20"
    )
    for _ in range(200):  # the command needs a moment to start and call Drain
        if tracker.draining:
            break
        await asyncio.sleep(0.05)
    assert tracker.draining and proc.returncode is None
    tracker.finished("a")
    assert await asyncio.wait_for(proc.wait(), 10) == 0
