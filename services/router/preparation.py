"""From a validated client request to a Generation: tokenize once, check the context, fix sampling.

Shared by the HTTP (OpenAI) and gRPC front ends so both apply the same rules.

Tokenizing a long prompt takes seconds (about 0.5 s per MB of text), so it
never runs on the event loop: a text that cannot fit the context whatever
its tokens is refused from its length alone, short texts are tokenized in
place (well under a millisecond), and the rest in a small pool of threads
(the tokenizer releases the GIL), where a flood of long prompts waits for
its turn without holding up anyone else's request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from opentelemetry import context as otel_context

from services.router import metrics
from services.router.api_types import SamplingFields
from services.router.errors import BadRequest
from services.router.flow import Generation
from services.router.model_catalog import ModelCatalog, ModelEntry
from tessera.runtime.models.tokenizer import ChatTemplateError, ModelTokenizer
from tessera.v1 import common_pb2 as pb

INLINE_CHARS = 4096  # texts this short are tokenized on the event loop: cheaper than a thread hop
_R = TypeVar("_R")


class Tokenizing:
    """Where tokenizing runs: in place for short texts, in a bounded pool of threads otherwise."""

    def __init__(self, threads: int = 2) -> None:
        self._pool: ThreadPoolExecutor | None = (
            ThreadPoolExecutor(max_workers=threads, thread_name_prefix="tokenize") if threads else None
        )

    @classmethod
    def inline(cls) -> Tokenizing:
        """Everything on the caller's thread (tests and tools without an event loop to protect)."""
        return cls(threads=0)

    async def run(self, chars: int, fn: Callable[..., _R], *args: Any, **kwargs: Any) -> _R:
        if chars <= INLINE_CHARS or self._pool is None:
            return fn(*args, **kwargs)
        pool = self._pool
        return await asyncio.get_running_loop().run_in_executor(pool, lambda: fn(*args, **kwargs))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)


def _text_chars(value: Any) -> int:
    """Characters of text in a prompt or a list of chat messages (token-id prompts count 0)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, list):
        return sum(_text_chars(v) for v in value)
    if isinstance(value, dict):
        return _text_chars(value.get("content"))
    return 0


def precheck_length(entry: ModelEntry, tok: ModelTokenizer, chars: int, what: str) -> None:
    """Refuse, without tokenizing, a text that holds more tokens than the context whatever they are."""
    limit = entry.max_model_len
    at_least = tok.min_tokens(chars)
    if limit and at_least >= limit:
        raise BadRequest(
            f"This model's maximum context length is {limit} tokens. However, your request has at least "
            f"{at_least} input tokens ({chars} characters). Please reduce the length of the input {what}.",
            param="messages" if what == "messages" else "prompt",
            code="context_length_exceeded",
        )


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


async def tokenize_chat(
    tok: ModelTokenizer,
    messages: list[dict[str, Any]],
    add_generation_prompt: bool,
    tokenizing: Tokenizing | None = None,
    chars: int = 0,
    limit: int = 0,
    template_kwargs: dict[str, Any] | None = None,
) -> list[int] | int:
    """The ids, or only their number when over `limit` (the request will be refused).

    ``template_kwargs`` (tools, chat_template_kwargs of a request for vLLM's serving code) make the
    placement tokens those vLLM will see; a template that cannot render them is rendered without
    (vLLM renders the request itself and says what is wrong with it)."""
    started = time.perf_counter()
    tokenizing = tokenizing or Tokenizing.inline()
    try:
        try:
            ids = await tokenizing.run(
                chars, tok.count_or_encode_chat, messages, add_generation_prompt, limit, **(template_kwargs or {})
            )
        except Exception:  # the client's tools or kwargs, whatever they make the template do
            if not template_kwargs:
                raise
            ids = await tokenizing.run(chars, tok.count_or_encode_chat, messages, add_generation_prompt, limit)
    except ChatTemplateError as exc:
        raise BadRequest(str(exc), param="messages") from None
    metrics.TOKENIZE_SECONDS.observe(time.perf_counter() - started)
    return ids


async def tokenize_prompt(
    tok: ModelTokenizer,
    prompt: str | list[int] | list[str] | list[list[int]],
    tokenizing: Tokenizing | None = None,
    limit: int = 0,
) -> list[int] | int:
    """A completion prompt: text, token ids, or a batch of one of either. The ids, or only their
    number when over `limit` (the request will be refused)."""
    started = time.perf_counter()
    one: str | list[int]
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise BadRequest("batched prompts are not supported; send one request per prompt", param="prompt")
        one = prompt[0]  # a batch of one: its only prompt, text or ids
    else:
        one = prompt  # type: ignore[assignment]  # not a batch: text, or ids
    ids: list[int] | int
    if isinstance(one, str):
        ids = await (tokenizing or Tokenizing.inline()).run(len(one), tok.count_or_encode, one, True, limit)
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
    tokenizing: Tokenizing | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> Generation:
    entry = catalog.get(fields.model)
    tok = await catalog.tokenizer(entry)
    what = "messages" if messages is not None else "prompt"
    chars = _text_chars(messages if messages is not None else prompt)
    precheck_length(entry, tok, chars, what)
    if messages is not None:
        ids = await tokenize_chat(
            tok, messages, add_generation_prompt, tokenizing, chars, entry.max_model_len, template_kwargs
        )
    else:
        ids = await tokenize_prompt(tok, prompt, tokenizing, entry.max_model_len)
    if isinstance(ids, int):  # longer than the context: only counted
        check_context(entry, ids, max_tokens, what)
        raise BadRequest(f"the {what} hold {ids} tokens, more than the context", param=what)
    vocab = tok.tokenizer.get_vocab_size()
    if fields.stop_token_ids and max(fields.stop_token_ids) >= vocab:
        raise BadRequest(f"stop_token_ids must be in [0, {vocab})", param="stop_token_ids")
    final_max = check_context(entry, len(ids), max_tokens, what)
    if fields.min_tokens and fields.min_tokens > final_max:
        raise BadRequest(f"min_tokens ({fields.min_tokens}) is more than max_tokens ({final_max})", param="min_tokens")
    return Generation(
        request_id=request_id,
        model=entry,
        prompt_ids=ids,
        sampling=sampling_from_fields(fields, final_max),
        session_id=session_id or (fields.user or ""),
        priority=fields.priority,
        trace_context=otel_context.get_current(),
    )
