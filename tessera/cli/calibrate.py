"""``tessera calibrate``: learn in about a minute how far this machine's engine steps are from the
performance model, and write the correction for ``tessera sim`` and sim workers to use.

Live workers learn the same two numbers while they serve (``services/worker/step_learning.py``)
and the scheduler corrects its speed estimates by them; this command is for a machine that is
not serving yet, or for the simulator, which has no live worker to learn from. It starts one
worker of the model on the local accelerator (its own etcd, nothing else), sends it a sweep
built to give the learner clean moments, and reads back what the worker learnt:

- one prompt at a time, lengths from short to long: each first token times a prefill alone
  (and the tokens after it a decode step of one sequence);
- bursts of equal requests sent together, batch sizes from 1 up: once their prompts are done,
  the gaps between tokens time decode steps of that batch, until the first of them finishes.

The sweep repeats until ``--duration`` has passed. The result is the worker's own learner's
(a ratio of sums over the moments it kept), so ``tessera calibrate`` and a serving worker agree
by construction. Written as YAML (``--out``); ``tessera sim --step-time-scale FILE`` and
``tessera up --sim-step-time-scale FILE`` read it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import yaml

log = logging.getLogger("tessera.calibrate")

PROMPT_LADDER = (16, 64, 128, 256, 512, 1024)  # tokens; clipped to the model's context
BATCH_LADDER = (1, 2, 4, 8, 16)
BURST_OUTPUT_TOKENS = 24


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", nargs="?", default="smollm2", help="smollm2 | tiny | a model folder")
    p.add_argument("--engine", choices=("vllm", "sim"), default="vllm", help="the engine to measure")
    p.add_argument(
        "--accelerator",
        default="auto",
        help="the catalog accelerator this machine is (auto: what the worker detects; sim: the one to behave like)",
    )
    p.add_argument("--duration", type=float, default=60.0, help="seconds of measuring (after the engine is up)")
    p.add_argument("--out", default="step-time-scale.yaml", help="where to write the correction (YAML)")
    p.add_argument(
        "--engine-arg",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra vLLM engine argument for the measured worker, repeatable (as for tessera worker)",
    )
    p.add_argument("--max-model-len", type=int, default=2048, help="the measured worker's context length")
    p.add_argument(
        "--sim-step-time-scale",
        default="",
        help="sim engine only: a machine this much slower than the model (to check the command finds it)",
    )
    p.add_argument(
        "--cpu-cores",
        default="0",
        help="vLLM on a machine without GPUs: the cores the worker is pinned to, as tessera up pins each CPU "
        "worker (the catalog's cpu row is one core)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the random prompts")
    p.add_argument("--log-dir", default=None, help="where the worker's and etcd's logs go (default: a temp folder)")


@dataclass
class Sweep:
    """What one calibration sends: the prompt lengths and burst sizes, within the model's context."""

    vocab: int
    max_len: int
    seed: int

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)
        self.prompts = [n for n in PROMPT_LADDER if n + 8 <= self.max_len]

    def prompt(self, length: int) -> list[int]:
        """Random ids, so no prompt is cached from an earlier one (a cache hit would time no prefill)."""
        return [self.rng.randrange(100, self.vocab) for _ in range(length)]


async def _generate(stub: Any, prompt: list[int], max_tokens: int, request_id: str) -> int:
    from tessera.v1 import common_pb2, worker_pb2

    request = worker_pb2.GenerateRequest(
        request_id=request_id,
        prompt_token_ids=prompt,
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True),
    )
    tokens = 0
    async for response in stub.Generate(request):
        tokens += len(response.delta.token_ids)
    return tokens


async def _read_scale(stub: Any) -> dict[str, float]:
    """What the worker has learnt, as it reports it to the schedulers (0: that phase not learnt yet)."""
    from tessera.v1 import worker_pb2

    info = await stub.GetInfo(worker_pb2.GetInfoRequest(), timeout=10)
    return {"prefill": info.load.prefill_time_scale, "decode": info.load.decode_time_scale}


async def _wait_serving(address: str, worker: subprocess.Popen, timeout_s: float) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    from tessera.runtime.rpc.server import channel

    deadline = time.monotonic() + timeout_s
    async with channel(address, "worker") as ch:
        stub = health_pb2_grpc.HealthStub(ch)
        while time.monotonic() < deadline:
            if worker.poll() is not None:
                raise RuntimeError(f"the worker exited ({worker.returncode}) before serving; see its log")
            try:
                reply = await stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=2)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.aio.AioRpcError:  # not listening yet: the engine is loading
                pass
            await asyncio.sleep(0.5)
    raise RuntimeError(f"the worker did not serve within {timeout_s:.0f} s; see its log")


