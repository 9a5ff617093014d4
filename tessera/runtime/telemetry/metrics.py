"""Prometheus exposition for services that have no HTTP server of their own."""

from __future__ import annotations

import prometheus_client


def start_metrics_server(port: int = 0, host: str = "127.0.0.1") -> int:
    """Serve /metrics on ``host:port`` in a background thread; return the bound port."""
    server, _thread = prometheus_client.start_http_server(port, addr=host)
    return server.server_address[1]


# Buckets for request latencies in seconds, from sub-millisecond router
# overheads to minute-long generations (vLLM uses similar ranges).
LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.02,
    0.04,
    0.06,
    0.08,
    0.1,
    0.25,
    0.5,
    0.75,
    1.0,
    2.5,
    5.0,
    7.5,
    10.0,
    20.0,
    40.0,
    80.0,
    160.0,
)
