"""``tessera worker``: start one engine, serve it over gRPC, register it in etcd."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import time
import uuid
from typing import Any

import yaml

from services.worker import http_key, metrics
from services.worker.kv_events import KVEventRelay
from services.worker.kv_transfer import kv_transfer_setup
from services.worker.load import LoadTracker
from services.worker.reporter import SchedulerReporter
from services.worker.servicer import WorkerServicer
from services.worker.step_learning import StepObserver, model_timer
from tessera.engine_model.catalog.expert_parallel import (
    cpu_threads_bind,
    dp_ranks,
    expert_parallel_engine_args,
    expert_parallel_env,
)
from tessera.engine_model.catalog.vendors import vendor_settings
from tessera.runtime.devices import detect_accelerator, detect_vendor
from tessera.runtime.etcd import keys
from tessera.runtime.etcd import tls as etcd_tls
from tessera.runtime.etcd.client import DEFAULT_ENDPOINT, EtcdConnector
from tessera.runtime.etcd.records import identity_to_json
from tessera.runtime.etcd.registration import LeasedKey
from tessera.runtime.models.registry import resolve
from tessera.runtime.rpc import tls
from tessera.runtime.rpc.enums import role_value
from tessera.runtime.rpc.server import RunningServer, ServiceBinding, start_server
from tessera.runtime.service import run_service, stop_event
from tessera.runtime.telemetry.metrics import start_metrics_server
from tessera.runtime.telemetry.tracing import shutdown_tracing
from tessera.v1 import common_pb2 as pb
from tessera.v1 import worker_pb2_grpc

log = logging.getLogger("tessera.worker")

DRAIN_TIMEOUT_S = 30.0
DTYPE_BYTES = {"float32": 4, "float": 4, "bfloat16": 2, "float16": 2, "half": 2}  # sim: --engine-arg dtype=


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="smollm2", help="smollm2 | tiny | a model folder | a hub id")
    p.add_argument("--served-model-name", default=None, help="name clients use (default: from the model)")
    p.add_argument(
        "--etcd", default=os.environ.get("TESSERA_ETCD", DEFAULT_ENDPOINT), help="etcd endpoints host:port[,host:port]"
    )
    p.add_argument("--host", default="127.0.0.1", help="address to bind and advertise")
    p.add_argument("--port", type=int, default=0, help="gRPC port (0: any free port)")
    p.add_argument("--metrics-port", type=int, default=0, help="Prometheus port (0: any free port)")
    p.add_argument(
        "--http-port",
        type=int,
        default=0,
        help="vLLM's own OpenAI-compatible HTTP API on the engine (0: any free port, -1: off)",
    )
    p.add_argument(
        "--http-api-key",
        default=os.environ.get(http_key.ENV_KEY, ""),
        help=f"key every request to that HTTP API must send as 'Authorization: Bearer KEY' but /health "
        f"(env {http_key.ENV_KEY}, better than the flag: argv is visible to every local user)",
    )
    p.add_argument("--worker-id", default=None, help="this worker's id in etcd (default: GROUP-HOST-random)")
    p.add_argument("--group", default="", help="desired-state group that launched this worker")
    p.add_argument(
        "--role",
        default="mixed",
        choices=["mixed", "prefill", "decode"],
        help="mixed: whole requests; prefill/decode: one half of a disaggregated pair",
    )
    p.add_argument(
        "--kv-connector",
        default="NixlConnector",
        help="prefill/decode roles: vLLM's KV connector that moves KV caches between them "
        "(NixlConnector on GPUs and CPUs alike; 'none' to run without)",
    )
    p.add_argument(
        "--engine",
        default="vllm",
        choices=["vllm", "sim"],
        help="vllm: the real engine; sim: a simulated accelerator timed by the performance model",
    )
    p.add_argument(
        "--accelerator", default="auto", help="sim: the catalog accelerator to behave like (h100, mi300x, cpu, ...)"
    )
    p.add_argument(
        "--sim-arch",
        default=None,
        help="sim: time steps as this architecture (llama3-8b, ...; default: the served model's config)",
    )
    p.add_argument(
        "--sim-step-time-scale",
        default="",
        metavar="prefill=X,decode=Y",
        help="sim: run prefill and decode steps X and Y times the performance model's time (a machine the "
        "model does not know; or the correction a live worker learnt, see benchmarks/sim_fidelity.py)",
    )
    p.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs this engine spans")
    p.add_argument(
        "--data-parallel-size",
        type=int,
        default=1,
        help="MoE models: DP ranks behind this one instance (one engine process each; requests "
        "are pinned to a rank by the scheduler)",
    )
    p.add_argument(
        "--expert-parallel",
        action="store_true",
        help="MoE models: shard the experts over the DP x TP ranks (the vendor's all-to-all backend)",
    )
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra vLLM engine argument (YAML value), repeatable; wins over the vendor table",
    )
    p.add_argument(
        "--serve-arg",
        action="append",
        default=[],
        metavar="FLAG",
        help="a `vllm serve` flag for vLLM's OpenAI serving code, repeatable, e.g. "
        "--serve-arg=--enable-auto-tool-choice --serve-arg=--tool-call-parser=hermes (tool_choice auto)",
    )
    p.add_argument(
        "--label",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label on this worker's registration, for placement profiles (repeatable)",
    )
    p.add_argument(
        "--stall-timeout-s",
        type=float,
        default=60.0,
        help="an engine that holds requests and produces no token for this long is hung: the worker reports "
        "itself stalled (no new placements, health NOT_SERVING) and its streams stop their heartbeats, so "
        "routers resume them elsewhere (0: never); set it above the longest prefill",
    )
    p.add_argument("--lease-ttl", type=int, default=5, help="seconds its etcd registration outlives it if it dies")
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    tls.add_arguments(p)
    etcd_tls.add_arguments(p)


def parse_pairs(items: list[str], what: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SystemExit(f"bad {what} {item!r}: expected KEY=VALUE")
        out[key.replace("-", "_")] = yaml.safe_load(value) if what == "--engine-arg" else value
    return out


def vllm_engine_args(
    args: argparse.Namespace, vendor: str, model_path: str, served_name: str, dtype_by_vendor: dict[str, str]
) -> dict[str, Any]:
    """vLLM engine arguments: vendor table, then model needs, then the user's flags."""
    engine_args: dict[str, Any] = dict(vendor_settings(vendor).engine_args)
    engine_args.update(
        model=model_path,
        tokenizer=model_path,
        served_model_name=served_name,
        tensor_parallel_size=args.tensor_parallel_size,
    )
    if vendor in dtype_by_vendor:
        engine_args["dtype"] = dtype_by_vendor[vendor]
    if args.max_model_len:
        engine_args["max_model_len"] = args.max_model_len
    engine_args.update(expert_parallel_engine_args(vendor, args.data_parallel_size, args.expert_parallel, args.role))
    engine_args.update(parse_pairs(args.engine_arg, "--engine-arg"))
    return engine_args


