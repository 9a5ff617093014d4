"""OpenAI's /v1/embeddings: served by vLLM's pooling code on a worker whose model runs as an
embedding model (``--engine-arg runner=pooling``).

The router authenticates, tokenizes every input (each must fit the context; all of them are what
the tenant is charged and what the request is placed on), and relays vLLM's response with its own
id. A model whose workers generate text answers 400: its workers have no embedding code.
"""

from __future__ import annotations

import json
from typing import Any

from opentelemetry import context as otel_context

from services.router import openai_fields
from services.router.api_types import EmbeddingsRequest, SamplingFields
from services.router.errors import BadRequest
from services.router.flow import Generation
from services.router.generation_endpoint import Endpoint
from services.router.limits import Limits
from services.router.openai_request import validate
from services.router.preparation import tokenize_prompt
from services.router.state import RouterState
from tessera.v1 import common_pb2 as pb

EMBEDDINGS_PATH = "/v1/embeddings"


class EmbeddingsEndpoint(Endpoint):
    """/v1/embeddings: one whole response, never a stream."""

    def __init__(self, state: RouterState, limits: Limits) -> None:
        super().__init__(state, chat=False, limits=limits)
        self.path = EMBEDDINGS_PATH
        self.object = "list"
        self.prefix = "embd-"
        self.span_name = "router.v1.embeddings"

    def validate(self, body: dict[str, Any]) -> tuple[SamplingFields, openai_fields.Route]:
        fields: EmbeddingsRequest = validate(EmbeddingsRequest, body)
        try:
            openai_fields.refuse_unserved("embeddings", body)
        except openai_fields.RefusedField as exc:
            raise BadRequest(str(exc), param=exc.name) from None
        fields.stream = False  # not a field of the endpoint: the answer is one response
        return fields, openai_fields.Route(("input",))

    async def prepare(
        self, fields: SamplingFields, body: dict[str, Any], route: openai_fields.Route, request_id: str, session: str
    ) -> Generation:
        assert isinstance(fields, EmbeddingsRequest)
        entry = self.state.catalog.get(fields.model)
        tok = await self.state.catalog.tokenizer(entry)
        limit = entry.max_model_len
        ids: list[int] = []
        for i, one in enumerate(fields.inputs()):
            if isinstance(one, str) and limit and tok.min_tokens(len(one)) > limit:
                raise _too_long(i, tok.min_tokens(len(one)), limit)
            try:
                got = await tokenize_prompt(tok, one, self.state.tokenizing, limit)
            except BadRequest as exc:
                raise BadRequest(f"input[{i}]: {exc.message}", param="input") from None
            count = got if isinstance(got, int) else len(got)
            if limit and count > limit:
                raise _too_long(i, count, limit)
            assert isinstance(got, list)
            ids.extend(got)
        return Generation(
            request_id=request_id,
            model=entry,
            prompt_ids=ids,
            sampling=pb.SamplingParams(max_tokens=1),
            session_id=session or (fields.user or ""),
            priority=fields.priority,
            trace_context=otel_context.get_current(),
            openai_request=json.dumps(body, separators=(",", ":")).encode(),
            openai_endpoint=EMBEDDINGS_PATH,
            openai_fields=route.vllm_fields,
        )


def _too_long(index: int, tokens: int, limit: int) -> BadRequest:
    return BadRequest(
        f"input[{index}] has {tokens} tokens, more than this model's maximum context length of {limit} tokens",
        param="input",
        code="context_length_exceeded",
    )
