"""OpenAI request bodies, validated with pydantic, plus vLLM's extra sampling fields.

Unknown fields are ignored (as vLLM does), so clients that send extras keep
working; invalid values of known fields get a 400 naming the field. Every
number is range-checked to what the wire format below can carry (NaN and
infinities are refused, integers fit their proto types), and lists a client
controls are capped, so nothing a client sends turns into a 500 further on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STOP = 64  # stop strings per request (OpenAI allows 4; vLLM does not cap)
MAX_STOP_CHARS = 1024
MAX_STOP_TOKEN_IDS = 1024
MAX_MESSAGES = 4096
MAX_MODEL_NAME_CHARS = 512


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    include_usage: bool = False


# Fields of OpenAI's or vLLM's request schema that Tessera does not honour yet (issue 15): a
# request that uses one is refused with a 400 naming it, never answered as if it were absent.
# A value that asks for nothing (response_format text, tool_choice none, empty lists) passes.
UNSUPPORTED_FIELDS = (
    "tools",
    "functions",
    "function_call",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "structured_outputs",
    "guided_json",
    "guided_regex",
    "guided_choice",
    "guided_grammar",
    "logit_bias",
    "top_logprobs",
    "chat_template_kwargs",
    "suffix",
)
_NEUTRAL: tuple[Any, ...] = (None, "", "none", "auto", False, 0, [], {}, {"type": "text"})


def refuse_unsupported(body: Any) -> Any:
    if isinstance(body, dict):
        for name in UNSUPPORTED_FIELDS:
            if body.get(name) not in _NEUTRAL:
                raise ValueError(f"{name} is not supported by this router yet; send the request without it")
    return body


class SamplingFields(BaseModel):
    """Fields shared by /v1/completions and /v1/chat/completions."""

    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    model: str = Field(min_length=1, max_length=MAX_MODEL_NAME_CHARS)
    max_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    temperature: float | None = Field(default=None, ge=0.0, le=2.0)
    top_p: float | None = Field(default=None, gt=0.0, le=1.0)
    seed: int | None = Field(default=None, ge=INT64_MIN, le=INT64_MAX)
    stop: str | list[str] | None = Field(default=None, max_length=MAX_STOP)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int = Field(default=1, ge=1, le=1)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    user: str | None = Field(default=None, max_length=256)
    # vLLM's extensions, accepted so vLLM clients and benchmarks work unchanged
    top_k: int | None = Field(default=None, ge=-1, le=INT32_MAX)
    min_tokens: int | None = Field(default=None, ge=0, le=INT32_MAX)
    repetition_penalty: float | None = Field(default=None, gt=0.0, le=100.0)
    ignore_eos: bool = False
    stop_token_ids: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] | None = Field(
        default=None, max_length=MAX_STOP_TOKEN_IDS
    )
    skip_special_tokens: bool | None = None
    include_stop_str_in_output: bool = False
    priority: int = Field(default=0, ge=-INT32_MAX, le=INT32_MAX)

    @model_validator(mode="before")
    @classmethod
    def _refuse_unsupported(cls, data: Any) -> Any:
        return refuse_unsupported(data)

    @field_validator("stop")
    @classmethod
    def _stop_list(cls, v: str | list[str] | None) -> list[str]:
        if v is None:
            return []
        stops = [v] if isinstance(v, str) else v
        if any(len(s) > MAX_STOP_CHARS for s in stops):
            raise ValueError(f"each stop string may hold at most {MAX_STOP_CHARS} characters")
        if any(not s for s in stops):
            raise ValueError("a stop string may not be empty")
        return stops


class CompletionRequest(SamplingFields):
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool = False
    logprobs: int | None = None
    suffix: str | None = None

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: int | None) -> None:
        if v is not None:
            raise ValueError("logprobs are not supported yet")
        return None

    @field_validator("echo")
    @classmethod
    def _no_echo(cls, v: bool) -> bool:
        if v:
            raise ValueError("echo is not supported")
        return v


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="ignore")
    type: str
    text: str | None = None

    @field_validator("type")
    @classmethod
    def _text_only(cls, v: str) -> str:
        if v != "text":
            raise ValueError(f"content parts of type {v[:40]!r} are not supported; this model takes text")
        return v


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")  # templates may use tool_calls, name, ...
    role: Literal["system", "user", "assistant", "tool", "developer"]
    content: str | list[ContentPart] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(part.text or "" for part in self.content)


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1, max_length=MAX_MESSAGES)
    max_completion_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    logprobs: bool = False
    add_generation_prompt: bool = True

    @field_validator("logprobs")
    @classmethod
    def _no_logprobs(cls, v: bool) -> bool:
        if v:
            raise ValueError("logprobs are not supported yet")
        return v

    def effective_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            d = m.model_dump(exclude_none=True)
            d["content"] = m.text()
            out.append(d)
        return out