async def run(args: argparse.Namespace) -> int:
    spec = resolve(args.model, args.served_model_name)
    if spec.recipe or os.path.isdir(spec.path):
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # local files: never ask a model hub
    worker_id = args.worker_id or f"{args.group or 'worker'}-{socket.gethostname()}-{uuid.uuid4().hex[:6]}"
    tracker = LoadTracker(
        dp_ranks(args.data_parallel_size) if args.data_parallel_size > 1 else None, stall_s=args.stall_timeout_s
    )
    relay_box: list[KVEventRelay] = []  # the relay needs the engine's block size, known once it starts
    t0 = time.monotonic()
    from tessera.runtime.models.prepare import PrepareError

    try:
        if args.engine == "sim":
            engine, model_path, vendor, accelerator, count = await _start_sim_engine(
                args, spec, tracker, relay_box, worker_id
            )
        else:
            engine, model_path, vendor, accelerator, count = await _start_vllm_engine(
                args, spec, tracker, worker_id, relay_box
            )
    except PrepareError as exc:
        log.error("%s", exc)
        return 2
    relay = relay_box[0] if relay_box else None
    assert engine.info is not None
    log.info(
        "engine ready in %.1fs: %d KV blocks of %d tokens, context %d",
        time.monotonic() - t0,
        engine.info.kv_capacity_blocks,
        engine.info.kv_block_size,
        engine.info.max_model_len,
    )

    # Every series this worker exports (vLLM's own included) says which worker, and on what hardware.
    metric_labels = {
        "worker": worker_id,
        "model": spec.name,
        "role": args.role,
        "accelerator": accelerator,
        "vendor": vendor,
    }
    metrics.INFO.labels(engine.info.engine, str(count), str(args.tensor_parallel_size)).set(1)
    metrics_port = start_metrics_server(args.metrics_port, args.host, labels=metric_labels)
    identity = pb.WorkerIdentity(
        id=worker_id,
        model=spec.name,
        model_path=model_path,
        role=role_value(args.role),
        vendor=vendor,
        accelerator=accelerator,
        accelerator_count=count,
        parallelism=pb.Parallelism(
            tensor_parallel=args.tensor_parallel_size,
            pipeline_parallel=1,
            data_parallel=args.data_parallel_size,
            expert_parallel=(args.data_parallel_size * args.tensor_parallel_size if args.expert_parallel else 1),
        ),
        data_parallel_ranks=dp_ranks(args.data_parallel_size) if args.data_parallel_size > 1 else [],
        kv_block_size=engine.info.kv_block_size,
        kv_capacity_blocks=engine.info.kv_capacity_blocks,
        max_model_len=engine.info.max_model_len,
        max_num_seqs=engine.info.max_num_seqs,
        engine=engine.info.engine,
        engine_version=engine.info.engine_version,
        group=args.group,
        labels=parse_pairs(args.label, "--label"),
        started_at_unix_ms=int(time.time() * 1000),
        metrics_address=f"{args.host}:{metrics_port}",
    )
    if engine.info.kv_compat is not None:
        identity.kv_compat.CopyFrom(engine.info.kv_compat)
    servicer = WorkerServicer(engine, tracker, identity)
    server = await start_server(
        [ServiceBinding(worker_pb2_grpc.add_WorkerServicer_to_server, servicer, "tessera.v1.Worker")],
        host=args.host,
        port=args.port,
    )
    identity.address = f"{args.host}:{server.port}"
    http = None
    if args.http_port >= 0 and engine.llm is not None:
        from services.worker.openai_http import start_openai_server

        try:
            http, http_task, http_port = await start_openai_server(
                engine.llm, engine.serve_args, args.host, args.http_port, args.http_api_key
            )
            identity.http_address = f"{args.host}:{http_port}"
            if not args.http_api_key and not tls.is_loopback(args.host):
                log.warning("vLLM's HTTP API on %s takes requests without a key (--http-api-key)", args.host)
        except Exception as exc:  # noqa: BLE001 - the gRPC API still serves
            log.warning("vLLM's OpenAI HTTP server did not start: %s", exc)

    connector = EtcdConnector(args.etcd)
    registration = LeasedKey(connector, keys.worker(worker_id), identity_to_json(identity), ttl=args.lease_ttl)
    registration.start()
    reporter = SchedulerReporter(connector, identity, tracker, relay)
    reporter.start()
    log.info(
        "serving on %s (OpenAI HTTP %s, metrics :%d)", identity.address, identity.http_address or "off", metrics_port
    )

    stop = stop_event()
    if hasattr(engine, "toggle_frozen"):  # the simulated engine: SIGUSR1 hangs it, for chaos tests
        asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, engine.toggle_frozen)
    exit_code = 0
    watchdog = asyncio.create_task(_watch_engine(engine, tracker, stop, server))
    await stop.wait()
    if engine.dead:
        log.error("engine died; exiting so the actuator restarts this worker")
        exit_code = 1
    else:
        log.info("shutting down: draining %d request(s)", tracker.in_flight)
    tracker.set_draining(True)
    await registration.close()  # schedulers stop placing here at once
    deadline = time.monotonic() + DRAIN_TIMEOUT_S
    while tracker.in_flight and time.monotonic() < deadline and not engine.dead:
        await asyncio.sleep(0.1)
    watchdog.cancel()
    if http is not None:
        http.should_exit = True
        await asyncio.gather(http_task, return_exceptions=True)
    await reporter.close()
    await server.stop(5.0)  # let the last streams' final messages and status out
    await engine.stop()
    shutdown_tracing()
    return exit_code


