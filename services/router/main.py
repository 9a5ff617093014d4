"""``tessera router``: the front door. OpenAI HTTP on :8000 and the Router gRPC API on :50051.

Imports neither torch nor vLLM, so it starts in a couple of seconds.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import time
import uuid

from services.router.admission import AdmissionControl
from services.router.auth import RequestGate
from services.router.flow import DEFAULT_SILENCE_S, RequestFlow, WorkerChannels
from services.router.grpc_api import RouterServicer
from services.router.http_api import build_app
from services.router.limits import DEFAULT_MAX_BODY_BYTES, Limits
from services.router.model_catalog import ModelCatalog
from services.router.rate_limits import RateLimiter
from services.router.scheduler_client import SchedulerClient
from services.router.state import RouterState
from services.router.tenants import TenantDirectory
from tessera.runtime.etcd import keys
from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT, EtcdConnector
from tessera.runtime.etcd.records import ServiceRecord, identity_from_json
from tessera.runtime.etcd.registration import LeasedKey
from tessera.runtime.etcd.watch import PrefixMirror
from tessera.runtime.http_server import start_http
from tessera.runtime.rpc import tls
from tessera.runtime.rpc.server import ServiceBinding, start_server
from tessera.runtime.service import run_service, stop_event
from tessera.runtime.telemetry.tracing import shutdown_tracing
from tessera.v1 import router_pb2_grpc

log = logging.getLogger("tessera.router")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--etcd",
        default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT),
        help="etcd endpoints host:port[,host:port] (env TESSERA_ETCD)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address for both APIs (0.0.0.0 to listen everywhere)")
    p.add_argument("--port", type=int, default=8000, help="OpenAI-compatible HTTP port")
    p.add_argument("--grpc-port", type=int, default=50051, help="Router gRPC port")
    p.add_argument("--profile", default="", help="placement profile to ask for (default: the scheduler's)")
    p.add_argument(
        "--tokenizer",
        action="append",
        default=[],
        metavar="MODEL=PATH",
        help="where to load a model's tokenizer when the worker's folder is not on this machine",
    )
    p.add_argument(
        "--ttft-slo-ms",
        type=float,
        default=0.0,
        help="time-to-first-token objective for admission control: when the model is saturated, a "
        "request that would wait past it is refused with 429 (0: queue without a deadline); "
        "clients may send their own in the x-slo-ttft-ms header",
    )
    p.add_argument(
        "--max-queue",
        type=int,
        default=1024,
        help="requests that may wait per saturated model (and, apart, per model waiting for its first worker)",
    )
    p.add_argument(
        "--scale-from-zero-wait-s",
        type=float,
        default=300.0,
        help="how long a request for a model whose workers are all gone waits for one to start "
        "(the autoscaler starts one when it sees the request held); 0: answer 503 at once",
    )
    p.add_argument(
        "--max-request-bytes",
        type=int,
        default=DEFAULT_MAX_BODY_BYTES,
        help="largest request body accepted; larger ones get 413 before they are read",
    )
    p.add_argument(
        "--max-connections",
        type=int,
        default=4096,
        help="open HTTP connections and requests at once; past it new ones get 503 (uvicorn's limit_concurrency)",
    )
    p.add_argument(
        "--stream-silence-s",
        type=float,
        default=DEFAULT_SILENCE_S,
        help="a worker stream with no token and no heartbeat for this long has failed: the request resumes "
        "on another worker (workers send a heartbeat every second while their engine is alive)",
    )
    p.add_argument(
        "--api-key",
        action="append",
        default=[],
        metavar="KEY",
        help="require Authorization: Bearer KEY on /v1 (repeatable; also TESSERA_API_KEY); such a key runs as "
        "the unlimited tenant 'default'. Tenants stored with `tessera tenant put` need keys too. With neither, "
        "the router is open",
    )
    p.add_argument(
        "--require-api-key",
        action="store_true",
        help="never serve /v1 without a key, even while no --api-key is given and no tenant exists (else the "
        "router is open then: deleting the last tenant, or an etcd that lost its data, would open it)",
    )
    p.add_argument(
        "--metrics-api-key",
        default=os.environ.get("TESSERA_METRICS_API_KEY", ""),
        metavar="KEY",
        help="require Authorization: Bearer KEY on /metrics (default: /metrics is open; /health always is)",
    )
    p.add_argument("--router-id", default=None, help="this router's id in etcd (default: generated)")
    p.add_argument("--lease-ttl", type=int, default=5, help="seconds its etcd registration outlives it if it dies")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    tls.add_arguments(p)
    etcd_tls.add_arguments(p)


async def run(args: argparse.Namespace) -> int:
    tokenizer_paths = dict(item.split("=", 1) for item in args.tokenizer)
    connector = EtcdConnector(args.etcd)
    catalog = ModelCatalog(tokenizer_paths)
    channels = WorkerChannels()

    async def on_worker(key: str, value: bytes | None) -> None:
        worker_id = key.rsplit("/", 1)[-1]
        if value is None:
            address = catalog.worker_left(worker_id)
            if address:
                await channels.forget(address)
        else:
            catalog.worker_registered(identity_from_json(value))

    workers = PrefixMirror(connector, keys.WORKERS, on_change=on_worker)
    workers.start()
    schedulers = SchedulerClient(connector)
    schedulers.start()
    admission = AdmissionControl(args.ttft_slo_ms / 1000.0, args.max_queue)
    admission.start()
    tenants = TenantDirectory(connector)
    tenants.start()
    api_keys = args.api_key or [k for k in [os.environ.get("TESSERA_API_KEY", "")] if k]
    gate = RequestGate(
        api_keys,
        tenants,
        RateLimiter(connector),
        metrics_api_key=args.metrics_api_key,
        require_key=args.require_api_key,
    )
    state = RouterState(
        catalog,
        RequestFlow(
            schedulers,
            channels,
            args.profile,
            admission,
            hold_s=args.scale_from_zero_wait_s,
            silence_s=args.stream_silence_s,
            max_held=args.max_queue,
        ),
        schedulers,
        time.time(),
        gate=gate,
    )

    grpc_server = await start_server(
        [ServiceBinding(router_pb2_grpc.add_RouterServicer_to_server, RouterServicer(state), "tessera.v1.Router")],
        host=args.host,
        port=args.grpc_port,
        public=True,
    )
    try:
        http, http_task, _ = await start_http(
            build_app(state, Limits(max_body_bytes=args.max_request_bytes)),
            args.host,
            args.port,
            http="httptools",
            timeout_graceful_shutdown=30,
            limit_concurrency=args.max_connections,
            timeout_keep_alive=15,  # an idle client holds a connection this long at most
        )
    except OSError as exc:
        log.error("HTTP server could not start on %s:%d: %s", args.host, args.port, exc)
        await grpc_server.stop(0)
        return 1

    rid = args.router_id or f"router-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    record = ServiceRecord(
        id=rid,
        kind="router",
        address=f"{args.host}:{grpc_server.port}",
        http_address=f"{args.host}:{args.port}",
        metrics_address=f"{args.host}:{args.port}",
        started_at_unix_ms=int(time.time() * 1000),
    )
    registration = LeasedKey(connector, keys.service("router", rid), record.to_json(), ttl=args.lease_ttl)
    registration.start()
    log.info("router %s: OpenAI API on http://%s:%d/v1, gRPC on %s", rid, args.host, args.port, record.address)
    if api_keys:
        log.info("API keys required: %d --api-key key(s), and the tenants in etcd", len(api_keys))

    stop = stop_event()
    await asyncio.wait({asyncio.ensure_future(stop.wait()), http_task}, return_when=asyncio.FIRST_COMPLETED)
    log.info("shutting down: finishing requests in flight")
    await registration.close()
    http.should_exit = True
    await asyncio.gather(http_task, grpc_server.stop(10.0), return_exceptions=True)
    await admission.close()
    await gate.close()
    await workers.close()
    await schedulers.close()
    await channels.close()
    state.tokenizing.close()
    shutdown_tracing()
    return 0


def run_main(args: argparse.Namespace) -> int:
    return run_service("router", args, run, internal=False)
