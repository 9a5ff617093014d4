"""OpenAI's /v1/responses, stateless: served by vLLM's own Responses code on a worker.

The router does what it does for chat: authenticates, renders the input as chat messages to
place the request on its tokens (prefix cache, session, SLO) and to check the context, retries a
worker that fails before the first event, and relays vLLM's answer with its own id. vLLM writes the
response and its typed event stream (text, tool calls, reasoning), so they are vLLM's.

Stateless: no response is stored, so whatever refers to an earlier one (``previous_response_id``,
``conversation``) or runs detached from the request (``background``) is refused by name. ``store``
is accepted and does nothing, as in vLLM without its response store.
"""

from __future__ import annotations

import json
from typing import Any

from services.router import openai_fields
from services.router.api_types import ResponsesRequest, SamplingFields
from services.router.errors import ApiError, BadRequest
from services.router.flow import Generation
from services.router.generation_endpoint import Endpoint
from services.router.limits import Limits
from services.router.openai_request import validate
from services.router.preparation import prepare
from services.router.state import RouterState

RESPONSES_PATH = "/v1/responses"
STATELESS = "Tessera's /v1/responses is stateless (no response is stored): send the whole conversation as input"
REFUSED = {
    "previous_response_id": STATELESS,
    "conversation": STATELESS,
    "background": "background responses need a response store; Tessera's /v1/responses is stateless",
}


class ResponsesEndpoint(Endpoint):
    """/v1/responses: the chat flow with the Responses request shape and event stream."""

    def __init__(self, state: RouterState, limits: Limits) -> None:
        super().__init__(state, chat=True, limits=limits)
        self.path = RESPONSES_PATH
        self.object = "response"
        self.prefix = "resp_"
        self.span_name = "router.v1.responses"

    def validate(self, body: dict[str, Any]) -> tuple[SamplingFields, openai_fields.Route]:
        fields: ResponsesRequest = validate(ResponsesRequest, body)
        for name, why in REFUSED.items():
            if body.get(name) not in (None, False):
                raise BadRequest(f"{name} is not supported: {why}", param=name)
        try:  # safety_identifier: placement affinity, as for chat
            openai_fields.refuse_unserved("responses", body, honoured=frozenset({"safety_identifier"}))
        except openai_fields.RefusedField as exc:
            raise BadRequest(str(exc), param=exc.name) from None
        # Every answer comes from vLLM's serving code: "input" is what needs it.
        return fields, openai_fields.Route(("input",))

    async def prepare(
        self, fields: SamplingFields, body: dict[str, Any], route: openai_fields.Route, request_id: str, session: str
    ) -> Generation:
        assert isinstance(fields, ResponsesRequest)
        tools = fields.chat_tools()
        gen = await prepare(
            self.state.catalog,
            fields,
            request_id,
            messages=fields.template_messages(),
            max_tokens=fields.max_output_tokens,
            session_id=session,
            tokenizing=self.state.tokenizing,
            template_kwargs={"tools": tools} if tools else None,
        )
        gen.openai_request = json.dumps(body, separators=(",", ":")).encode()
        gen.openai_endpoint = RESPONSES_PATH
        gen.openai_fields = route.vllm_fields
        return gen

    def whole(self, body: bytes, response_id: str) -> bytes:
        return with_response_id(body, response_id)

    def relay(self, body: bytes, response_id: str) -> bytes:
        """A typed event as OpenAI sends it: ``event: TYPE`` then its data."""
        event = json.loads(body)
        kind = str(event.get("type", "message")) if isinstance(event, dict) else "message"
        return f"event: {kind}\ndata: ".encode() + with_response_id(body, response_id) + b"\n\n"

    def stream_error(self, exc: ApiError) -> bytes:
        """Responses' ``error`` event."""
        err = exc.body()["error"]
        data = {"type": "error", "code": err.get("code"), "message": err["message"], "param": err.get("param")}
        return b"event: error\ndata: " + json.dumps(data, separators=(",", ":")).encode() + b"\n\n"

    end_of_stream = b""  # a Responses stream ends with its response.completed (or failed) event


def with_response_id(body: bytes, response_id: str) -> bytes:
    """A Response, or an event that carries one, with the router's id (the same whichever worker)."""
    data = json.loads(body)
    if not isinstance(data, dict):
        return body
    target = data["response"] if isinstance(data.get("response"), dict) else data
    if target is data and "type" in data and data.get("object") != "response":
        return body  # an event about a part of the response: its ids are the items'
    if "id" in target:
        target["id"] = response_id
        return json.dumps(data, separators=(",", ":")).encode()
    return body
