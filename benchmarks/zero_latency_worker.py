"""A worker with no engine: it registers and reports like a real worker and streams tokens instantly.

Used to measure what the router and scheduler cost on their own, with nothing
else competing for the CPU (benchmarks/router_overhead.py --zero-latency).
Each request gets ``max_tokens`` deltas of one token, ``--itl-ms`` apart.

Like a real worker it also serves an OpenAI-compatible HTTP API (registered as
its ``http_address``; benchmarks/zero_latency_http.py), so that HTTP routers
such as vllm-router can front the same instant backend
(benchmarks/router_throughput.py).
"""

from __future__ import annotations

import argparse
import asyncio

import uvloop
from zero_latency_http import InstantOpenAI, build_app

from services.worker.engine import EngineLoad
from services.worker.load import LoadTracker
from services.worker.reporter import SchedulerReporter
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.records import identity_to_json
from tessera.runtime.etcd.registration import LeasedKey
from tessera.runtime.http_server import start_http
from tessera.runtime.rpc.server import ServiceBinding, start_server
from tessera.v1 import common_pb2 as pb
from tessera.v1 import worker_pb2, worker_pb2_grpc


class InstantWorker(worker_pb2_grpc.WorkerServicer):
    """Streams the tokens at once. Keeps the same book of requests in flight as a real worker, and
    reports them all as running (an instant engine has no queue), so its load reports go out on
    change and say what a real engine's would (otherwise only every 250 ms, everything in flight
    would count as queued, and the scheduler would soon declare the worker saturated)."""

    def __init__(self, itl_s: float, token_id: int, tracker: LoadTracker) -> None:
        self.itl_s, self.token_id, self.tracker = itl_s, token_id, tracker

    async def Generate(self, request, context):
        n = request.sampling.max_tokens or 16
        self.tracker.started(request.request_id, len(request.prompt_token_ids))
        self.tracker.engine_stats(EngineLoad(num_running=self.tracker.in_flight))
        try:
            for i in range(n):
                if i and self.itl_s:
                    await asyncio.sleep(self.itl_s)
                out = worker_pb2.GenerateResponse(
                    request_id=request.request_id, delta=pb.TokenDelta(token_ids=[self.token_id], text="a")
                )
                if i == n - 1:
                    out.finish_reason = pb.FINISH_REASON_LENGTH
                    out.usage.prompt_tokens = len(request.prompt_token_ids)
                    out.usage.completion_tokens = n
                self.tracker.progressed(request.request_id, 1)
                yield out
        finally:
            self.tracker.finished(request.request_id)
            self.tracker.engine_stats(EngineLoad(num_running=self.tracker.in_flight))


async def main(args: argparse.Namespace) -> None:
    tracker = LoadTracker()
    server = await start_server(
        [
            ServiceBinding(
                worker_pb2_grpc.add_WorkerServicer_to_server,
                InstantWorker(args.itl_ms / 1000, args.token_id, tracker),
                "tessera.v1.Worker",
            )
        ],
        port=args.port,
    )
    identity = pb.WorkerIdentity(
        id=args.worker_id,
        address=f"127.0.0.1:{server.port}",
        model=args.model,
        model_path=args.model_path,
        role=pb.ROLE_MIXED,
        vendor="cpu",
        accelerator="none",
        engine="zero-latency",
        max_model_len=args.max_model_len,
        kv_block_size=32,
        kv_capacity_blocks=100000,
    )
    if args.http_port >= 0:
        identity.http_address = f"127.0.0.1:{await start_openai_http(args)}"
    connector = EtcdConnector(args.etcd)
    LeasedKey(connector, keys.worker(args.worker_id), identity_to_json(identity)).start()
    SchedulerReporter(connector, identity, tracker).start()
    print(f"zero-latency worker on {identity.address} (HTTP {identity.http_address or 'off'})", flush=True)
    await asyncio.Event().wait()


async def start_openai_http(args: argparse.Namespace) -> int:
    """The instant OpenAI HTTP API on this process's loop; returns its port."""
    tokenizer = None
    if args.model_path:
        from tessera.runtime.models.tokenizer import ModelTokenizer

        tokenizer = ModelTokenizer(args.model_path)
    handlers = InstantOpenAI(args.model, args.max_model_len, args.itl_ms / 1000, tokenizer)
    _, _, port = await start_http(build_app(handlers), "127.0.0.1", args.http_port, http="httptools")
    return port


if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--etcd", default="127.0.0.1:2379")
    p.add_argument("--model", default="tiny-llama")
    p.add_argument("--model-path", default="", help="folder whose tokenizer the router loads")
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--worker-id", default="zero-latency-0")
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--http-port", type=int, default=0, help="OpenAI HTTP port (0: any free one, -1: none)")
    p.add_argument("--itl-ms", type=float, default=2.0)
    p.add_argument("--token-id", type=int, default=5)
    uvloop.run(main(p.parse_args()))
