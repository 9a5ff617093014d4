"""Every field of OpenAI's and vLLM's request schemas is honoured or refused by name; none is dropped.

Router level, no vLLM: each field is sent with a value that asks for something, and must either
stay on the router's own path (where it sets what the worker gets), go to vLLM's serving code on a
worker (openai_fields.route names it), or be refused with an error naming it.
"""

from __future__ import annotations

import pytest

from services.router import openai_fields
from services.router.api_types import ChatCompletionRequest, CompletionRequest
from services.router.errors import BadRequest
from services.router.openai_request import validate_openai
from services.router.preparation import sampling_from_fields

MESSAGES = [{"role": "user", "content": "x"}]

# A value that asks for something, for fields whose type the router checks itself.
SAMPLES = {
    "model": "other",
    "max_tokens": 7,
    "max_completion_tokens": 7,
    "temperature": 0.5,
    "top_p": 0.5,
    "seed": 3,
    "stop": ["x"],
    "stream": True,
    "stream_options": {"include_usage": True},
    "presence_penalty": 1.0,
    "frequency_penalty": 1.0,
    "user": "u",
    "top_k": 5,
    "min_tokens": 1,
    "repetition_penalty": 1.1,
    "ignore_eos": True,
    "stop_token_ids": [2],
    "skip_special_tokens": False,
    "include_stop_str_in_output": True,
    "priority": 1,
    "request_id": "r",
    "session_id": "s",
    "prompt_cache_key": "k",
    "safety_identifier": "i",
    "messages": [{"role": "user", "content": "y"}],
    "prompt": "y",
    "add_generation_prompt": False,
    "n": 2,
    "logprobs": True,
    "top_logprobs": 2,
    "echo": True,
    "suffix": "s",
    "modalities": ["audio"],
    "service_tier": "flex",
    "best_of": 2,
}


def sample(chat: bool, name: str):
    if name in SAMPLES:
        value = SAMPLES[name]
        return 2 if (name == "logprobs" and not chat) else value
    default = openai_fields.vllm_default(chat, name)
    if isinstance(default, bool):
        return not default
    if isinstance(default, (int, float)):
        return default + 1
    if isinstance(default, str):
        return default + "x"
    return {"asks": "something"}


def base(chat: bool) -> dict:
    return {"model": "m", "messages": MESSAGES} if chat else {"model": "m", "prompt": "x"}


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completion"])
def test_every_known_field_is_classified(chat):
    unclassified = [n for n, how in openai_fields.classification(chat).items() if how == "unclassified"]
    assert not unclassified, f"classify these in services/router/openai_fields.py: {unclassified}"


@pytest.mark.parametrize("chat", [True, False], ids=["chat", "completion"])
def test_every_field_is_honoured_or_refused_by_name(chat):
    known = sorted(openai_fields.known_fields(chat))
    assert len(known) > 50  # both schemas are there
    plain_set = (openai_fields.PLAIN_CHAT if chat else openai_fields.PLAIN_COMPLETION) | set(openai_fields.PLAIN_WHEN)
    outcomes: dict[str, str] = {}
    for name in known:
        body = {**base(chat), name: sample(chat, name)}
        try:
            _, route = validate_openai(body, chat)
        except BadRequest as exc:
            assert exc.param == name and name in exc.message, (name, exc.message)
            outcomes[name] = "refused"
            continue
        if name in route.vllm_fields:
            outcomes[name] = "vllm"
        else:
            assert name in plain_set, f"{name} was neither served by the router, sent to vLLM nor refused"
            assert route.plain, (name, route)
            outcomes[name] = "router"
    assert set(outcomes.values()) == {"refused", "vllm", "router"}


@pytest.mark.parametrize(
    "field,value",
    [
        ("tools", [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]),
        ("tool_choice", "required"),
        ("response_format", {"type": "json_object"}),
        ("structured_outputs", {"regex": "a+"}),
        ("logit_bias", {"1": 5}),
        ("chat_template_kwargs", {"enable_thinking": False}),
        ("n", 2),
        ("logprobs", True),
        ("top_logprobs", 2),
        ("stream_options", {"include_usage": True, "continuous_usage_stats": True}),
    ],
)
def test_what_the_router_does_not_serve_itself_goes_to_vllm(field, value):
    _, route = validate_openai({**base(True), field: value}, chat=True)
    assert route.vllm_fields == (field,)


