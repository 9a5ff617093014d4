"""``tessera autoscaler``: hold the desired worker set and reconcile it, as leader only."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import socket
import tempfile
import time
import uuid
from collections import Counter

import grpc
from prometheus_client import REGISTRY

from services.autoscaler.actuator import Actuator, ScalingError
from services.autoscaler.controller import Controller
from services.autoscaler.desired import DesiredStateError, WorkerGroup, group_name_for, load_desired
from services.autoscaler.local_actuator import LocalActuator
from services.autoscaler.local_processes import LocalProcesses
from services.autoscaler.metrics import FleetCollector
from services.autoscaler.registered import RegisteredWorkers
from services.autoscaler.slo_autoscaling import SloAutoscaling
from tessera.runtime.etcd import keys
from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.etcd.acks import Acknowledger
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT, EtcdConnector
from tessera.runtime.etcd.election import LeaderElection
from tessera.runtime.etcd.records import ServiceRecord
from tessera.runtime.etcd.registration import LeasedKey
from tessera.runtime.rpc import tls
from tessera.runtime.rpc.server import ServiceBinding, start_server
from tessera.runtime.service import run_service, stop_event
from tessera.runtime.telemetry.metrics import start_metrics_server
from tessera.v1 import autoscaler_pb2_grpc

log = logging.getLogger("tessera.autoscaler")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--etcd",
        default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT),
        help="etcd endpoints host:port[,host:port] (env TESSERA_ETCD)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind and advertise")
    p.add_argument("--port", type=int, default=0, help="gRPC port (0: any free port)")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: any free port, registered in etcd)")
    p.add_argument("--desired", default=None, help="YAML file with the desired worker groups")
    p.add_argument("--model", default=None, help="shorthand for one group: this model ...")
    p.add_argument("--workers", type=int, default=1, help="... with this many replicas")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="engine argument for the shorthand group (repeatable)",
    )
    p.add_argument("--worker-log-dir", default=None, help="where worker logs go (default: a temp dir)")
    p.add_argument(
        "--actuator",
        default="local",
        choices=["local", "compose", "k8s"],
        help="local: worker processes on this machine; compose: scale the worker services of "
        "deploy/compose; k8s: one worker Deployment per group, from the worker PodTemplates of deploy/k8s/worker",
    )
    p.add_argument(
        "--compose-file",
        action="append",
        default=None,
        help="compose: file(s) of the deployment (default: deploy/compose/docker-compose.yaml)",
    )
    p.add_argument("--compose-project", default="tessera", help="compose: the project name of the deployment")
    p.add_argument("--k8s-namespace", default=None, help="k8s: namespace (default: the pod's, or the kubeconfig's)")
    p.add_argument("--kubeconfig", default=None, help="k8s: kubeconfig file (default: in-cluster, else ~/.kube/config)")
    p.add_argument(
        "--autoscaler-id", default=None, help="this autoscaler's id in the leader election (default: generated)"
    )
    p.add_argument("--lease-ttl", type=int, default=5, help="seconds its leadership outlives it if it dies")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    tls.add_arguments(p)
    etcd_tls.add_arguments(p)
    p.add_argument(
        "--tls-worker-cert",
        default=os.environ.get("TESSERA_TLS_WORKER_CERT", ""),
        help="local actuator with TLS: the certificate (worker role) its workers present (env TESSERA_TLS_WORKER_CERT)",
    )
    p.add_argument(
        "--tls-worker-key",
        default=os.environ.get("TESSERA_TLS_WORKER_KEY", ""),
        help="... and its key (env TESSERA_TLS_WORKER_KEY)",
    )
    p.add_argument(
        "--record-decisions",
        default=os.environ.get("TESSERA_RECORD_DECISIONS", ""),
        metavar="FILE",
        help="append each SLO policy loaded and each model's interval, observation and decision to FILE as "
        "JSON lines, for replay through the simulator's loop (env TESSERA_RECORD_DECISIONS)",
    )


class AutoscalerServicer(autoscaler_pb2_grpc.AutoscalerServicer):
    def __init__(self, controller: Controller) -> None:
        self.controller = controller

    async def GetPlan(self, request, context: grpc.aio.ServicerContext):
        return self.controller.plan()


def desired_groups(args: argparse.Namespace) -> list[WorkerGroup]:
    if args.desired:
        return load_desired(args.desired)
    if args.model:
        import yaml

        engine_args = {}
        for item in args.engine_arg:
            key, sep, value = item.partition("=")
            if not sep:
                raise DesiredStateError(f"bad --engine-arg {item!r}: expected KEY=VALUE")
            engine_args[key.replace("-", "_")] = yaml.safe_load(value)
        return [
            WorkerGroup(
                name=group_name_for(args.model), model=args.model, replicas=args.workers, engine_args=engine_args
            )
        ]
    return []


def worker_tls_args(args: argparse.Namespace) -> list[str]:
    """The TLS flags of the workers the local actuator starts: our CA, their own (worker) certificate.

    Workers get a certificate of their own, not ours: the autoscaler's role may drain workers,
    a worker's may only report to schedulers.
    """
    out = []
    if args.etcd_ca:  # etcd accepts any certificate of its CA: the worker's own when there is one
        cert, key = (
            (args.tls_worker_cert, args.tls_worker_key) if args.tls_worker_cert else (args.etcd_cert, args.etcd_key)
        )
        out += etcd_tls.flags(etcd_tls.EtcdTLS(args.etcd_ca, cert, key))
    if not args.tls_ca:
        return out
    if not (args.tls_worker_cert and args.tls_worker_key):
        raise ScalingError("with TLS, the local actuator needs --tls-worker-cert and --tls-worker-key for its workers")
    out += ["--tls-ca", args.tls_ca, "--tls-cert", args.tls_worker_cert, "--tls-key", args.tls_worker_key]
    return out + ["--tls-role-domain", args.tls_role_domain]


def make_actuator(args: argparse.Namespace, log_dir: str, workers: RegisteredWorkers) -> Actuator:
    """The actuator --actuator names: local processes, compose services or Kubernetes Deployments."""
    if args.actuator == "local":
        local = LocalActuator(LocalProcesses(args.etcd, log_dir, extra_args=worker_tls_args(args)), workers.workers)
        workers.listen(local.worker_registered)
        return local
    if args.actuator == "compose":
        from services.autoscaler.compose_actuator import DEFAULT_FILE, ComposeActuator

        return ComposeActuator(args.compose_file or [DEFAULT_FILE], project=args.compose_project)
    from services.autoscaler.k8s_actuator import KubernetesActuator  # the k8s extra: only when asked for

    return KubernetesActuator.from_environment(namespace=args.k8s_namespace, kubeconfig=args.kubeconfig)


async def run(args: argparse.Namespace) -> int:
    try:
        groups = desired_groups(args)
    except DesiredStateError as exc:
        log.error("%s", exc)
        return 2
    aid = args.autoscaler_id or f"autoscaler-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    connector = EtcdConnector(args.etcd)
    log_dir = args.worker_log_dir or tempfile.mkdtemp(prefix="tessera-workers-")
    workers = RegisteredWorkers(connector)
    try:
        actuator = make_actuator(args, log_dir, workers)
    except ScalingError as exc:
        log.error("%s", exc)
        return 2
    election = LeaderElection(connector, keys.election("autoscaler"), aid, ttl=args.lease_ttl)
    election.start()
    workers.start()
    controller = Controller(groups, actuator, workers, connector, election)
    loop_task = asyncio.create_task(controller.run())
    acks = Acknowledger(connector, "autoscaler", aid, ttl=args.lease_ttl)
    acks.start()
    decisions = open(args.record_decisions, "a", encoding="utf-8") if args.record_decisions else None
    slo = SloAutoscaling(
        connector,
        controller.set_planned_groups,
        acks,
        ready_groups=lambda: Counter(ident.group for ident in workers.workers.values()),
        record=decisions,
    )
    controller.explain = slo.status_lines
    slo_task = asyncio.create_task(slo.run())

    server = await start_server(
        [
            ServiceBinding(
                autoscaler_pb2_grpc.add_AutoscalerServicer_to_server,
                AutoscalerServicer(controller),
                "tessera.v1.Autoscaler",
            )
        ],
        host=args.host,
        port=args.port,
    )
    REGISTRY.register(FleetCollector(controller.fleet_rows))
    metrics_port = start_metrics_server(args.metrics_port, args.host)
    record = ServiceRecord(
        id=aid,
        kind="autoscaler",
        address=f"{args.host}:{server.port}",
        metrics_address=f"{args.host}:{metrics_port}",
        started_at_unix_ms=int(time.time() * 1000),
        extra={"worker_log_dir": log_dir},
    )
    registration = LeasedKey(connector, keys.service("autoscaler", aid), record.to_json(), ttl=args.lease_ttl)
    registration.start()
    summary = ", ".join(f"{g.name}: {g.replicas} x {g.model}" for g in groups) or "nothing"
    log.info("autoscaler %s on %s wants %s; worker logs in %s", aid, record.address, summary, log_dir)

    stop = stop_event()
    await stop.wait()
    loop_task.cancel()
    slo_task.cancel()
    await slo.close()
    if decisions is not None:
        decisions.close()
    await acks.close()
    await election.close()
    await actuator.close()  # local workers stop with the autoscaler; compose and Kubernetes ones outlive it
    await registration.close()
    await workers.close()
    await server.stop(1.0)
    return 0


def run_main(args: argparse.Namespace) -> int:
    return run_service("autoscaler", args, run, tracing=False)
