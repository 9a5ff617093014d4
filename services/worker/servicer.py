"""The Worker gRPC service: Generate, GetInfo, Drain."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc
from opentelemetry import trace

from services.worker import metrics
from services.worker.engine import Engine, EngineUnavailable, InvalidRequest, Unsupported
from services.worker.kv_transfer import params_from_struct
from services.worker.load import LoadTracker
from tessera.runtime.rpc.delta import PARAM_TRAILER
from tessera.runtime.telemetry.log_context import bind_request_id
from tessera.runtime.telemetry.tracing import incoming_context, record_error, tracer
from tessera.v1 import common_pb2 as pb
from tessera.v1 import worker_pb2, worker_pb2_grpc

log = logging.getLogger("tessera.worker")

HEARTBEAT_S = 1.0  # a stream with nothing to say sends a heartbeat this often, while the engine is alive
_T = TypeVar("_T")


async def with_heartbeats(
    items: AsyncIterator[_T], interval: float, alive: Callable[[], bool]
) -> AsyncIterator[_T | None]:
    """The items, with a None each `interval` seconds without one, as long as `alive()` says so.

    A hung engine gets no heartbeats: its streams fall silent, and the router's
    silence deadline moves them to another worker.
    """
    pending: asyncio.Future[_T] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(items))
            done, _ = await asyncio.wait({pending}, timeout=interval)
            if not done:
                if alive():
                    yield None
                continue
            try:
                item = pending.result()
            except StopAsyncIteration:
                return
            pending = None
            yield item
    finally:
        if pending is not None:
            if not pending.done():
                pending.cancel()  # the engine's generator sees the cancellation and aborts the request
            # Also when it is done: a stream closed just after its last item leaves the end of the
            # iteration (StopAsyncIteration) in it, which asyncio would log as never retrieved.
            await asyncio.gather(pending, return_exceptions=True)
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()


def _rank(request: worker_pb2.GenerateRequest) -> int | None:
    return request.data_parallel_rank if request.HasField("data_parallel_rank") else None


class WorkerServicer(worker_pb2_grpc.WorkerServicer):
    def __init__(self, engine: Engine, tracker: LoadTracker, identity: pb.WorkerIdentity) -> None:
        self.engine = engine
        self.tracker = tracker
        self.identity = identity
        self._tracer = tracer("tessera.worker")

    async def Generate(self, request: worker_pb2.GenerateRequest, context: grpc.aio.ServicerContext):
        parent = incoming_context(context.invocation_metadata())
        # A span, not a current span: this async generator may be finalised in another context,
        # where detaching a context token fails (and OpenTelemetry logs an error).
        # No gen_ai.* attributes here: the router's span is the request's GenAI span, and a
        # second one per attempt would count its tokens twice in GenAI dashboards.
        span = self._tracer.start_span("worker.generate", context=parent, kind=trace.SpanKind.SERVER)
        finish = None
        try:
            span.set_attribute("tessera.worker_id", self.identity.id)
            span.set_attribute("tessera.request_id", request.request_id)
            span.set_attribute("tessera.model", self.identity.model)
            span.set_attribute("tessera.engine", self.identity.engine)
            bind_request_id(request.request_id, span)  # on its log lines (TESSERA_LOG_FORMAT=json); own task
            if self.tracker.draining:
                await context.abort(grpc.StatusCode.UNAVAILABLE, f"worker {self.identity.id} is draining")
            sampling = pb.SamplingParams()
            sampling.CopyFrom(request.sampling)
            resumed = list(request.resume_token_ids)
            if resumed and sampling.HasField("max_tokens"):
                if sampling.max_tokens <= len(resumed):
                    await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "resume_token_ids already reach max_tokens")
                sampling.max_tokens -= len(resumed)
            if resumed and sampling.HasField("min_tokens"):
                # what was produced before the resume counts towards the minimum
                sampling.min_tokens = max(0, sampling.min_tokens - len(resumed))
            prompt = list(request.prompt_token_ids) + resumed
            kv = params_from_struct(request.kv_transfer.params) if request.HasField("kv_transfer") else None
            span.set_attribute("tessera.prompt_tokens", len(prompt))
            if resumed:
                span.set_attribute("tessera.resumed_tokens", len(resumed))

            started = time.perf_counter()
            first = True
            generated = len(resumed)
            self.tracker.started(
                request.request_id,
                len(prompt),
                request.data_parallel_rank if request.HasField("data_parallel_rank") else None,
                timed=not request.openai_request,  # vLLM's serving code: n choices, tokens counted in bulk
            )
            metrics.PROMPT_TOKENS.inc(len(request.prompt_token_ids))
            if request.openai_request:
                chunks = self.engine.generate_openai(
                    request.request_id, request.openai_endpoint, request.openai_request, request.priority
                )
            else:
                chunks = self.engine.generate(
                    request.request_id,
                    prompt,
                    sampling,
                    kv_transfer_params=kv,
                    priority=request.priority,
                    **(
                        {"data_parallel_rank": request.data_parallel_rank}
                        if request.HasField("data_parallel_rank")
                        else {}
                    ),
                )
            # An empty first message says the worker accepted the request: from here on, a failure is
            # this request's (the router counts it against the input), not an unreachable worker's.
            yield worker_pb2.GenerateResponse(request_id=request.request_id)
            try:
                async for chunk in with_heartbeats(chunks, HEARTBEAT_S, lambda: not self.tracker.stalled()):
                    if chunk is None:
                        yield worker_pb2.GenerateResponse(request_id=request.request_id)  # a heartbeat
                        continue
                    # vLLM's serving code (openai_request) counts its tokens; plain deltas carry theirs
                    new_tokens = len(chunk.token_ids) or max(0, chunk.completion_tokens - generated)
                    if new_tokens:
                        if first:
                            metrics.TTFT.observe(time.perf_counter() - started)
                            metrics.CACHED_PROMPT_TOKENS.inc(chunk.cached_prompt_tokens)
                            span.set_attribute("tessera.cached_prompt_tokens", chunk.cached_prompt_tokens)
                            first = False
                        generated += new_tokens
                        self.tracker.progressed(request.request_id, new_tokens, chunk.cached_prompt_tokens)
                        metrics.GENERATION_TOKENS.inc(new_tokens)
                    finish = chunk.finish_reason or finish
                    yield chunk.to_response(request.request_id, len(request.prompt_token_ids), generated)
            except Unsupported as exc:
                record_error(span, "FAILED_PRECONDITION", str(exc), server_fault=False)
                await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
            except InvalidRequest as exc:
                record_error(span, "INVALID_ARGUMENT", str(exc), server_fault=False)
                # The field at fault rides in trailing metadata: the router puts it in error.param.
                trailer = ((PARAM_TRAILER, exc.param),) if exc.param else ()
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc), trailer)
            except EngineUnavailable as exc:
                log.warning("request %s failed: %s", request.request_id, exc)
                record_error(span, "UNAVAILABLE", str(exc))
                await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
            finally:
                self.tracker.finished(request.request_id)
                metrics.REQUESTS.labels(finish or "cancelled").inc()
                metrics.E2E.observe(time.perf_counter() - started)
                span.set_attribute("tessera.completion_tokens", generated)
                span.set_attribute("tessera.finish_reason", finish or "cancelled")
        finally:
            span.end()

    async def GetInfo(self, request: worker_pb2.GetInfoRequest, context: grpc.aio.ServicerContext):
        return worker_pb2.WorkerInfo(identity=self.identity, load=self.tracker.report(0))

    async def Drain(self, request: worker_pb2.DrainRequest, context: grpc.aio.ServicerContext):
        if not self.tracker.draining:
            log.info("draining: no new requests; %d in flight", self.tracker.in_flight)
        self.tracker.set_draining(True)
        return worker_pb2.DrainResponse(in_flight=self.tracker.in_flight)
