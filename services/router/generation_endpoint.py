"""One OpenAI generation endpoint over HTTP: authenticate, validate, tokenize, place, relay.

/v1/chat/completions and /v1/completions are :class:`Endpoint`; /v1/responses
(responses_api.py) is the same flow with its own request shape and event stream. Answers the
router renders itself (the plain path) and answers vLLM's serving code wrote on a worker (relayed
with the router's id) leave here alike: whole, or as server-sent events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

from opentelemetry import trace
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from services.router import metrics, openai_fields
from services.router.api_types import SamplingFields
from services.router.auth import PROFILE_HEADER, SLO_HEADER
from services.router.errors import ApiError
from services.router.flow import FlowStats, Generation
from services.router.limits import Limits, header, parse_json, slo_header
from services.router.openai_request import prepare_openai, session_of, validate_openai, with_id
from services.router.state import RouterState
from services.router.timing import Timing
from tessera.runtime.rpc.delta import Delta
from tessera.runtime.telemetry import genai
from tessera.runtime.telemetry.log_context import bind_request_id
from tessera.runtime.telemetry.tracing import client_context, record_error, tracer

log = logging.getLogger("tessera.router")
_tracer = tracer("tessera.router")
_HTTP_STATUS = "http.response.status_code"


def _server_attributes(request: Request) -> genai.Attributes:
    """server.address/port: the socket the request came in on (not the client's Host header)."""
    server = request.scope.get("server")
    return genai.server_attributes(f"{server[0]}:{server[1]}") if server and server[1] else {}


def error_response(exc: ApiError) -> JSONResponse:
    headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else None
    return JSONResponse(exc.body(), status_code=exc.status, headers=headers)


async def _json_body(request: Request, limits: Limits) -> dict[str, Any]:
    return parse_json(await request.body(), limits.max_json_depth)


def _usage(gen: Generation, stats: FlowStats) -> dict[str, Any]:
    prompt = len(gen.prompt_ids)
    return {
        "prompt_tokens": prompt,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": prompt + stats.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": stats.cached_prompt_tokens},
    }


