"""The Router gRPC API: the same flow as the HTTP API for clients in any language."""

from __future__ import annotations

import time
import uuid
from typing import Any

import grpc
from opentelemetry import trace
from pydantic import ValidationError

from services.router import metrics, openai_fields
from services.router.api_types import SamplingFields
from services.router.errors import ApiError, BadRequest
from services.router.flow import FlowStats, Generation
from services.router.generation_endpoint import Endpoint
from services.router.limits import Limits, parse_json
from services.router.openai_endpoints import openai_endpoints
from services.router.openai_request import CHAT_PATH, COMPLETION_PATH, session_of
from services.router.preparation import prepare
from services.router.responses_api import RESPONSES_PATH
from services.router.state import RouterState
from services.router.timing import Timing
from tessera.runtime.rpc.enums import finish_reason_value
from tessera.runtime.telemetry import genai
from tessera.runtime.telemetry.tracing import client_context, metadata_values, record_error, tracer
from tessera.v1 import common_pb2 as pb
from tessera.v1 import router_pb2, router_pb2_grpc

_SCALARS = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "seed",
    "min_tokens",
    "repetition_penalty",
    "skip_special_tokens",
    "presence_penalty",
    "frequency_penalty",
    "ignore_eos",
    "include_stop_str_in_output",
)


def _fields(request: router_pb2.RouterGenerateRequest) -> SamplingFields:
    """Validate the sampling message with the same rules as the HTTP API."""
    sp = request.sampling
    # Only the fields the client set (proto3 optional presence), as the HTTP API sees a JSON body.
    data: dict = {f.name: v for f, v in sp.ListFields() if f.name in _SCALARS}
    if sp.stop:
        data["stop"] = list(sp.stop)
    if sp.stop_token_ids:
        data["stop_token_ids"] = list(sp.stop_token_ids)
    data["model"] = request.model
    data["priority"] = request.priority
    try:
        return SamplingFields.model_validate(data)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = ".".join(str(p) for p in error["loc"]) or "sampling"
        raise BadRequest(f"{loc}: {error['msg']}") from None


