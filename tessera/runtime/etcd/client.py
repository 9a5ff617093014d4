"""Connections to etcd that survive restarts and outages.

aetcd keeps one gRPC channel per client. After etcd restarts, a channel can
sit in a failed state, so every long-running loop here drops its client on an
error and asks :class:`EtcdConnector` for a fresh one, rotating through the
configured endpoints.
"""

from __future__ import annotations

import asyncio
import logging

import aetcd
from prometheus_client import Gauge

from tessera.runtime.etcd import tls as etcd_tls

log = logging.getLogger("tessera.runtime.etcd")

DEFAULT_ENDPOINT = "127.0.0.1:2379"
CALL_TIMEOUT_S = 3.0


def parse_endpoints(spec: str) -> list[tuple[str, int]]:
    """``"host:port,host:port"`` (an ``http://`` scheme is accepted) to a list of pairs."""
    endpoints = []
    for item in spec.split(","):
        item = item.strip()
        if not item:
            continue
        for scheme in ("http://", "https://"):
            if item.startswith(scheme):
                item = item[len(scheme) :]
        host, _, port = item.rstrip("/").rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"bad etcd endpoint {item!r}: expected host:port")
        endpoints.append((host, int(port)))
    if not endpoints:
        raise ValueError("no etcd endpoint given")
    return endpoints


class EtcdConnector:
    """Hands out aetcd clients, a new one (next endpoint) after each failure."""

    def __init__(self, endpoints: str = DEFAULT_ENDPOINT) -> None:
        self.spec = endpoints
        self._endpoints = parse_endpoints(endpoints)
        self._next = 0

    async def connect(self) -> aetcd.Client:
        host, port = self._endpoints[self._next % len(self._endpoints)]
        self._next += 1
        config = etcd_tls.active()
        if config is None:
            client = aetcd.Client(host=host, port=port, timeout=CALL_TIMEOUT_S)
        else:  # read per connection: a renewed certificate is picked up at the next reconnect
            client = etcd_tls.TLSClient(config.credentials(), host=host, port=port, timeout=CALL_TIMEOUT_S)
        await client.connect()
        return client

    @staticmethod
    async def discard(client: aetcd.Client | None) -> None:
        """Close a client that failed, ignoring errors from its dead channel."""
        if client is None:
            return
        try:
            await asyncio.wait_for(client.close(), 2.0)
        except Exception:  # noqa: BLE001 - the channel is already broken
            pass


class Backoff:
    """Capped exponential backoff between reconnect attempts."""

    def __init__(self, first: float = 0.2, cap: float = 2.0) -> None:
        self.first, self.cap, self.delay = first, cap, first

    async def sleep(self) -> None:
        await asyncio.sleep(self.delay)
        self.delay = min(self.cap, self.delay * 2)

    def reset(self) -> None:
        self.delay = self.first


# Loops of this process (watches, registrations, elections) that cannot reach etcd right now:
# the alert "etcd lost" (deploy/observability/alerts.yml) fires on it, from every service at once.
UNREACHABLE = Gauge(
    "tessera_etcd_unreachable",
    "This process's etcd loops (watch, registration, election) that cannot reach etcd now",
    ["loop"],
)


class OutageLog:
    """One log line when etcd goes away and one when it is back, not one per retry; and the gauge."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.down = False
        self._gauge = UNREACHABLE.labels(what.split(" ", 1)[0])  # the loop's kind: few series, whatever the keys

    def failed(self, exc: BaseException) -> None:
        if not self.down:
            log.warning(
                "%s: etcd unreachable (%s: %s); keeping last state and retrying",
                self.what,
                type(exc).__name__,
                exc or "no detail",
            )
            self.down = True
            self._gauge.inc()

    def ok(self) -> None:
        if self.down:
            log.info("%s: etcd reachable again", self.what)
            self.down = False
            self._gauge.dec()
