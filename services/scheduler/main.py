"""``tessera scheduler``: the live cluster view and placement decisions over gRPC."""

from __future__ import annotations

import argparse
import logging
import os
import socket
import time
import uuid

from prometheus_client import REGISTRY

from services.scheduler.metrics import ViewCollector
from services.scheduler.profile_store import ProfileStore
from services.scheduler.servicer import SchedulerServicer
from services.scheduler.view import ClusterView
from services.scheduler.worker_speed import speed_of
from tessera.placement.pipeline import PROFILES_DIR, ProfileError, load_profile
from tessera.placement.prefix_index import CANONICAL_BLOCK_TOKENS, PrefixIndex
from tessera.runtime.etcd import keys
from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.etcd.acks import Acknowledger
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT, EtcdConnector
from tessera.runtime.etcd.records import ServiceRecord, identity_from_json
from tessera.runtime.etcd.registration import LeasedKey
from tessera.runtime.etcd.watch import PrefixMirror
from tessera.runtime.rpc import tls
from tessera.runtime.rpc.server import ServiceBinding, start_server
from tessera.runtime.service import run_service, stop_event
from tessera.runtime.telemetry import service_discovery
from tessera.runtime.telemetry.metrics import Route, start_metrics_server
from tessera.runtime.telemetry.tracing import shutdown_tracing
from tessera.v1 import scheduler_pb2_grpc

log = logging.getLogger("tessera.scheduler")

DEFAULT_PORT = 50052


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--etcd",
        default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT),
        help="etcd endpoints host:port[,host:port] (env TESSERA_ETCD)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind and advertise")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help="gRPC port (0: any free port)")
    p.add_argument(
        "--metrics-port",
        type=int,
        default=0,
        help="Prometheus /metrics and service discovery (/sd) port (0: any free port, registered in etcd)",
    )
    p.add_argument("--profile", default="tessera", help="default placement profile: a name or a YAML file")
    p.add_argument("--scheduler-id", default=None, help="this scheduler's id in etcd (default: generated)")
    p.add_argument("--lease-ttl", type=int, default=5, help="seconds its etcd registration outlives it if it dies")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    tls.add_arguments(p)
    etcd_tls.add_arguments(p)


async def run(args: argparse.Namespace) -> int:
    try:
        default = load_profile(args.profile)
        profiles = {default.name: default}
        for path in PROFILES_DIR.glob("*.yaml"):
            pipeline = load_profile(str(path))
            profiles.setdefault(pipeline.name, pipeline)
    except ProfileError as exc:
        log.error("%s", exc)
        return 2
    # With TLS only a worker certificate can open a report stream: require one as well as etcd's word.
    view = ClusterView(speed_of=speed_of, require_stream=tls.active() is not None)
    index = PrefixIndex()

    def joined(identity) -> None:
        if identity.kv_block_size and identity.kv_block_size % CANONICAL_BLOCK_TOKENS == 0:
            index.add_worker(identity.id, identity.kv_block_size)

    def left(worker_id: str) -> None:
        index.remove_worker(worker_id)
        for pipeline in profiles.values():
            pipeline.forget_worker(worker_id)

    view.on_joined.append(joined)
    view.on_left.append(left)
    REGISTRY.register(ViewCollector(view, index))
    connector = EtcdConnector(args.etcd)

    def on_worker(key: str, value: bytes | None) -> None:
        worker_id = key.rsplit("/", 1)[-1]
        if value is None:
            view.unregistered(worker_id)
            log.info("worker %s left", worker_id)
        else:
            view.registered(identity_from_json(value))

    mirror = PrefixMirror(connector, keys.WORKERS, on_change=on_worker)
    mirror.start()
    services = PrefixMirror(connector, keys.SERVICES)  # only for Prometheus' service discovery
    services.start()

    servicer = SchedulerServicer(view, profiles, default.name, index)
    sid = args.scheduler_id or f"scheduler-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    acks = Acknowledger(connector, "scheduler", sid, ttl=args.lease_ttl)
    acks.start()
    store = ProfileStore(connector, profiles, PROFILES_DIR, acks=acks)
    await store.seed_builtins()
    store.start()
    server = await start_server(
        [ServiceBinding(scheduler_pb2_grpc.add_SchedulerServicer_to_server, servicer, "tessera.v1.Scheduler")],
        host=args.host,
        port=args.port,
    )
    metrics_port = start_metrics_server(args.metrics_port, args.host, routes=sd_routes(mirror, services))
    record = ServiceRecord(
        id=sid,
        kind="scheduler",
        address=f"{args.host}:{server.port}",
        metrics_address=f"{args.host}:{metrics_port}",
        started_at_unix_ms=int(time.time() * 1000),
    )
    registration = LeasedKey(connector, keys.service("scheduler", sid), record.to_json(), ttl=args.lease_ttl)
    registration.start()
    log.info(
        "scheduler %s serving on %s with profile %s (metrics :%d)", sid, record.address, default.name, metrics_port
    )

    stop = stop_event()
    await stop.wait()
    await registration.close()
    await store.close()
    await acks.close()
    await mirror.close()
    await services.close()
    await server.stop(1.0)
    shutdown_tracing()
    return 0


def sd_routes(workers: PrefixMirror, services: PrefixMirror) -> dict[str, Route]:
    """Prometheus HTTP service discovery on the metrics port: ``/sd`` (every process) and ``/sd/<kind>``.

    The scheduler serves it because it already mirrors the worker registry, runs in every
    deployment, and its metrics port is internal (like the rest of /metrics); the router's
    public port would list the cluster's internal addresses to anyone.
    """

    def route(kind: str | None) -> Route:
        # dict.copy() is atomic under the GIL: the mirrors change on the event loop, this runs on the HTTP thread
        return lambda: (
            service_discovery.document(workers.items.copy().values(), services.items.copy().values(), kind),
            service_discovery.CONTENT_TYPE,
        )

    return {"/sd": route(None), **{f"/sd/{kind}": route(kind) for kind in service_discovery.KINDS}}


def run_main(args: argparse.Namespace) -> int:
    return run_service("scheduler", args, run)