@pytest.mark.parametrize("field,value", [("echo", True), ("suffix", "!"), ("logprobs", 2), ("n", 3)])
def test_completion_fields_go_to_vllm(field, value):
    _, route = validate_openai({**base(False), field: value}, chat=False)
    assert route.vllm_fields == (field,)


@pytest.mark.parametrize(
    "field,value",
    [
        ("functions", [{"name": "f"}]),
        ("function_call", "auto"),
        ("kv_transfer_params", {"do_remote_decode": True}),
        ("store", True),
        ("audio", {"voice": "alloy", "format": "mp3"}),
        ("modalities", ["text", "audio"]),
        ("service_tier", "priority"),
        ("prediction", {"type": "content", "content": "x"}),
    ],
)
def test_refused_fields_are_named(field, value):
    with pytest.raises(BadRequest) as info:
        validate_openai({**base(True), field: value}, chat=True)
    assert info.value.status == 400 and info.value.param == field and field in info.value.message


def test_values_that_ask_for_nothing_stay_on_the_router_path():
    body = {
        **base(True),
        "response_format": None,
        "tool_choice": "none",
        "n": 1,
        "logprobs": False,
        "store": False,
        "modalities": ["text"],
        "service_tier": "auto",
        "stream_options": None,
        "parallel_tool_calls": True,
        "unknown_field": {"ignored": "as vLLM ignores it"},
    }
    _, route = validate_openai(body, chat=True)
    assert route.plain


def test_plain_sampling_fields_reach_the_worker():
    """The router's own fields change what the worker is asked for (none is parsed and dropped)."""
    names = [
        "temperature",
        "top_p",
        "seed",
        "stop",
        "presence_penalty",
        "frequency_penalty",
        "top_k",
        "min_tokens",
        "repetition_penalty",
        "ignore_eos",
        "stop_token_ids",
        "skip_special_tokens",
        "include_stop_str_in_output",
    ]
    plain = sampling_from_fields(ChatCompletionRequest.model_validate(base(True)), 10)
    for name in names:
        fields = ChatCompletionRequest.model_validate({**base(True), name: SAMPLES[name]})
        assert sampling_from_fields(fields, 10) != plain, name


def test_n_and_logprobs_are_range_checked_by_name():
    with pytest.raises(BadRequest, match="n"):
        validate_openai({**base(True), "n": 10_000}, chat=True)
    with pytest.raises(BadRequest, match="logprobs"):
        validate_openai({**base(False), "logprobs": -1}, chat=False)
    CompletionRequest.model_validate({**base(False), "logprobs": 5, "echo": True})


def test_tools_and_template_kwargs_reach_the_routers_chat_template():
    """Placement tokens include the tools, as vLLM's renderer includes them; a template that cannot
    render them still places the request (vLLM renders it and judges it)."""
    import asyncio

    from services.router.openai_request import template_kwargs
    from services.router.preparation import tokenize_chat
    from tessera.runtime.models.tokenizer import ChatTemplateError

    tools = [{"type": "function", "function": {"name": "f"}}]
    kwargs = template_kwargs({"tools": tools, "chat_template_kwargs": {"enable_thinking": False, "messages": []}})
    assert kwargs == {"tools": tools, "enable_thinking": False}

    class Template:
        def __init__(self, accepts_tools: bool) -> None:
            self.accepts_tools = accepts_tools

        def count_or_encode_chat(self, messages, add_generation_prompt, limit, **extra):
            if extra and not self.accepts_tools:
                raise ChatTemplateError("chat template: unknown tools")
            return [1, 2, 3] + ([4] * len(extra.get("tools", [])))

    assert asyncio.run(tokenize_chat(Template(True), MESSAGES, True, template_kwargs=kwargs)) == [1, 2, 3, 4]
    assert asyncio.run(tokenize_chat(Template(False), MESSAGES, True, template_kwargs=kwargs)) == [1, 2, 3]


def test_what_the_router_echoes_or_renders_cannot_break_it():
    """request_id goes back in a header; chat_template_kwargs into the router's own rendering call."""
    from services.router.openai_request import template_kwargs

    with pytest.raises(BadRequest) as info:
        validate_openai({**base(True), "request_id": "a\r\nSet-Cookie: x"}, chat=True)
    assert info.value.param == "request_id"
    assert template_kwargs({"chat_template_kwargs": {"limit": 1, "self": 2, "messages": [], "x": 3}}) == {"x": 3}
