"""Driving one request: place it, stream it from a worker, and recover from worker failures.

- A worker that fails before the first token: the request is placed again,
  excluding that worker, and nobody notices but the latency.
- A worker that fails mid-stream: the request resumes on another worker from
  the tokens already produced (they are appended to the prompt), so the
  client's stream simply continues.
- A worker stream silent for longer than the silence deadline (no token and
  no heartbeat: workers send one every second while their engine is alive)
  counts as a failed worker, and the request resumes elsewhere.
- Retries are bounded three ways: at most MAX_ATTEMPTS workers; an input
  that failed on POISON_FAILURES workers that had accepted it is refused,
  not tried on a third (it may be what kills them); and a router-wide
  budget (as Envoy's retry budget) lets at most half the requests in flight,
  or 10, be retrying at once, so a failing fleet is not hit twice as hard
  (a fifth, with Envoy's floor of 3, failed the streams of one killed worker).
  Each retry waits a short jittered backoff.
- A request for a model with no worker at all is held (bounded per model)
  until one registers; it waits outside the admission queue, so it never
  holds up requests that can be placed.
- A request whose tenant already holds its fair share of the model's requests
  here (services/router/fair_share.py) is placed `over_fair_share`: the
  scheduler keeps each worker's last slot for tenants below their share.
- The client going away cancels the worker stream, which aborts the request in
  the engine.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
import uuid
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field

import grpc
from opentelemetry import context as otel_context
from opentelemetry import trace

from services.router import metrics
from services.router.admission import AdmissionControl, Saturated
from services.router.errors import BadRequest, NoCapacity, UpstreamFailed
from services.router.fair_share import TenantShares
from services.router.model_catalog import ModelEntry
from services.router.remote_prefill import prefill_request, remote_prefill
from services.router.scheduler_client import SchedulerClient
from tessera.placement.block_hash import CANONICAL_BLOCK_TOKENS, token_block_hashes
from tessera.runtime.rpc.delta import Delta, param_of
from tessera.runtime.rpc.server import channel
from tessera.runtime.telemetry import genai
from tessera.runtime.telemetry.tracing import outgoing_metadata, record_error, tracer
from tessera.v1 import common_pb2 as pb
from tessera.v1 import scheduler_pb2, worker_pb2, worker_pb2_grpc

log = logging.getLogger("tessera.router")

MAX_ATTEMPTS = 3
POISON_FAILURES = 2  # workers that accepted the request and then failed: the input is refused
RETRY_BUDGET_SHARE = 0.5  # of the requests in flight, how many may be retrying at once
MIN_RETRY_CONCURRENCY = 10  # retries always allowed at once: one dead worker's streams all resume
BACKOFF_BASE_S, BACKOFF_CAP_S = 0.025, 0.25
DEFAULT_SILENCE_S = 15.0  # a worker stream with no message for this long has failed
HOLD_POLL_S = 0.5  # how often a request held for a model's first worker asks the scheduler again
CLOSE_GRACE_S = 120.0  # longer than a worker's drain (30 s): its last streams are not cut


@dataclass
class Generation:
    """A request ready for the cluster: tokenized, validated, with final sampling parameters."""

    request_id: str  # the client's (x-request-id or generated); shown in responses
    model: ModelEntry
    prompt_ids: list[int]
    sampling: pb.SamplingParams
    session_id: str = ""
    priority: int = 0
    ttft_slo_s: float | None = None  # the client's time-to-first-token objective (x-slo-ttft-ms); None: the router's
    profile: str = ""  # placement profile the client asked for (x-tessera-profile); "": the router's
    tenant: str = ""  # the authenticated tenant (services/router/auth.py); "": an open router, no keys
    # The client request's span context: flow spans hang under it even when the
    # stream is consumed from another task (Starlette streams from its own task).
    trace_context: otel_context.Context | None = None
    # Unique inside the cluster even when clients reuse request ids: used with
    # the scheduler and the workers.
    internal_id: str = ""
    # A request that uses features beyond the plain path (openai_fields.py): its JSON body, for
    # vLLM's serving code on the worker, and its endpoint. Never resumed once a chunk went out.
    openai_request: bytes = b""
    openai_endpoint: str = ""
    openai_fields: tuple[str, ...] = ()  # the fields that need vLLM's serving code, for error messages
    choices: int = 1  # n: each choice is charged to the tenant's token limits

    def __post_init__(self) -> None:
        if not self.internal_id:
            self.internal_id = f"{self.request_id}.{uuid.uuid4().hex[:8]}"
        self._block_hashes: list[int] | None = None

    @property
    def block_hashes(self) -> list[int]:
        """Canonical 16-token chained hashes of the prompt: what the scheduler's prefix index matches."""
        if self._block_hashes is None:
            self._block_hashes = token_block_hashes(self.prompt_ids, CANONICAL_BLOCK_TOKENS)
        return self._block_hashes


