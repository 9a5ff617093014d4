"""free_port: ports for servers the tests and `tessera up` start a moment later."""

from __future__ import annotations

import random
import socket

from tessera.runtime.net import _ephemeral_start, free_port


def test_ports_are_bindable_distinct_and_below_the_range_outgoing_connections_take():
    """A port from the kernel's ephemeral range can be taken as the source port of any outgoing
    connection before the server binds it; two calls must never hand out the same port."""
    start = _ephemeral_start()
    ports = [free_port() for _ in range(1000)]
    assert len(set(ports)) == len(ports)
    assert all(10000 <= p < start for p in ports)
    for port in ports[:20]:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", port))


def test_a_port_another_process_holds_is_not_handed_out():
    """Listen on 1,000 ports below the range (bound directly, as another program would): none of
    500 ports handed out is one of them (a random pick would hit about 20)."""
    start = _ephemeral_start()
    rng = random.Random(7)
    held = []
    try:
        while len(held) < 1000:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            try:
                s.bind(("127.0.0.1", rng.randrange(10000, start)))
            except OSError:
                s.close()
                continue
            s.listen()
            held.append(s)
        busy = {s.getsockname()[1] for s in held}
        assert not busy & {free_port() for _ in range(500)}
    finally:
        for s in held:
            s.close()