class Endpoint:
    """One of the two generation endpoints; they differ only in request and response shapes."""

    def __init__(self, state: RouterState, chat: bool, limits: Limits) -> None:
        self.state, self.chat, self.limits = state, chat, limits
        self.path = "/v1/chat/completions" if chat else "/v1/completions"
        self.object = "chat.completion" if chat else "text_completion"
        self.prefix = "chatcmpl-" if chat else "cmpl-"
        self.operation = genai.CHAT if chat else genai.TEXT_COMPLETION
        self.span_name = f"router.{self.path.strip('/').replace('/', '.')}"

    def validate(self, body: dict[str, Any]) -> tuple[SamplingFields, openai_fields.Route]:
        """The router's fields of the body and how it is served; a 400 naming what is wrong."""
        return validate_openai(body, self.chat)

    async def prepare(
        self, fields: SamplingFields, body: dict[str, Any], route: openai_fields.Route, request_id: str, session: str
    ) -> Generation:
        """Tokenized and checked, ready to place."""
        return await prepare_openai(self.state, fields, body, self.chat, route.vllm_fields, request_id, session)

    def relay(self, body: bytes, response_id: str) -> bytes:
        """One chunk vLLM's serving code wrote, as a server-sent event carrying the router's id."""
        return b"data: " + with_id(body, response_id) + b"\n\n"

    def stream_error(self, exc: ApiError) -> bytes:
        """The event that tells a streaming client its answer failed after the status line went out."""
        return b"data: " + json.dumps(exc.body(), separators=(",", ":")).encode() + b"\n\n"

    # What ends a stream: OpenAI's chat and completions streams close with [DONE].
    end_of_stream = b"data: [DONE]\n\n"

    def whole(self, body: bytes, response_id: str) -> bytes:
        """The whole response vLLM's serving code wrote, with the router's id."""
        return with_id(body, response_id)

    def _choice(self, text: str, finish: str | None, stop_reason: str, first: bool, stream: bool) -> dict[str, Any]:
        if not self.chat:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": finish}
        elif stream:
            delta: dict[str, Any] = (
                {"role": "assistant", "content": text} if first else ({"content": text} if text else {})
            )
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "logprobs": None,
                "finish_reason": finish,
            }
        if finish:
            choice["stop_reason"] = stop_reason or None
        return choice

    async def handle(self, request: Request) -> Response:
        arrived = time.perf_counter()
        model_label = "unknown"
        status = 500
        metrics.IN_FLIGHT.inc()
        streaming = False
        gen: Generation | None = None
        stats = FlowStats()
        finish: str | None = None
        # A child of the caller's span when the request carries a traceparent. Ended when the
        # response is complete: for a stream, after its last chunk (_sse), so that the span
        # carries the usage and the finish reason.
        span = _tracer.start_span(
            self.span_name,
            context=client_context(request.headers.getlist),
            kind=trace.SpanKind.SERVER,
            attributes=_server_attributes(request),
        )
        try:
            with trace.use_span(span, record_exception=False, set_status_on_exception=False):
                gate = self.state.gate
                principal = await gate.authenticate(request.headers.get("authorization"))
                span.set_attribute("tessera.tenant", principal.tenant)
                body = await _json_body(request, self.limits)
                fields, route = self.validate(body)
                gate.authorize(
                    principal,
                    fields.model,
                    fields.priority,
                    SLO_HEADER in request.headers,
                    PROFILE_HEADER in request.headers,
                )
                cap = self.limits.max_header_chars
                request_id = header(request.headers, "x-request-id", cap) or fields.request_id or uuid.uuid4().hex
                bind_request_id(request_id, span)  # on this request's log lines (TESSERA_LOG_FORMAT=json)
                span.set_attribute("tessera.request_id", request_id)
                session = session_of(fields, header(request.headers, "x-session-id", cap) or "")
                slo_s = slo_header(header(request.headers, "x-slo-ttft-ms", cap))
                profile = header(request.headers, "x-tessera-profile", cap) or ""
                gen = await self.prepare(fields, body, route, request_id, session)
                model_label = gen.model.name
                gen.tenant = principal.tenant
                await gate.charge(principal, len(gen.prompt_ids) + gen.sampling.max_tokens * gen.choices)
                gen.ttft_slo_s = slo_s
                gen.profile = profile
                span.set_attribute("tessera.prompt_tokens", len(gen.prompt_ids))
                span.set_attributes(genai.request_attributes(self.operation, model_label, gen.sampling))
                if fields.stream:
                    span.set_attribute(genai.REQUEST_STREAM, True)
                timing = Timing.of(gen, self.state.flow, arrived)
                deltas = self.state.flow.stream(gen, stats)
                if fields.stream:
                    # Wait for the first delta before answering 200, so a request that
                    # cannot be placed still gets its proper status code.
                    first = await anext(deltas)
                    timing.delta(_has_tokens(first))
                    include_usage = bool(fields.stream_options and fields.stream_options.include_usage)
                    streaming = True
                    status = 200
                    return StreamingResponse(
                        self._sse(gen, stats, timing, first, deltas, include_usage, model_label, span),
                        media_type="text/event-stream",
                        headers={"X-Request-Id": request_id},
                    )
                text, finish, stop_reason, whole = await _collect_unless_disconnected(request, deltas, timing)
                timing.done(gen, stats)
                status = 200
                if gen.openai_request:  # vLLM's serving code wrote the response
                    return Response(
                        self.whole(whole, self.prefix + request_id),
                        media_type="application/json",
                        headers={"X-Request-Id": request_id},
                    )
                return JSONResponse(
                    {
                        "id": self.prefix + request_id,
                        "object": self.object,
                        "created": int(time.time()),
                        "model": model_label,
                        "choices": [self._choice(text, finish, stop_reason, True, stream=False)],
                        "usage": _usage(gen, stats),
                    },
                    headers={"X-Request-Id": request_id},
                )
        except ApiError as exc:
            status = exc.status
            record_error(span, str(exc.status), exc.message, exc.status >= 500)
            if exc.status >= 500:
                log.warning("%s: %s %s", self.path, exc.status, exc.message)
            return error_response(exc)
        except _ClientGone:
            status = 499
            record_error(span, "499", "the client closed the connection", server_fault=False)
            return Response(status_code=499)
        finally:
            log.debug("%s %s: %d in %.1f ms", self.path, model_label, status, (time.perf_counter() - arrived) * 1e3)
            if not streaming:
                metrics.IN_FLIGHT.dec()
                metrics.REQUESTS.labels(model_label, self.path, str(status)).inc()
                if gen is not None:
                    span.set_attributes(self._response_attributes(gen, stats, finish))
                span.set_attribute(_HTTP_STATUS, status)
                span.end()

    def _response_attributes(self, gen: Generation, stats: FlowStats, finish: str | None) -> genai.Attributes:
        return genai.response_attributes(
            self.prefix + gen.request_id,
            gen.model.name,
            finish,
            len(gen.prompt_ids),
            stats.completion_tokens,
            stats.cached_prompt_tokens,
        )

    async def _sse(
        self,
        gen: Generation,
        stats: FlowStats,
        timing: Timing,
        first: Delta,
        deltas: AsyncGenerator[Delta, None],
        include_usage: bool,
        model: str,
        span: trace.Span,
    ) -> AsyncIterator[bytes]:
        rid = self.prefix + gen.request_id
        created = int(time.time())
        obj = self.object + ".chunk" if self.chat else self.object
        status = "200"
        finish: str | None = None

        def chunk(payload: dict[str, Any]) -> bytes:
            return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"

        def base(choices: list[dict[str, Any]]) -> dict[str, Any]:
            out = {"id": rid, "object": obj, "created": created, "model": model, "choices": choices}
            if include_usage:
                out["usage"] = None
            return out

        try:
            delta, is_first = first, True
            while True:
                if gen.openai_request:  # vLLM's serving code wrote the chunks: relayed with our id
                    if delta.openai_body:
                        yield self.relay(delta.openai_body, rid)
                # A token that ends mid-character has no text yet: nothing to send.
                elif delta.text or delta.finish_reason or is_first:
                    yield chunk(
                        base([self._choice(delta.text, delta.finish_reason, delta.stop_reason, is_first, stream=True)])
                    )
                    is_first = False
                if delta.finish_reason:
                    finish = delta.finish_reason
                    break
                delta = await anext(deltas)
                timing.delta(_has_tokens(delta))
            timing.done(gen, stats)
            if include_usage and not gen.openai_request:
                final = base([])
                final["usage"] = _usage(gen, stats)
                yield chunk(final)
        except ApiError as exc:
            status = str(exc.status)
            record_error(span, status, exc.message, exc.status >= 500)
            log.warning("%s: stream of %s failed: %s", self.path, gen.request_id, exc.message)
            yield self.stream_error(exc)
        finally:
            try:
                await deltas.aclose()
            finally:
                metrics.IN_FLIGHT.dec()
                metrics.REQUESTS.labels(model, self.path, status).inc()
                span.set_attributes(self._response_attributes(gen, stats, finish))
                span.set_attribute(_HTTP_STATUS, 200)  # the status line went out before the stream
                span.end()
        if self.end_of_stream:
            yield self.end_of_stream