@dataclass
class FlowStats:
    """What happened, for usage and logs."""

    completion_tokens: int = 0
    cached_prompt_tokens: int = 0
    attempts: int = 0
    workers: list[str] = field(default_factory=list)
    prefill_worker: str = ""  # the worker that prefilled a disaggregated request, if any


class NoWorker(Exception):
    """No worker serves the model at all (scaled to zero, or every one restarting)."""


class RetryBudget:
    """How many requests may be retrying at once: a share of those in flight, with a floor."""

    def __init__(self, share: float = RETRY_BUDGET_SHARE, floor: int = MIN_RETRY_CONCURRENCY) -> None:
        self.share, self.floor = share, floor
        self.in_flight = 0
        self.retrying = 0

    def try_retry(self) -> bool:
        if self.retrying >= max(self.floor, int(self.share * self.in_flight)):
            return False
        self.retrying += 1
        return True


def backoff_s(retry: int) -> float:
    """Full jitter (uniform up to an exponential cap): retries of many requests do not line up."""
    return random.uniform(0.0, min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, retry - 1)))


class WorkerChannels:
    """One gRPC channel per worker address, reused across requests."""

    def __init__(self) -> None:
        self._stubs: dict[str, tuple[grpc.aio.Channel, worker_pb2_grpc.WorkerStub]] = {}
        self._closing: set[asyncio.Task] = set()

    def stub(self, address: str) -> worker_pb2_grpc.WorkerStub:
        if address not in self._stubs:
            ch = channel(address, "worker")
            self._stubs[address] = (ch, worker_pb2_grpc.WorkerStub(ch))
        return self._stubs[address][1]

    async def forget(self, address: str) -> None:
        """A worker left: new requests get a new channel; streams still on this one (a draining
        worker finishing its requests) run to their end, up to CLOSE_GRACE_S, before it closes."""
        item = self._stubs.pop(address, None)
        if item:
            task = asyncio.create_task(item[0].close(grace=CLOSE_GRACE_S))
            self._closing.add(task)
            task.add_done_callback(self._closing.discard)

    async def close(self) -> None:
        for ch, _ in self._stubs.values():
            await ch.close()
        self._stubs.clear()


