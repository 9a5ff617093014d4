"""`tessera up` brings a whole cluster up, serves, and stops everything cleanly on Ctrl-C."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading

import httpx
import psutil

from tessera.runtime.net import free_port
from tests.support.harness import RUN_ID, wait_for

UP_RUN = RUN_ID + "-up"  # its own marker: only this cluster's processes are checked for leftovers


def test_up_serves_and_ctrl_c_stops_everything(tmp_path):
    port, grpc_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tessera.cli",
            "up",
            "--model",
            "tiny",
            "--workers",
            "1",
            "--port",
            str(port),
            "--grpc-port",
            str(grpc_port),
            "--log-dir",
            str(tmp_path),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "TESSERA_TEST_RUN": UP_RUN},
        start_new_session=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True).start()
    try:

        def serving() -> bool:
            if proc.poll() is not None:
                raise AssertionError("tessera up exited early:\n" + "".join(lines[-30:]))
            return any("Tessera is serving" in line for line in lines)

        wait_for(serving, 300, interval=1, what="tessera up to announce it is serving")
        r = httpx.post(
            f"http://127.0.0.1:{port}/v1/chat/completions",
            timeout=60,
            json={"model": "tiny-llama", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
        )
        assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 4  # etcd, scheduler, autoscaler, router (+ the worker under the autoscaler)

        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(120) == 0
        leftovers = []
        for p in psutil.process_iter():
            try:
                if (
                    p.pid != os.getpid()
                    and p.environ().get("TESSERA_TEST_RUN") == UP_RUN
                    and p.status() != psutil.STATUS_ZOMBIE
                ):
                    if any(
                        a in " ".join(p.cmdline()) for a in ("tessera.cli", "etcd", "VLLM")
                    ) and "pytest" not in " ".join(p.cmdline()):
                        leftovers.append((p.pid, p.cmdline()[:4]))
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
        assert leftovers == []
        assert "stopped" in "".join(lines)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
