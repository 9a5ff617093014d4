"""Ways to send one benchmark request, timing every streamed delta.

- ``openai``: HTTP + SSE to an OpenAI-compatible server (our router, vLLM, anything).
- ``tessera-grpc``: the router's gRPC Generate API.
- ``worker-grpc``: one worker's gRPC Generate API directly, bypassing router and
  scheduler: the baseline that shows what the router adds.
"""

from __future__ import annotations

import json
import time
from typing import Protocol

import aiohttp
import grpc

from tessera.bench.datasets import BenchRequest
from tessera.bench.results import Outcome
from tessera.runtime.rpc.server import channel
from tessera.v1 import common_pb2 as pb
from tessera.v1 import router_pb2, router_pb2_grpc, worker_pb2, worker_pb2_grpc


class Client(Protocol):
    async def send(self, req: BenchRequest, request_id: str) -> Outcome: ...

    async def close(self) -> None: ...


def _sampling(req: BenchRequest, temperature: float, ignore_eos: bool) -> pb.SamplingParams:
    return pb.SamplingParams(max_tokens=req.output_len, temperature=temperature, ignore_eos=ignore_eos)


class _DeltaClock:
    def __init__(self, outcome: Outcome) -> None:
        self.o = outcome
        self.start = outcome.start_time = time.perf_counter()
        self.last: float | None = None

    def tick(self) -> None:
        now = time.perf_counter()
        if self.last is None:
            self.o.ttft = now - self.start
        else:
            self.o.itl.append(now - self.last)
        self.last = now

    def done(self) -> None:
        self.o.latency = time.perf_counter() - self.start


class OpenAIClient:
    def __init__(
        self,
        base_url: str,
        model: str,
        endpoint: str = "/v1/completions",
        temperature: float = 0.0,
        ignore_eos: bool = False,
        decode=None,
        headers: dict[str, str] | None = None,
    ) -> None:
        self.url = base_url.rstrip("/") + endpoint
        self.headers = dict(headers or {})
        self.chat = "chat" in endpoint
        self.model, self.temperature, self.ignore_eos, self.decode = model, temperature, ignore_eos, decode
        self.session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(total=6 * 3600), connector=aiohttp.TCPConnector(limit=0)
        )

    async def send(self, req: BenchRequest, request_id: str) -> Outcome:
        o = Outcome(prompt_len=len(req.prompt_ids))
        payload: dict = {
            "model": self.model,
            "max_tokens": req.output_len,
            "temperature": self.temperature,
            "stream": True,
            "stream_options": {"include_usage": True},
            "ignore_eos": self.ignore_eos,
        }
        if self.chat:
            payload["messages"] = [{"role": "user", "content": self.decode(req.prompt_ids)}]
        else:
            payload["prompt"] = req.prompt_ids
        clock = _DeltaClock(o)
        text = []
        try:
            async with self.session.post(
                self.url, json=payload, headers={**self.headers, "x-request-id": request_id}
            ) as resp:
                if resp.status != 200:
                    o.error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    return o
                async for raw in resp.content:
                    line = raw.strip()
                    if not line.startswith(b"data: ") or line == b"data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    if "error" in chunk:
                        o.error = chunk["error"].get("message", "error")
                        return o
                    if chunk.get("usage"):
                        o.output_tokens = chunk["usage"]["completion_tokens"]
                        details = chunk["usage"].get("prompt_tokens_details") or {}
                        o.cached_tokens = int(details.get("cached_tokens") or 0)
                    for choice in chunk.get("choices") or []:
                        piece = choice.get("text") if not self.chat else (choice.get("delta") or {}).get("content")
                        if piece:
                            clock.tick()
                            text.append(piece)
            clock.done()
            o.generated_text = "".join(text)
            o.success = True
        except (aiohttp.ClientError, OSError) as exc:
            o.error = f"{type(exc).__name__}: {exc}"
        return o

    async def close(self) -> None:
        await self.session.close()


class _GrpcStreamClient:
    def __init__(self, address: str, role: str) -> None:
        self.channel = channel(address, role)

    async def _consume(self, call, o: Outcome) -> Outcome:
        clock = _DeltaClock(o)
        text = []
        try:
            async for resp in call:
                if resp.delta.token_ids:
                    clock.tick()
                    text.append(resp.delta.text)
                    o.output_tokens += len(resp.delta.token_ids)
            clock.done()
            o.generated_text = "".join(text)
            o.success = True
        except grpc.aio.AioRpcError as exc:
            o.error = f"{exc.code().name}: {exc.details()}"
        return o

    async def close(self) -> None:
        await self.channel.close()


class RouterGrpcClient(_GrpcStreamClient):
    def __init__(self, address: str, model: str, temperature: float = 0.0, ignore_eos: bool = False) -> None:
        super().__init__(address, "router")
        self.stub = router_pb2_grpc.RouterStub(self.channel)
        self.model, self.temperature, self.ignore_eos = model, temperature, ignore_eos

    async def send(self, req: BenchRequest, request_id: str) -> Outcome:
        o = Outcome(prompt_len=len(req.prompt_ids))
        call = self.stub.Generate(
            router_pb2.RouterGenerateRequest(
                model=self.model,
                token_ids=router_pb2.TokenIds(ids=req.prompt_ids),
                request_id=request_id,
                sampling=_sampling(req, self.temperature, self.ignore_eos),
            )
        )
        return await self._consume(call, o)


class WorkerGrpcClient(_GrpcStreamClient):
    def __init__(self, address: str, temperature: float = 0.0, ignore_eos: bool = False) -> None:
        super().__init__(address, "worker")
        self.stub = worker_pb2_grpc.WorkerStub(self.channel)
        self.temperature, self.ignore_eos = temperature, ignore_eos

    async def send(self, req: BenchRequest, request_id: str) -> Outcome:
        o = Outcome(prompt_len=len(req.prompt_ids))
        call = self.stub.Generate(
            worker_pb2.GenerateRequest(
                request_id=request_id,
                prompt_token_ids=req.prompt_ids,
                sampling=_sampling(req, self.temperature, self.ignore_eos),
            )
        )
        return await self._consume(call, o)