async def _measure(address: str, sweep: Sweep, duration_s: float) -> tuple[dict[str, Any], dict[str, float]]:
    from tessera.runtime.rpc.server import channel
    from tessera.v1 import worker_pb2_grpc

    started = time.monotonic()
    rounds = requests = 0
    async with channel(address, "worker") as ch:
        stub = worker_pb2_grpc.WorkerStub(ch)
        while time.monotonic() - started < duration_s:
            rounds += 1
            for length in sweep.prompts:  # prefills alone
                await _generate(stub, sweep.prompt(length), 4, f"calibrate-{rounds}-p{length}")
                requests += 1
                if rounds > 1 and time.monotonic() - started >= duration_s:
                    break
            for batch in BATCH_LADDER:  # decode steps of each batch size
                length = sweep.prompts[min(1, len(sweep.prompts) - 1)]
                await asyncio.gather(
                    *(
                        _generate(stub, sweep.prompt(length), BURST_OUTPUT_TOKENS, f"calibrate-{rounds}-b{batch}-{i}")
                        for i in range(batch)
                    )
                )
                requests += batch
                if rounds > 1 and time.monotonic() - started >= duration_s:
                    break
            scale = await _read_scale(stub)
            print(
                f"  {time.monotonic() - started:5.0f} s  round {rounds}, {requests} requests: "
                f"prefill x{scale.get('prefill', 0):.3f}, decode x{scale.get('decode', 0):.3f}",
                flush=True,
            )
        scale = await _read_scale(stub)
    return {"rounds": rounds, "requests": requests, "seconds": round(time.monotonic() - started, 1)}, scale


def _vocab_and_context(model: str, max_model_len: int) -> tuple[str, int, int]:
    from tessera.runtime.models.prepare import ensure_model
    from tessera.runtime.models.registry import resolve

    path = ensure_model(resolve(model), weights=False)
    config = json.loads((Path(path) / "config.json").read_text())
    context = int(config.get("max_position_embeddings") or max_model_len)
    return path, int(config["vocab_size"]), min(context, max_model_len)


def run_main(args: argparse.Namespace) -> int:
    from services.autoscaler.local_processes import PIN_ENV as CPU_AFFINITY_ENV
    from tessera.runtime.devices import device_slots
    from tessera.runtime.etcd.server import LocalEtcd
    from tessera.runtime.lifetime import child_env
    from tessera.runtime.net import free_port
    from tessera.runtime.telemetry.logging import setup_logging

    setup_logging("calibrate")
    log_dir = Path(args.log_dir or tempfile.mkdtemp(prefix="tessera-calibrate-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    from tessera.runtime.models.prepare import PrepareError

    try:
        _, vocab, context = _vocab_and_context(args.model, args.max_model_len)
    except (PrepareError, OSError, KeyError, ValueError) as exc:  # an unknown model, no config.json
        log.error("cannot read the model %s: %s", args.model, exc)
        return 2
    etcd = LocalEtcd(data_dir=str(log_dir / "etcd"), log_path=str(log_dir / "etcd.log")).start()
    port = free_port()
    cmd = [
        sys.executable,
        "-m",
        "tessera.cli",
        "worker",
        "--etcd",
        etcd.endpoint,
        "--model",
        args.model,
        "--engine",
        args.engine,
        "--accelerator",
        args.accelerator,
        "--port",
        str(port),
        "--http-port",
        "-1",
        "--max-model-len",
        str(context),
        "--worker-id",
        "calibrate",
        *(f"--engine-arg={pair}" for pair in args.engine_arg),
        *(["--sim-step-time-scale", args.sim_step_time_scale] if args.sim_step_time_scale else []),
    ]
    env = child_env()
    if args.engine == "vllm" and device_slots() == ("", 0):  # pinned as the local actuator pins CPU workers
        env.update({"VLLM_CPU_OMP_THREADS_BIND": args.cpu_cores, CPU_AFFINITY_ENV: args.cpu_cores})
    worker_log = log_dir / "worker.log"
    print(f"starting a {args.engine} worker of {args.model} on {args.accelerator} (log: {worker_log})", flush=True)
    with open(worker_log, "w") as out:
        worker = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        address = f"127.0.0.1:{port}"
        asyncio.run(_wait_serving(address, worker, timeout_s=600))
        print(f"measuring for {args.duration:.0f} s", flush=True)
        sweep = Sweep(vocab=vocab, max_len=context, seed=args.seed)
        done, scale = asyncio.run(_measure(address, sweep, args.duration))
    except (RuntimeError, OSError) as exc:
        log.error("calibration failed: %s", exc)
        return 1
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
        etcd.stop()
    missing = [phase for phase in ("prefill", "decode") if not scale.get(phase)]
    if missing:
        log.error("not enough clean steps to learn %s; try a longer --duration", " and ".join(missing))
        return 1
    result = {
        "model": args.model,
        "engine": args.engine,
        "accelerator": args.accelerator,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "step_time_scale": {"prefill": round(scale["prefill"], 4), "decode": round(scale["decode"], 4)},
        "sweep": done,
    }
    Path(args.out).write_text(
        "# Measured / predicted engine step time on this machine (tessera calibrate); read by\n"
        "# tessera sim --step-time-scale FILE and tessera up --sim-step-time-scale FILE.\n"
        + yaml.safe_dump(result, sort_keys=False)
    )
    print(
        f"prefill x{scale['prefill']:.3f}, decode x{scale['decode']:.3f} "
        f"({done['requests']} requests in {done['seconds']:.0f} s); written to {args.out}\n"
        f"use: tessera sim --step-time-scale {args.out}",
        flush=True,
    )
    return 0
