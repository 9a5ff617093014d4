"""OpenAI request bodies, validated with pydantic, plus vLLM's extra sampling fields.

These models hold what the router itself serves; every other field of OpenAI's or vLLM's
schema is honoured by vLLM's serving code on a worker or refused by name (openai_fields.py).
Unknown fields are ignored (as vLLM does), so clients that send extras keep
working; invalid values of known fields get a 400 naming the field. Every
number is range-checked to what the wire format below can carry (NaN and
infinities are refused, integers fit their proto types), and lists a client
controls are capped, so nothing a client sends turns into a 500 further on.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

INT32_MAX = 2**31 - 1
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
MAX_STOP = 64  # stop strings per request (OpenAI allows 4; vLLM does not cap)
MAX_STOP_CHARS = 1024
MAX_STOP_TOKEN_IDS = 1024
MAX_MESSAGES = 4096
MAX_MODEL_NAME_CHARS = 512
MAX_ID_CHARS = 256
MAX_CHOICES = 128  # n: more choices than this is refused (vLLM does not cap it)


class StreamOptions(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)
    include_usage: bool = False


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
    n: int = Field(default=1, ge=1, le=MAX_CHOICES)  # n > 1: vLLM's serving code (openai_fields.py)
    presence_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    frequency_penalty: float = Field(default=0.0, ge=-2.0, le=2.0)
    user: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    # Placement affinity (as X-Session-Id) and the response id (as X-Request-Id): vLLM's and OpenAI's names
    session_id: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    prompt_cache_key: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    safety_identifier: str | None = Field(default=None, max_length=MAX_ID_CHARS)
    # echoed in the X-Request-Id response header: visible ASCII only
    request_id: str | None = Field(default=None, max_length=MAX_ID_CHARS, pattern=r"^[!-~]+$")
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
    # Served by vLLM on a worker when set (openai_fields.py); only their types are checked here.
    echo: bool | None = False
    logprobs: int | None = Field(default=None, ge=0, le=INT32_MAX)
    suffix: str | None = None


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
    logprobs: bool | None = False  # true: vLLM's serving code on a worker (openai_fields.py)
    add_generation_prompt: bool = True

    def effective_max_tokens(self) -> int | None:
        return self.max_completion_tokens if self.max_completion_tokens is not None else self.max_tokens

    def template_messages(self) -> list[dict[str, Any]]:
        out = []
        for m in self.messages:
            d = m.model_dump(exclude_none=True)
            d["content"] = m.text()
            out.append(d)
        return out


class TokenizeRequest(BaseModel):
    """vLLM's /tokenize: a text prompt or chat messages (model may be left out with one model served)."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, max_length=MAX_MODEL_NAME_CHARS)
    prompt: str | None = None
    messages: list[ChatMessage] | None = Field(default=None, min_length=1, max_length=MAX_MESSAGES)
    add_special_tokens: bool = True
    add_generation_prompt: bool = True
    return_token_strs: bool = False


class DetokenizeRequest(BaseModel):
    """vLLM's /detokenize."""

    model_config = ConfigDict(extra="ignore")
    model: str | None = Field(default=None, max_length=MAX_MODEL_NAME_CHARS)
    tokens: list[Annotated[int, Field(ge=0, le=INT32_MAX)]] = Field(max_length=1_000_000)


class ResponsesRequest(SamplingFields):
    """OpenAI's /v1/responses (stateless). The router reads what it needs to place and check the
    request; vLLM's serving code on the worker validates and serves the whole body."""

    input: str | list[dict[str, Any]] = Field(min_length=1, max_length=MAX_MESSAGES)
    instructions: str | None = None
    max_output_tokens: int | None = Field(default=None, ge=1, le=INT32_MAX)
    tools: list[dict[str, Any]] | None = Field(default=None, max_length=MAX_MESSAGES)
    previous_response_id: str | None = None
    conversation: Any = None
    background: bool | None = False
    stream: bool | None = False  # type: ignore[assignment]  # OpenAI's schema allows null here

    def template_messages(self) -> list[dict[str, Any]]:
        """The conversation as chat messages, for the placement tokens (vLLM renders the real prompt)."""
        out: list[dict[str, Any]] = [{"role": "system", "content": self.instructions}] if self.instructions else []
        items: list[dict[str, Any]] = (
            [{"role": "user", "content": self.input}] if isinstance(self.input, str) else self.input
        )
        for item in items:
            kind = item.get("type", "message")
            if kind == "message" and isinstance(item.get("role"), str):
                out.append({"role": item["role"], "content": _input_text(item.get("content"))})
            elif kind == "function_call":
                out.append({"role": "assistant", "content": str(item.get("arguments", ""))})
            elif kind == "function_call_output":
                out.append({"role": "tool", "content": str(item.get("output", ""))})
        return out or [{"role": "user", "content": ""}]

    def chat_tools(self) -> list[dict[str, Any]]:
        """Function tools in chat completions' shape, which chat templates render."""
        return [
            {"type": "function", "function": {k: v for k, v in t.items() if k != "type"}}
            for t in self.tools or ()
            if isinstance(t, dict) and t.get("type") == "function"
        ]


def _input_text(content: Any) -> str:
    """The text of a Responses message's content: a string, or parts of input_text/output_text."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return ""


MAX_EMBEDDING_INPUTS = 2048  # inputs in one /v1/embeddings request (OpenAI's limit)


class EmbeddingsRequest(SamplingFields):
    """OpenAI's /v1/embeddings. The router reads the input to place and check the request; vLLM's
    pooling serving code validates and serves the whole body (encoding_format, dimensions, ...)."""

    input: str | list[str] | list[int] | list[list[int]] = Field(min_length=1, max_length=MAX_EMBEDDING_INPUTS)

    def inputs(self) -> list[str | list[int]]:
        """One entry per embedding asked for: a text or token ids."""
        if isinstance(self.input, str):
            return [self.input]
        if self.input and isinstance(self.input[0], int):
            return [self.input]  # one prompt of token ids
        return list(self.input)  # type: ignore[arg-type]  # texts, or prompts of ids