async def _start_vllm_engine(
    args: argparse.Namespace, spec: Any, tracker: LoadTracker, worker_id: str, relay_box: list[KVEventRelay]
):
    vendor = detect_vendor()
    settings = vendor_settings(vendor)
    for key, value in settings.env.items():
        os.environ.setdefault(key, value)  # the operator's environment wins
    for key, value in expert_parallel_env(vendor, args.data_parallel_size, args.expert_parallel).items():
        os.environ.setdefault(key, value)
    if vendor == "cpu" and args.data_parallel_size > 1:
        # One core list per DP rank (vLLM's CPU build wants them |-separated), from the cores we were given.
        cores = sorted(os.sched_getaffinity(0))
        os.environ["VLLM_CPU_OMP_THREADS_BIND"] = cpu_threads_bind(
            cores, args.data_parallel_size, args.tensor_parallel_size
        )
    from tessera.runtime.models.prepare import ensure_model  # needs torch: workers only

    model_path = await asyncio.to_thread(ensure_model, spec)
    engine_args = vllm_engine_args(args, vendor, model_path, spec.name, spec.dtype_by_vendor)
    accelerator, count = detect_accelerator(vendor)
    log.info("starting %s on %s (%s): %s", spec.name, vendor, accelerator, worker_id)
    from services.worker.vllm_engine import VllmEngine

    transfer = kv_transfer_setup(args.role, args.kv_connector, args.host)
    if transfer is not None:
        os.environ.update(transfer.env)  # read by the engine process it spawns
        engine_args.update(transfer.engine_arg())
        log.info(
            "KV transfer: %s as %s %s",
            transfer.connector,
            transfer.kv_role,
            " ".join(f"{k}={v}" for k, v in transfer.env.items()),
        )
    engine = VllmEngine(engine_args, on_stats=tracker.engine_stats, serve_flags=args.serve_arg)
    timer = await asyncio.to_thread(model_timer, model_path, accelerator, args.tensor_parallel_size)
    # A decode worker's first tokens wait on KV pulled from a prefill worker: no prefill to learn from.
    tracker.steps = StepObserver(timer, learn_prefill=args.role != "decode")
    if engine_args.get("enable_prefix_caching", True):
        from services.worker.vllm_kv_events import kv_events_engine_arg, open_subscriber, subscribe

        # Listen first: the engine connects to us and publishes from its first request on.
        sock, kv_port = open_subscriber()
        engine_args.update(kv_events_engine_arg(kv_port))
        relay = KVEventRelay(int(engine_args.get("block_size") or 16))
        relay_box.append(relay)
        engine.background.append(asyncio.create_task(subscribe(sock, relay), name="kv-events"))
    await engine.start()
    return engine, model_path, vendor, accelerator, count


