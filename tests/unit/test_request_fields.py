"""Known OpenAI/vLLM fields the router does not honour yet are refused by name, never dropped."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.router.api_types import ChatCompletionRequest

MESSAGES = [{"role": "user", "content": "x"}]


@pytest.mark.parametrize(
    "field",
    [
        {"response_format": {"type": "json_object"}},
        {"tools": [{"type": "function", "function": {"name": "f"}}]},
        {"tool_choice": "required"},
        {"logit_bias": {"1": 5}},
        {"structured_outputs": {"regex": "a+"}},
        {"chat_template_kwargs": {"enable_thinking": False}},
    ],
)
def test_an_unsupported_field_is_refused_by_name(field):
    with pytest.raises(ValidationError, match=next(iter(field))):
        ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES, **field})


def test_values_that_ask_for_nothing_pass():
    ChatCompletionRequest.model_validate(
        {"model": "m", "messages": MESSAGES, "response_format": {"type": "text"}, "tool_choice": "none", "tools": []}
    )