def _authorization(context: grpc.aio.ServicerContext) -> str | None:
    """The `authorization` metadata ("Bearer KEY"), as the HTTP API reads the Authorization header."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization":
            return value if isinstance(value, str) else value.decode()
    return None


class RouterServicer(router_pb2_grpc.RouterServicer):
    def __init__(self, state: RouterState) -> None:
        self.state = state
        self._tracer = tracer("tessera.router")
        # The HTTP API's endpoints, for their validation, preparation and response ids.
        self._endpoints = openai_endpoints(state, Limits())

    async def Generate(self, request: router_pb2.RouterGenerateRequest, context: grpc.aio.ServicerContext):
        arrived = time.perf_counter()
        # A child of the caller's span when the metadata carries a traceparent. Not made the
        # current span: this generator may be finalised in another context, where detaching
        # fails; the flow's spans hang under it through gen.trace_context.
        parent = client_context(metadata_values(context.invocation_metadata()))
        span = self._tracer.start_span("router.grpc_generate", context=parent, kind=trace.SpanKind.SERVER)
        status = "OK"
        model_label = "unknown"
        gen: Generation | None = None
        stats = FlowStats()
        finish: str | None = None
        metrics.IN_FLIGHT.inc()
        try:
            gate = self.state.gate
            principal = await gate.authenticate(_authorization(context))
            which: str | None = "openai"
            endpoint: Endpoint | None = None
            if request.openai_request_json:
                gen, endpoint = await self._prepare_openai(request, principal)
            else:
                gen, which = await self._prepare(request, principal)
            model_label = gen.model.name
            gen.tenant = principal.tenant
            gen.trace_context = trace.set_span_in_context(span, parent)
            request_id = gen.request_id
            span.set_attribute("tessera.request_id", request_id)
            span.set_attribute("tessera.tenant", principal.tenant)
            chat = which == "chat" or gen.openai_endpoint in (CHAT_PATH, RESPONSES_PATH)
            operation = genai.CHAT if chat else genai.TEXT_COMPLETION
            prefix = endpoint.prefix if endpoint else ("chatcmpl-" if chat else "cmpl-")
            response_id = prefix + gen.request_id
            span.set_attributes(genai.request_attributes(operation, model_label, gen.sampling))
            span.set_attribute(genai.REQUEST_STREAM, True)
            await gate.charge(principal, len(gen.prompt_ids) + gen.sampling.max_tokens * gen.choices)
            timing = Timing.of(gen, self.state.flow, arrived)
            async for delta in self.state.flow.stream(gen, stats):
                timing.delta(bool(delta.token_ids or delta.openai_body))
                finish = delta.finish_reason or finish
                out = router_pb2.RouterGenerateResponse(
                    request_id=request_id,
                    delta=pb.TokenDelta(token_ids=delta.token_ids, text=delta.text),
                    worker_id=delta.worker_id,
                )
                if delta.openai_body and endpoint is not None:
                    out.openai_json = endpoint.whole(delta.openai_body, response_id).decode()
                if delta.finish_reason:
                    out.finish_reason = finish_reason_value(delta.finish_reason)
                    out.usage.CopyFrom(
                        pb.Usage(
                            prompt_tokens=len(gen.prompt_ids),
                            completion_tokens=stats.completion_tokens,
                            cached_prompt_tokens=stats.cached_prompt_tokens,
                        )
                    )
                yield out
            timing.done(gen, stats)
        except ApiError as exc:
            status = exc.grpc_code.name
            record_error(span, status, exc.message, server_fault=exc.status >= 500)
            if exc.retry_after:
                context.set_trailing_metadata((("retry-after", str(max(1, round(exc.retry_after)))),))
            await context.abort(exc.grpc_code, exc.message)
        finally:
            metrics.IN_FLIGHT.dec()
            metrics.REQUESTS.labels(model_label, "grpc:Generate", status).inc()
            if gen is not None:
                span.set_attributes(
                    genai.response_attributes(
                        gen.request_id,
                        model_label,
                        finish,
                        len(gen.prompt_ids),
                        stats.completion_tokens,
                        stats.cached_prompt_tokens,
                    )
                )
            span.end()

    async def _prepare_openai(
        self, request: router_pb2.RouterGenerateRequest, principal: Any
    ) -> tuple[Generation, Endpoint]:
        """An OpenAI request body: validated and prepared by the HTTP API's endpoint for it, always
        served by vLLM's serving code (its chunks or events are what the client asked for)."""
        try:
            body = parse_json(request.openai_request_json.encode())
        except ApiError as exc:
            raise BadRequest(f"openai_request_json: {exc.message}", param="openai_request_json") from None
        path = request.openai_endpoint or (
            CHAT_PATH if "messages" in body else RESPONSES_PATH if "input" in body else COMPLETION_PATH
        )
        endpoint = self._endpoints.get(path)
        if endpoint is None:
            names = ", ".join(self._endpoints)
            raise BadRequest(f"openai_endpoint must be one of {names}", param="openai_endpoint")
        fields, route = endpoint.validate(body)
        self.state.gate.authorize(principal, fields.model, fields.priority, slo_header=False, profile_header=False)
        request_id = request.request_id or fields.request_id or uuid.uuid4().hex
        to_vllm = openai_fields.Route(route.vllm_fields or ("openai_request_json",))
        gen = await endpoint.prepare(fields, body, to_vllm, request_id, session_of(fields, request.session_id))
        return gen, endpoint

    async def _prepare(
        self, request: router_pb2.RouterGenerateRequest, principal: Any
    ) -> tuple[Generation, str | None]:
        fields = _fields(request)
        self.state.gate.authorize(principal, fields.model, fields.priority, slo_header=False, profile_header=False)
        request_id = request.request_id or uuid.uuid4().hex
        max_tokens = request.sampling.max_tokens if request.sampling.HasField("max_tokens") else None
        which = request.WhichOneof("prompt")
        if which == "chat":
            messages = [{"role": m.role, "content": m.content} for m in request.chat.messages]
            if not messages:
                raise BadRequest("chat.messages is empty", param="messages")
            gen = await prepare(
                self.state.catalog,
                fields,
                request_id,
                messages=messages,
                max_tokens=max_tokens,
                session_id=request.session_id,
                tokenizing=self.state.tokenizing,
            )
        elif which == "text":
            gen = await prepare(
                self.state.catalog,
                fields,
                request_id,
                prompt=request.text,
                max_tokens=max_tokens,
                session_id=request.session_id,
                tokenizing=self.state.tokenizing,
            )
        elif which == "token_ids":
            gen = await prepare(
                self.state.catalog,
                fields,
                request_id,
                prompt=list(request.token_ids.ids),
                max_tokens=max_tokens,
                session_id=request.session_id,
                tokenizing=self.state.tokenizing,
            )
        else:
            raise BadRequest("one of text, chat or token_ids is required", param="prompt")
        return gen, which

    async def ListModels(self, request: router_pb2.ListModelsRequest, context: grpc.aio.ServicerContext):
        try:
            principal = await self.state.gate.authenticate(_authorization(context))
        except ApiError as exc:
            await context.abort(exc.grpc_code, exc.message)
        return router_pb2.ListModelsResponse(
            models=[
                router_pb2.ModelInfo(id=m.name, max_model_len=m.max_model_len, workers=len(m.workers))
                for m in self.state.catalog.models.values()
                if principal.may_use(m.name)
            ]
        )
