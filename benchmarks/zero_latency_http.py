"""A minimal OpenAI-compatible HTTP API with no engine, for the zero-latency worker.

So that routers that speak HTTP to their backends (vllm-router, SGLang's)
can front the same instant backend that Tessera's router reaches over gRPC
(benchmarks/router_throughput.py). It serves what those routers call:

- ``POST /v1/completions``, ``POST /v1/chat/completions``: ``max_tokens``
  tokens of "a", streamed (SSE, with the usage chunk when asked) or not,
  ``itl_s`` apart;
- ``POST /tokenize``: the prompt's real token ids (the model's tokenizer and
  chat template), as vLLM answers, so vllm-router's cache_aware policy has a
  prefix to match;
- ``GET /health``, ``GET /v1/models``.

There is no ``/v1/*/render``: it answers 404, and vllm-router falls back to
``/tokenize``, as it does against any backend without the render API.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

DEFAULT_MAX_TOKENS = 16


class InstantOpenAI:
    """Request handlers; ``tokenizer`` is a tessera.runtime.models.tokenizer.ModelTokenizer or None."""

    def __init__(self, model: str, max_model_len: int, itl_s: float, tokenizer: Any = None) -> None:
        self.model, self.max_model_len, self.itl_s, self.tokenizer = model, max_model_len, itl_s, tokenizer

    def _token_ids(self, body: dict[str, Any]) -> list[int]:
        """What the prompt or the chat messages tokenize to (word count without a tokenizer)."""
        if "messages" in body:
            if self.tokenizer is not None:
                return self.tokenizer.encode_chat(body["messages"], body.get("add_generation_prompt", True))
            text = " ".join(str(m.get("content", "")) for m in body["messages"])
        else:
            prompt = body.get("prompt", "")
            if isinstance(prompt, list) and (not prompt or isinstance(prompt[0], int)):
                return list(prompt)
            text = prompt if isinstance(prompt, str) else " ".join(map(str, prompt))
        if self.tokenizer is not None:
            return self.tokenizer.encode(text, body.get("add_special_tokens", True))
        return [hash(w) % 32000 for w in text.split()]

    async def tokenize(self, request: Request) -> Response:
        ids = self._token_ids(await request.json())
        return JSONResponse({"tokens": ids, "count": len(ids), "max_model_len": self.max_model_len})

    async def health(self, request: Request) -> Response:
        return Response(status_code=200)

    async def models(self, request: Request) -> Response:
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {
                        "id": self.model,
                        "object": "model",
                        "created": 0,
                        "owned_by": "tessera",
                        "max_model_len": self.max_model_len,
                    }
                ],
            }
        )

    async def completions(self, request: Request) -> Response:
        return await self._generate(await request.json(), chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self._generate(await request.json(), chat=True)

    async def _generate(self, body: dict[str, Any], chat: bool) -> Response:
        n = int(body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS)
        usage = {"prompt_tokens": len(self._token_ids(body)), "completion_tokens": n}
        usage["total_tokens"] = usage["prompt_tokens"] + n
        head = {
            "id": f"{'chatcmpl' if chat else 'cmpl'}-{uuid.uuid4().hex}",
            "created": int(time.time()),
            "model": body.get("model", self.model),
        }
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return StreamingResponse(
                self._sse(head, n, chat, usage if include_usage else None), media_type="text/event-stream"
            )
        await asyncio.sleep(self.itl_s * (n - 1))
        text = "a" * n
        choice = (
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "length"}
            if chat
            else {"index": 0, "text": text, "finish_reason": "length"}
        )
        return JSONResponse(
            {**head, "object": "chat.completion" if chat else "text_completion", "choices": [choice], "usage": usage}
        )

    async def _sse(
        self, head: dict[str, Any], n: int, chat: bool, usage: dict[str, int] | None
    ) -> AsyncIterator[bytes]:
        """One chunk per token, then the usage chunk (if asked for) and [DONE], as vLLM streams."""
        obj = "chat.completion.chunk" if chat else "text_completion"
        for i in range(n):
            if i and self.itl_s:
                await asyncio.sleep(self.itl_s)
            finish = "length" if i == n - 1 else None
            choice = (
                {"index": 0, "delta": {"content": "a"}, "finish_reason": finish}
                if chat
                else {"index": 0, "text": "a", "finish_reason": finish}
            )
            yield _event({**head, "object": obj, "choices": [choice]})
        if usage is not None:
            yield _event({**head, "object": obj, "choices": [], "usage": usage})
        yield b"data: [DONE]\n\n"


def _event(payload: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(payload, separators=(",", ":")).encode() + b"\n\n"


def build_app(handlers: InstantOpenAI) -> Starlette:
    return Starlette(
        routes=[
            Route("/v1/completions", handlers.completions, methods=["POST"]),
            Route("/v1/chat/completions", handlers.chat_completions, methods=["POST"]),
            Route("/tokenize", handlers.tokenize, methods=["POST"]),
            Route("/health", handlers.health, methods=["GET"]),
            Route("/v1/models", handlers.models, methods=["GET"]),
        ]
    )
