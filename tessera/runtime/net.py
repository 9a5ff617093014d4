"""Small network helpers shared by the services: free ports and address parsing."""

from __future__ import annotations

import random
import socket
from pathlib import Path

_LOWEST = 10000  # below are the well-known and registered services' ports
_EPHEMERAL = Path("/proc/sys/net/ipv4/ip_local_port_range")
_given: set[int] = set()  # ports this process handed out: never twice


def _ephemeral_start() -> int:
    """The first port of the kernel's range for outgoing connections (Linux default 32768)."""
    try:
        return int(_EPHEMERAL.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free right now on ``host``, for a server started a moment later.

    Taken at random below the kernel's ephemeral range, and never one this process gave before:
    a port the OS picks (bind to 0) comes from that range, where any outgoing connection made
    between this call and the server's bind can take it as its source port, and two calls close
    together can get the same one back. Both lost a test run now and then (a child process's
    "address already in use"). Falls back to the OS's pick when no port below the range is free."""
    start = _ephemeral_start()
    if start - _LOWEST > 1000:
        for _ in range(100):
            port = random.randrange(_LOWEST, start)
            if port not in _given and port_is_free(port, host):
                _given.add(port)
                return port
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        port = int(s.getsockname()[1])
    _given.add(port)
    return port


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could bind `port` on `host` now (address reuse on, as servers set it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def split_host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    return host, int(port)
