"""From a validated client request to a Generation: tokenize once, check the context, fix sampling.

Shared by the HTTP (OpenAI) and gRPC front ends so both apply the same rules.
"""

from __future__ import annotations

import time
from typing import Any

from opentelemetry import context as otel_context

from services.router import metrics
from services.router.api_types import SamplingFields
from services.router.errors import BadRequest
from services.router.flow import Generation
from services.router.model_catalog import ModelCatalog, ModelEntry
from tessera.runtime.models.tokenizer import ChatTemplateError, ModelTokenizer
from tessera.v1 import common_pb2 as pb


def sampling_from_fields(f: SamplingFields, max_tokens: int) -> pb.SamplingParams:
    sp = pb.SamplingParams(
        max_tokens=max_tokens,
        stop=list(f.stop or []),
        stop_token_ids=list(f.stop_token_ids or []),
        ignore_eos=f.ignore_eos,
        presence_penalty=f.presence_penalty,
        frequency_penalty=f.frequency_penalty,
        include_stop_str_in_output=f.include_stop_str_in_output,
    )
    for name in ("temperature", "top_p", "top_k", "seed", "min_tokens", "repetition_penalty", "skip_special_tokens"):
        value = getattr(f, name)
        if value is not None:
            setattr(sp, name, value)
    return sp


def check_context(entry: ModelEntry, prompt_tokens: int, max_tokens: int | None, what: str = "messages") -> int:
    """The max_tokens to use; a 400 in vLLM's words when the request cannot fit the context."""
    limit = entry.max_model_len
    if not limit:
        return max_tokens or 16
    if max_tokens is None:
        if prompt_tokens >= limit:
            raise BadRequest(
                f"This model's maximum context length is {limit} tokens. However, your request has "
                f"{prompt_tokens} input tokens. Please reduce the length of the input {what}.",
                param="messages" if what == "messages" else "prompt",
                code="context_length_exceeded",
            )
        return limit - prompt_tokens
    if prompt_tokens + max_tokens > limit:
        raise BadRequest(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the {what}, {max_tokens} in the "
            f"completion). Please reduce the length of the {what} or completion.",
            param="max_tokens" if prompt_tokens < limit else ("messages" if what == "messages" else "prompt"),
            code="context_length_exceeded",
        )
    return max_tokens


async def tokenize_chat(tok: ModelTokenizer, messages: list[dict[str, Any]], add_generation_prompt: bool) -> list[int]:
    started = time.perf_counter()
    try:
        ids = tok.encode_chat(messages, add_generation_prompt=add_generation_prompt)
    except ChatTemplateError as exc:
        raise BadRequest(str(exc), param="messages") from None
    metrics.TOKENIZE_SECONDS.observe(time.perf_counter() - started)
    return ids


def tokenize_prompt(tok: ModelTokenizer, prompt: str | list[int] | list[str] | list[list[int]]) -> list[int]:
    """A completion prompt: text, token ids, or a batch of one of either."""
    started = time.perf_counter()
    one: str | list[int]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise BadRequest("batched prompts are not supported; send one request per prompt", param="prompt")
        one = prompt[0]  # a batch of one: its only prompt, text or ids
    else:
        one = prompt  # type: ignore[assignment]  # not a batch: text, or ids
    if isinstance(one, str):
        ids = tok.encode(one, add_special_tokens=True)
    else:
        vocab = tok.tokenizer.get_vocab_size()
        if any(not (0 <= t < vocab) for t in one):
            raise BadRequest(f"prompt token ids must be in [0, {vocab})", param="prompt")
        ids = list(one)
    if not ids:
        raise BadRequest("the prompt is empty", param="prompt")
    metrics.TOKENIZE_SECONDS.observe(time.perf_counter() - started)
    return ids


async def prepare(
    catalog: ModelCatalog,
    fields: SamplingFields,
    request_id: str,
    *,
    messages: list[dict[str, Any]] | None = None,
    prompt: Any = None,
    max_tokens: int | None = None,
    add_generation_prompt: bool = True,
    session_id: str = "",
) -> Generation:
    entry = catalog.get(fields.model)
    tok = await catalog.tokenizer(entry)
    if messages is not None:
        ids = await tokenize_chat(tok, messages, add_generation_prompt)
        what = "messages"
    else:
        ids = tokenize_prompt(tok, prompt)
        what = "prompt"
    final_max = check_context(entry, len(ids), max_tokens, what)
    return Generation(
        request_id=request_id,
        model=entry,
        prompt_ids=ids,
        sampling=sampling_from_fields(fields, final_max),
        session_id=session_id or (fields.user or ""),
        priority=fields.priority,
        trace_context=otel_context.get_current(),
    )