async def _start_sim_engine(
    args: argparse.Namespace, spec: Any, tracker: LoadTracker, relay_box: list[KVEventRelay], worker_id: str
):
    """A simulated accelerator: no weights, so the model folder only lends its tokenizer and config.
    `--engine-arg dtype=float32` (or bfloat16) times it in that dtype, as vLLM's flag would serve in it."""
    from services.worker.kv_descriptor import sim_descriptor
    from services.worker.sim_engine import SimEngine, open_tokenizer
    from tessera.engine_model.build import build_instances, context_length, resolve_arch
    from tessera.engine_model.catalog.accelerators import find as find_accelerator
    from tessera.engine_model.instance import InstanceSpec
    from tessera.engine_model.perf.comm import kv_transfer_time
    from tessera.engine_model.perf.step_scale import StepScale, scaled
    from tessera.runtime.distribution import installed_version
    from tessera.runtime.models.prepare import PrepareError, ensure_model

    model_path = await asyncio.to_thread(ensure_model, spec, False)  # no weights: no torch
    accel = find_accelerator("cpu" if args.accelerator == "auto" else args.accelerator)
    engine_args = parse_pairs(args.engine_arg, "--engine-arg")
    dtype = 4 if accel.vendor == "cpu" else None  # CPU workers serve in float32 (docs/smollm2-bf16.md)
    dtype_name = str(engine_args.pop("dtype", ""))
    dtype = DTYPE_BYTES.get(dtype_name, dtype)
    arch = resolve_arch(args.sim_arch or model_path, dtype)
    instance = InstanceSpec(accel, args.tensor_parallel_size, args.role)
    max_len = args.max_model_len or context_length(model_path)
    kv_cache_dtype = engine_args.pop("kv_cache_dtype", "auto")  # named in the descriptor; timed as the model's
    ((_, config, timer),) = build_instances(arch, [instance], max_len, env=os.environ, engine_args=engine_args)
    connector = args.kv_connector if args.role in ("prefill", "decode") and args.kv_connector != "none" else ""
    kv_compat = sim_descriptor(
        model_path,
        installed_version(),
        arch.dtype_bytes,
        accel.vendor,
        accel.name,
        config.block_size,
        args.tensor_parallel_size,
        connector,
        arch.kv_heads,
        {
            "kv_cache_dtype": kv_cache_dtype,
            "dtype": {"half": "float16", "float": "float32"}.get(dtype_name, dtype_name),
        },
    )
    try:
        truth = StepScale.parse(args.sim_step_time_scale)
    except ValueError as exc:
        raise PrepareError(f"--sim-step-time-scale: {exc}") from None
    # learns against the model, unscaled, as a real engine is compared with it
    tracker.steps = StepObserver(timer, learn_prefill=args.role != "decode")
    timer = scaled(timer, truth)
    tokenizer = await asyncio.to_thread(open_tokenizer, model_path)
    relay = KVEventRelay(config.block_size)
    relay_box.append(relay)
    engine = SimEngine(
        config,
        timer,
        tokenizer,
        f"tessera-sim {instance.label} as {arch.name}",
        on_stats=tracker.engine_stats,
        on_kv_events=relay.publish,
        kv_compat=kv_compat,
        engine_id=worker_id,
        transfer_s=lambda tokens: kv_transfer_time(arch, tokens, accel, accel),
    )
    await engine.start()
    return engine, model_path, accel.vendor, accel.name, instance.devices


