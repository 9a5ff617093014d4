"""Prometheus exposition for services that have no HTTP server of their own.

Two additions to prometheus_client's plain server: labels every sample of a process carries
(a worker's ``accelerator`` and ``vendor``, so dashboards can group any worker series, vLLM's
own ``vllm:`` ones included, by hardware), and extra read-only routes next to ``/metrics``
(the scheduler serves Prometheus' HTTP service discovery there, see ``service_discovery``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from wsgiref.simple_server import WSGIRequestHandler, make_server

import prometheus_client
from prometheus_client.exposition import ThreadingWSGIServer
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import REGISTRY, Collector, CollectorRegistry

# A route's answer: (body, content type). Called on the server's thread at each request.
Route = Callable[[], tuple[bytes, str]]


class ConstantLabels(Collector):
    """Every sample of ``source`` with ``labels`` added (a label a sample already has is kept)."""

    def __init__(self, source: Collector, labels: Mapping[str, str]) -> None:
        self.source = source
        self.labels = dict(labels)

    def collect(self) -> Iterable[Metric]:
        for family in self.source.collect():
            out = Metric(family.name, family.documentation, family.type, family.unit)
            for s in family.samples:
                out.samples.append(s._replace(labels={**self.labels, **s.labels}))
            yield out


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        """One line per scrape would drown the service's log."""


def _app(registry: Collector, routes: Mapping[str, Route]):
    metrics_app = prometheus_client.make_wsgi_app(registry)

    def app(environ, start_response):
        route = routes.get(environ.get("PATH_INFO", ""))
        if route is None:
            return metrics_app(environ, start_response)
        if environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
            start_response("405 Method Not Allowed", [("Allow", "GET, HEAD")])
            return [b""]
        body, content_type = route()
        start_response("200 OK", [("Content-Type", content_type), ("Content-Length", str(len(body)))])
        return [body]

    return app


def start_metrics_server(
    port: int = 0,
    host: str = "127.0.0.1",
    labels: Mapping[str, str] | None = None,
    routes: Mapping[str, Route] | None = None,
) -> int:
    """Serve /metrics (and ``routes``) on ``host:port`` in a background thread; return the bound port.

    ``labels`` are added to every sample this process exports.
    """
    registry: Collector = REGISTRY
    if labels:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(ConstantLabels(REGISTRY, labels))
    server = make_server(host, port, _app(registry, routes or {}), ThreadingWSGIServer, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server.server_address[1]


# Buckets for request latencies in seconds: vLLM's ladder for time to first token
# (vllm:time_to_first_token_seconds, 1 ms to 160 s), with finer steps below 10 ms, where a
# router's own overhead and an H100's decode step (inter-token latency) fall; vLLM's
# ITL ladder starts at 10 ms and would put every such step in one bucket.
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
