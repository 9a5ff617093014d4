"""The private etcd survives losing its freshly picked port to another process, and a restart
that cannot have its old port back says why in one line."""

from __future__ import annotations

import socket
from urllib.request import urlopen

import pytest

from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port


def _hold(port: int) -> socket.socket:
    """Bind and listen on ``port`` the way a racing process would."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as etcd's own listener: TIME_WAIT is no clash
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_a_first_start_moves_to_fresh_ports_when_its_port_was_taken(tmp_path):
    etcd = LocalEtcd(client_port=free_port(), data_dir=str(tmp_path / "data"), log_path=str(tmp_path / "etcd.log"))
    taken = etcd.client_port
    with _hold(taken):
        etcd.start()
        try:
            assert etcd.client_port != taken
            with urlopen(f"http://{etcd.endpoint}/health", timeout=5) as resp:
                assert b'"health":"true"' in resp.read()
        finally:
            etcd.stop(wipe=True)


def test_a_restart_keeps_its_port_and_names_the_clash(tmp_path):
    etcd = LocalEtcd(
        client_port=free_port(), data_dir=str(tmp_path / "data"), log_path=str(tmp_path / "etcd.log")
    ).start()
    port = etcd.client_port
    etcd.kill()
    try:
        with _hold(port), pytest.raises(RuntimeError, match="address already in use"):
            etcd.start()
        assert etcd.client_port == port
    finally:
        etcd.stop(wipe=True)
