"""An OpenAI request body to a Generation, shared by the HTTP API and gRPC's openai_request_json.

The router validates what it serves itself (api_types.py), refuses by name what nobody serves,
and hands a request that uses vLLM-only features to vLLM's serving code on a worker as its JSON
body (openai_fields.py), while it still tokenizes the prompt to place it.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ValidationError

from services.router import openai_fields
from services.router.api_types import ChatCompletionRequest, CompletionRequest, SamplingFields
from services.router.errors import BadRequest
from services.router.flow import Generation
from services.router.preparation import prepare
from services.router.state import RouterState

CHAT_PATH, COMPLETION_PATH = "/v1/chat/completions", "/v1/completions"


def validate(model: type[BaseModel], body: dict[str, Any]) -> Any:
    """The body as ``model``; a 400 naming the first invalid field."""
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        errors = exc.errors()
        # A union (content: str | list of parts) reports one error per branch: the one a
        # validator of ours raised says what is wrong; "should be a valid string" does not.
        err = next((e for e in errors if e["type"] == "value_error"), errors[0])
        loc = ".".join(str(p) for p in err["loc"]) or "body"
        msg = err["msg"].removeprefix("Value error, ")
        raise BadRequest(f"{loc}: {msg}", param=str(err["loc"][0]) if err["loc"] else None) from None


def validate_openai(body: dict[str, Any], chat: bool) -> tuple[SamplingFields, openai_fields.Route]:
    """The router's fields and the path that serves the request; a 400 naming a refused field."""
    fields = validate(ChatCompletionRequest if chat else CompletionRequest, body)
    try:
        route = openai_fields.route(body, chat)
    except openai_fields.RefusedField as exc:
        raise BadRequest(str(exc), param=exc.name) from None
    return fields, route


def session_of(fields: SamplingFields, header: str) -> str:
    """Placement affinity: the X-Session-Id header, else vLLM's session_id, OpenAI's prompt_cache_key,
    user or safety_identifier (prepare() falls back to user itself)."""
    return header or fields.session_id or fields.prompt_cache_key or fields.user or fields.safety_identifier or ""


async def prepare_openai(
    state: RouterState,
    fields: SamplingFields,
    body: dict[str, Any],
    chat: bool,
    to_vllm: tuple[str, ...],
    request_id: str,
    session: str,
) -> Generation:
    """Tokenize and check the request; with ``to_vllm`` (the fields that need it), its body rides
    along for vLLM's serving code."""
    if chat:
        assert isinstance(fields, ChatCompletionRequest)
        gen = await prepare(
            state.catalog,
            fields,
            request_id,
            messages=fields.template_messages(),
            max_tokens=fields.effective_max_tokens(),
            add_generation_prompt=fields.add_generation_prompt,
            session_id=session,
            tokenizing=state.tokenizing,
            template_kwargs=template_kwargs(body) if to_vllm else None,
        )
    else:
        assert isinstance(fields, CompletionRequest)
        gen = await prepare(
            state.catalog,
            fields,
            request_id,
            prompt=fields.prompt,
            max_tokens=fields.max_tokens,
            session_id=session,
            tokenizing=state.tokenizing,
        )
    gen.choices = fields.n
    if to_vllm:
        gen.openai_request = json.dumps(body, separators=(",", ":")).encode()
        gen.openai_endpoint = CHAT_PATH if chat else COMPLETION_PATH
        gen.openai_fields = to_vllm
    return gen


def template_kwargs(body: dict[str, Any]) -> dict[str, Any]:
    """What vLLM's renderer adds to the chat template: the tools and the client's template kwargs."""
    extra = body.get("chat_template_kwargs")
    out = {k: v for k, v in extra.items() if k not in _TEMPLATE_OWN} if isinstance(extra, dict) else {}
    if isinstance(body.get("tools"), list) and body["tools"]:
        out["tools"] = body["tools"]
    return out


# Names the router's own rendering call and template already use (a client's kwargs may not override them).
_TEMPLATE_OWN = frozenset({"self", "messages", "add_generation_prompt", "limit", "bos_token", "eos_token"})


def with_id(body: bytes, response_id: str) -> bytes:
    """vLLM's chunk or response with the router's id (the same for every chunk, whichever worker)."""
    data = json.loads(body)
    if isinstance(data, dict) and "id" in data:
        data["id"] = response_id
        return json.dumps(data, separators=(",", ":")).encode()
    return body