class _ClientGone(Exception):
    pass


def _has_tokens(delta: Delta) -> bool:
    """Whether a delta brings output (a chunk of vLLM's serving code counts as tokens arriving)."""
    return bool(delta.token_ids or delta.openai_body)


async def _collect_unless_disconnected(
    request: Request, deltas: AsyncGenerator[Delta, None], timing: Timing
) -> tuple[str, str | None, str, bytes]:
    """Gather a whole completion, abandoning it (and aborting the worker) if the client hangs up.
    The text, finish and stop reasons, and the response of vLLM's serving code if it wrote one."""

    async def collect() -> tuple[str, str | None, str, bytes]:
        parts: list[str] = []
        finish, stop_reason, whole = None, "", b""
        async for d in deltas:
            timing.delta(_has_tokens(d))
            parts.append(d.text)
            whole = d.openai_body or whole
            if d.finish_reason:
                finish, stop_reason = d.finish_reason, d.stop_reason
        return "".join(parts), finish, stop_reason, whole

    async def disconnected() -> None:
        while True:
            message = await request.receive()
            if message["type"] == "http.disconnect":
                return

    work = asyncio.ensure_future(collect())
    watch = asyncio.ensure_future(disconnected())
    try:
        done, _ = await asyncio.wait({work, watch}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watch.cancel()
    if work in done:
        return work.result()
    work.cancel()
    try:
        await work
    except (asyncio.CancelledError, Exception):  # noqa: BLE001
        pass
    await deltas.aclose()
    raise _ClientGone()
