"""The router's side of /v1/responses: placement messages, refused fields and the router's ids."""

from __future__ import annotations

import json

import pytest

from services.router.api_types import ResponsesRequest
from services.router.errors import BadRequest
from services.router.limits import Limits
from services.router.responses_api import ResponsesEndpoint, with_response_id


def test_input_becomes_the_chat_messages_vllm_will_render():
    text = ResponsesRequest.model_validate({"model": "m", "input": "Hi", "instructions": "Be brief."})
    assert text.template_messages() == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    items = ResponsesRequest.model_validate(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": [{"type": "input_text", "text": "Weather?"}]},
                {"type": "function_call", "call_id": "c1", "name": "w", "arguments": '{"city":"Rome"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            ],
            "tools": [{"type": "function", "name": "w", "parameters": {"type": "object"}}],
        }
    )
    assert [m["role"] for m in items.template_messages()] == ["user", "assistant", "tool"]
    assert items.template_messages()[2]["content"] == "sunny"
    assert items.chat_tools() == [{"type": "function", "function": {"name": "w", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    "field, value", [("previous_response_id", "resp_1"), ("conversation", "conv_1"), ("background", True)]
)
def test_what_needs_a_stored_response_is_refused_by_name(field, value):
    endpoint = ResponsesEndpoint(state=None, limits=Limits())  # type: ignore[arg-type]  # validate needs no state
    with pytest.raises(BadRequest) as info:
        endpoint.validate({"model": "m", "input": "Hi", field: value})
    assert info.value.param == field and "stateless" in info.value.message
    fields, route = endpoint.validate({"model": "m", "input": "Hi", "background": False, "store": True})
    assert route.vllm_fields == ("input",)


def test_the_response_and_the_events_carrying_it_get_the_routers_id():
    rid = "resp_abc"
    whole = json.loads(with_response_id(b'{"id":"resp_engine-1","object":"response","output":[]}', rid))
    assert whole["id"] == rid
    created = json.loads(with_response_id(b'{"type":"response.created","response":{"id":"resp_x"}}', rid))
    assert created["response"]["id"] == rid
    delta = b'{"type":"response.output_text.delta","item_id":"msg_1","delta":"Hi"}'
    assert with_response_id(delta, rid) == delta  # about an item: its own id stays


@pytest.mark.parametrize(
    "field, value",
    [
        ("image", {"size": "1024x1024"}),
        ("context_management", [{"type": "compaction"}]),
        ("prompt_cache_retention", "24h"),
    ],
)
def test_openai_fields_vllm_would_ignore_are_refused_by_name(field, value):
    """Fields of OpenAI's Responses schema that vLLM's lacks: refused, never silently dropped."""
    endpoint = ResponsesEndpoint(state=None, limits=Limits())  # type: ignore[arg-type]
    with pytest.raises(BadRequest) as info:
        endpoint.validate({"model": "m", "input": "Hi", field: value})
    assert info.value.param == field and "vLLM" in info.value.message
    # Left at their defaults they ask for nothing
    endpoint.validate({"model": "m", "input": "Hi", field: None, "stream_options": {"include_obfuscation": False}})