class RequestFlow:
    def __init__(
        self,
        schedulers: SchedulerClient,
        channels: WorkerChannels,
        profile: str = "",
        admission: AdmissionControl | None = None,
        hold_s: float = 0.0,
        silence_s: float = DEFAULT_SILENCE_S,
        max_held: int = 1024,
    ) -> None:
        """hold_s: how long a request for a model with no worker at all waits for one (scale from zero);
        max_held: how many may wait so per model; silence_s: the worker stream's silence deadline."""
        self.schedulers = schedulers
        self.hold_s = hold_s
        self.silence_s = silence_s
        self.max_held = max_held
        self.budget = RetryBudget()
        self._held: dict[str, int] = {}
        self.channels = channels
        self.profile = profile
        self.admission = admission or AdmissionControl()
        self.shares = TenantShares()
        self._tracer = tracer("tessera.router")

    async def stream(self, gen: Generation, stats: FlowStats) -> AsyncGenerator[Delta, None]:
        metrics.RECEIVED.labels(gen.model.name).inc()
        produced: list[int] = []
        excluded: list[str] = []
        max_tokens = gen.sampling.max_tokens
        attempts = self._attempts(gen, stats, produced, excluded, max_tokens)
        self.budget.in_flight += 1
        self.shares.started(gen.model.name, gen.tenant, time.monotonic())
        try:
            async for delta in attempts:
                yield delta
        finally:
            self.budget.in_flight -= 1
            self.shares.finished(gen.model.name, gen.tenant, time.monotonic())
            await attempts.aclose()  # a client that left aborts the worker's stream now, not at GC
            self.admission.released()

    async def _attempts(
        self, gen: Generation, stats: FlowStats, produced: list[int], excluded: list[str], max_tokens: int
    ) -> AsyncGenerator[Delta, None]:
        held = False
        hold_deadline = 0.0
        failed_on_input = 0  # workers that accepted this request and then failed
        retrying = False
        failover: tuple[str, str, int] | None = None  # the failed worker, why, tokens it had produced
        try:
            while True:
                stats.attempts += 1
                try:
                    placement = await self.admission.admit(
                        gen.model.name,
                        gen.priority,
                        lambda: self._place(gen, excluded, len(produced)),
                        gen.ttft_slo_s,
                        # The tenant too: one over its fair share may find no slot where another does.
                        signature=(gen.profile, gen.ttft_slo_s, tuple(excluded), gen.tenant),
                        tenant=gen.tenant,
                    )
                except NoWorker:
                    stats.attempts -= 1
                    if not held:
                        self._hold_start(gen)
                        held, hold_deadline = True, time.monotonic() + self.hold_s
                    await self._wait_for_a_worker(gen, hold_deadline)
                    continue
                if held:
                    self._hold_end(gen)
                    held = False
                placed_at = time.monotonic()
                worker_id = placement.worker.worker_id
                stats.workers.append(worker_id)
                if failover is not None:
                    # On the request's span: the trace shows where and why it moved, and from which token.
                    name, attrs = genai.failover_event(failover[0], worker_id, failover[1], failover[2], stats.attempts)
                    trace.get_current_span(gen.trace_context).add_event(name, attrs)
                    failover = None
                failure, accepted, relayed = "", False, False
                attempt = self._stream_from(gen, stats, placement, produced)
                try:
                    async for delta in attempt:
                        if delta is None:
                            accepted = True
                            continue
                        if isinstance(delta, str):
                            failure = delta
                            break
                        first = delta.token_ids and len(produced) == len(delta.token_ids)
                        if stats.attempts == 1 and (first or (delta.openai_body and not relayed)):
                            self.admission.first_token(gen.model.name, time.monotonic() - placed_at)
                        relayed = relayed or bool(delta.openai_body)
                        yield delta
                        if delta.finish_reason:
                            return
                finally:
                    await attempt.aclose()  # cancels the worker's stream now, not when collected
                if relayed:
                    # vLLM's serving code wrote those chunks; another worker cannot carry them on.
                    raise UpstreamFailed(
                        f"worker {worker_id} failed mid-stream ({failure}); a request served by vLLM's OpenAI "
                        "code (tools, structured output, logprobs, n > 1, ...) cannot be resumed elsewhere"
                    )
                # The worker failed. Retry elsewhere, resuming from what was produced.
                excluded.append(worker_id)
                reason = "before_first_token" if not produced else "mid_stream"
                failover = (worker_id, failure, len(produced))
                metrics.RETRIES.labels(reason).inc()
                failed_on_input += accepted
                log.warning(
                    "request %s: worker %s failed %s (%s); attempt %d of %d",
                    gen.request_id,
                    worker_id,
                    reason.replace("_", " "),
                    failure,
                    stats.attempts,
                    MAX_ATTEMPTS,
                )
                if max_tokens and len(produced) >= max_tokens:
                    yield Delta([], "", "length", worker_id=worker_id)
                    return
                if failed_on_input >= POISON_FAILURES:
                    raise UpstreamFailed(
                        f"the request failed on {failed_on_input} workers that had accepted it; it is not tried "
                        f"on another (last error: {failure})"
                    )
                if stats.attempts >= MAX_ATTEMPTS:
                    raise UpstreamFailed(f"the request failed on {stats.attempts} workers; last error: {failure}")
                if not retrying:
                    if not self.budget.try_retry():
                        metrics.RETRIES.labels("over_budget").inc()
                        raise UpstreamFailed(f"too many requests are being retried; last error: {failure}")
                    retrying = True
                await asyncio.sleep(backoff_s(stats.attempts))
        finally:
            if held:
                self._hold_end(gen)
            if retrying:
                self.budget.retrying -= 1

    async def _stream_from(
        self, gen: Generation, stats: FlowStats, placement: scheduler_pb2.PlaceResponse, produced: list[int]
    ) -> AsyncGenerator[Delta | str | None, None]:
        """One attempt: the worker's deltas; None once the worker accepted the request; a string (why)
        as the last item if the attempt failed in a way another worker may not."""
        worker_id, address = placement.worker.worker_id, placement.worker.address
        request = worker_pb2.GenerateRequest(
            request_id=f"{gen.internal_id}-{stats.attempts}",
            prompt_token_ids=gen.prompt_ids,
            sampling=gen.sampling,
            priority=gen.priority,
            resume_token_ids=produced,
            openai_request=gen.openai_request,
            openai_endpoint=gen.openai_endpoint,
        )
        if placement.worker.HasField("data_parallel_rank"):
            request.data_parallel_rank = placement.worker.data_parallel_rank
        # A request for vLLM's serving code is prefilled where it decodes: the prefill worker
        # would render the prompt its own way (tools in the template) and hand over other blocks.
        if placement.prefill.worker_id and not gen.openai_request:
            kv = await self._prefill(gen, placement.prefill, request, stats)
            if kv is not None:
                request.kv_transfer.CopyFrom(kv)
        # Spans are started and ended explicitly: this is a generator whose
        # steps may run in different tasks, where "current span" contexts break.
        span = self._tracer.start_span(
            "router.worker_stream",
            context=gen.trace_context,
            kind=trace.SpanKind.CLIENT,
            attributes=genai.server_attributes(address),
        )
        span.set_attribute("tessera.worker_id", worker_id)
        span.set_attribute("tessera.attempt", stats.attempts)
        if produced:
            span.set_attribute("tessera.resumed_tokens", len(produced))
        call = self.channels.stub(address).Generate(
            request, metadata=outgoing_metadata(context=trace.set_span_in_context(span, gen.trace_context))
        )
        messages = call.__aiter__()
        try:
            while True:
                try:
                    resp = await asyncio.wait_for(anext(messages), self.silence_s)
                except StopAsyncIteration:
                    yield _failed(span, "stream_ended", "stream ended without a finish")
                    return
                except TimeoutError:
                    yield _failed(span, "silent", f"silent for {self.silence_s:.0f} s (no token, no heartbeat)")
                    return
                if Delta.is_heartbeat(resp):
                    yield None
                    continue
                delta = Delta.from_response(resp, worker_id)
                produced.extend(delta.token_ids)
                stats.completion_tokens = max(len(produced), delta.completion_tokens)
                if delta.finish_reason:
                    stats.cached_prompt_tokens = delta.cached_prompt_tokens
                yield delta
                if delta.finish_reason:
                    return
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.INVALID_ARGUMENT:
                raise BadRequest(exc.details() or "invalid request", param=param_of(exc.trailing_metadata())) from None
            if exc.code() == grpc.StatusCode.FAILED_PRECONDITION and gen.openai_fields:
                # The worker's engine has no OpenAI serving code (the sim engine): name what needed it.
                names = ", ".join(gen.openai_fields)
                raise BadRequest(
                    f"{names}: not supported by the workers of {gen.model.name} ({exc.details()})",
                    param=gen.openai_fields[0],
                ) from None
            yield _failed(span, exc.code().name, f"{exc.code().name}: {exc.details()}")
        except asyncio.CancelledError:
            # grpc-aio reports a stream the *worker* cancelled (its server stopping) as
            # CancelledError too: that is a worker failure to recover from, unless this
            # task itself is being cancelled (the client left).
            current = asyncio.current_task()
            if current is None or current.cancelling():
                raise
            yield _failed(span, "CANCELLED", "CANCELLED: the worker ended the stream (it is shutting down)")
        finally:
            if not call.done():
                call.cancel()  # the client left or we are retrying: abort at the worker
            span.end()

    async def _prefill(
        self, gen: Generation, prefill: scheduler_pb2.Placement, request: worker_pb2.GenerateRequest, stats: FlowStats
    ) -> pb.KVTransferParams | None:
        """The prefill step of a disaggregated request; None: the decode worker prefills it itself."""
        stats.prefill_worker = prefill.worker_id
        span = self._tracer.start_span("router.remote_prefill", context=gen.trace_context, kind=trace.SpanKind.CLIENT)
        span.set_attribute("tessera.worker_id", prefill.worker_id)
        try:
            kv = await remote_prefill(
                self.channels.stub(prefill.address),
                prefill,
                prefill_request(
                    f"{request.request_id}-prefill",
                    list(request.prompt_token_ids),
                    list(request.resume_token_ids),
                    request.sampling,
                    request.priority,
                ),
                metadata=outgoing_metadata(context=trace.set_span_in_context(span, gen.trace_context)),
            )
        finally:
            span.end()
        return kv

    async def _ask(self, request: scheduler_pb2.PlaceRequest, gen: Generation) -> scheduler_pb2.PlaceResponse:
        span = self._tracer.start_span("router.place", context=gen.trace_context, kind=trace.SpanKind.CLIENT)
        try:
            metadata = outgoing_metadata(context=trace.set_span_in_context(span, gen.trace_context))
            request.trace_context.update(dict(metadata))
            with metrics.PLACE_SECONDS.time():
                return await self.schedulers.place(request, metadata=metadata)
        finally:
            span.end()

    def _hold_start(self, gen: Generation) -> None:
        """No worker can serve the model (scaled to zero, or every one restarting): the request waits
        for one. Held requests are demand the autoscaler sees (tessera_router_held_requests) and starts
        an instance for; the client waits for an engine start instead of getting 503 at once."""
        model = gen.model.name
        if self.hold_s <= 0:
            raise NoCapacity(f"no worker serves {model} now", retry_after=10)
        if self._held.get(model, 0) >= self.max_held:
            raise NoCapacity(f"{self.max_held} requests already wait for a worker of {model} to start", retry_after=10)
        self._held[model] = self._held.get(model, 0) + 1
        metrics.HELD.labels(model).inc()

    def _hold_end(self, gen: Generation) -> None:
        self._held[gen.model.name] -= 1
        metrics.HELD.labels(gen.model.name).dec()

    async def _wait_for_a_worker(self, gen: Generation, deadline: float) -> None:
        """Until a worker of the model registers (then a moment for the scheduler to hear of it too),
        or HOLD_POLL_S; NoCapacity past the deadline."""
        left = deadline - time.monotonic()
        if left <= 0:
            raise NoCapacity(
                f"no worker serves {gen.model.name} and none started within {self.hold_s:.0f} s", retry_after=10
            )
        try:
            await asyncio.wait_for(gen.model.serving.wait(), min(HOLD_POLL_S, left))
            await asyncio.sleep(HOLD_POLL_S)  # the scheduler hears of it a moment after us
        except TimeoutError:
            pass

    async def _place(self, gen: Generation, excluded: list[str], produced: int) -> scheduler_pb2.PlaceResponse:
        request = scheduler_pb2.PlaceRequest(
            request_id=f"{gen.internal_id}-{len(excluded)}",
            model=gen.model.name,
            prompt_tokens=len(gen.prompt_ids) + produced,
            max_tokens=max(0, gen.sampling.max_tokens - produced),
            exclude_worker_ids=excluded,
            session_id=gen.session_id,
            priority=gen.priority,
            profile=gen.profile or self.profile,
            prompt_block_hashes=gen.block_hashes,
            block_size=CANONICAL_BLOCK_TOKENS,
            ttft_slo_s=self.admission.ttft_slo_s if gen.ttft_slo_s is None else gen.ttft_slo_s,
            over_fair_share=self.shares.over_share(gen.model.name, gen.tenant, time.monotonic()),
        )
        response = await self._ask(request, gen)
        nobody = response.outcome == scheduler_pb2.PLACE_OUTCOME_NO_WORKER and not response.candidates
        if nobody and not excluded and self.hold_s > 0:
            raise NoWorker(response.reason)
        if response.outcome == scheduler_pb2.PLACE_OUTCOME_PLACED:
            return response
        if response.outcome == scheduler_pb2.PLACE_OUTCOME_UNKNOWN_PROFILE:
            raise BadRequest(response.reason, param="x-tessera-profile")
        if response.outcome == scheduler_pb2.PLACE_OUTCOME_SATURATED:
            raise Saturated(response.reason)
        raise NoCapacity(f"no worker can take this request now ({response.reason or 'no candidates'})")


def _failed(span: trace.Span, error_type: str, why: str) -> str:
    """An attempt failed: its span says why (the request itself may still succeed elsewhere)."""
    record_error(span, error_type, why)
    return why