async def _watch_engine(engine: Any, tracker: LoadTracker, stop: asyncio.Event, server: RunningServer) -> None:
    """Publish gauges, stop the worker if its engine dies, and say when it hangs.

    A hung engine (requests held, no token for --stall-timeout-s) keeps the
    worker's process and gRPC alive, so nothing else notices: the worker
    reports itself stalled (schedulers stop placing on it), turns its health
    NOT_SERVING, and its streams stop their heartbeats (routers resume them
    elsewhere). It serves again as soon as a token comes out.
    """
    was_stalled = False
    probe: asyncio.Task | None = None
    while not stop.is_set():
        stalled = tracker.stalled()
        if stalled and not tracker.in_flight and (probe is None or probe.done()):
            probe = asyncio.create_task(_probe_engine(engine, tracker))
        if stalled != was_stalled:
            if stalled:
                log.error(
                    "engine stalled: no token for %.0f s with %d request(s) in flight; refusing new requests",
                    tracker.seconds_since_progress(),
                    tracker.in_flight,
                )
            else:
                log.warning("engine recovered: producing tokens again")
            was_stalled = stalled
            tracker.notify()
            await server.set_serving(not stalled)
        metrics.STALLED.set(1 if stalled else 0)
        report = tracker.report(0)
        metrics.RUNNING.set(report.num_running)
        metrics.WAITING.set(report.num_waiting)
        metrics.KV_USAGE.set(report.kv_cache_usage)
        metrics.TOKENS_IN_FLIGHT.set(report.tokens_in_flight)
        metrics.STEP_TIME_SCALE.labels("prefill").set(report.prefill_time_scale)
        metrics.STEP_TIME_SCALE.labels("decode").set(report.decode_time_scale)
        if engine.dead:
            stop.set()
        await asyncio.sleep(0.5)


async def _probe_engine(engine: Any, tracker: LoadTracker) -> None:
    """One token from the engine, asked for directly: the way a stalled engine with no request left
    shows it works again (then the worker serves again)."""
    request_id = f"stall-probe-{uuid.uuid4().hex[:8]}"
    chunks = engine.generate(request_id, [0], pb.SamplingParams(max_tokens=1, ignore_eos=True))
    try:
        async with asyncio.timeout(max(1.0, tracker.stall_s)):
            async for chunk in chunks:
                if chunk.token_ids:
                    tracker.engine_progressed()
                    return
    except Exception as exc:  # noqa: BLE001 - a failed probe only means: still stalled
        log.debug("stall probe: %s", exc)
    finally:
        await chunks.aclose()


def pin_to_assigned_cores() -> None:
    """Pin this worker, and so every engine process it starts, to the cores its launcher assigned
    (TESSERA_CPU_AFFINITY): unpinned, vLLM's busy-polling engine takes every core."""
    cores = os.environ.get("TESSERA_CPU_AFFINITY", "")
    if cores:
        os.sched_setaffinity(0, {int(c) for c in cores.split(",")})


def run_main(args: argparse.Namespace) -> int:
    pin_to_assigned_cores()
    return run_service("worker", args, run)
