"""vLLM's /tokenize and /detokenize, answered by the router's own tokenizer (no worker needed).

The router already holds each model's tokenizer and chat template to place requests, so these
answer what the model's workers would (vLLM's request and response shapes) without a round trip.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from services.router.api_types import DetokenizeRequest, TokenizeRequest
from services.router.errors import ApiError, BadRequest
from services.router.limits import Limits, parse_json
from services.router.model_catalog import ModelEntry
from services.router.openai_request import validate
from services.router.preparation import tokenize_chat
from services.router.state import RouterState


class TokenizeEndpoints:
    def __init__(self, state: RouterState, limits: Limits) -> None:
        self.state, self.limits = state, limits

    async def _entry(self, request: Request, model: str | None) -> ModelEntry:
        principal = await self.state.gate.authenticate(request.headers.get("authorization"))
        models = self.state.catalog.models
        if model is None:
            if len(models) != 1:
                raise BadRequest("model is required when the router serves several models", param="model")
            model = next(iter(models))
        self.state.gate.authorize(principal, model, 0, slo_header=False, profile_header=False)
        return self.state.catalog.get(model)

    async def tokenize(self, request: Request) -> Response:
        try:
            fields: TokenizeRequest = validate(TokenizeRequest, await self._body(request))
            if (fields.prompt is None) == (fields.messages is None):
                raise BadRequest("send either prompt or messages", param="prompt")
            entry = await self._entry(request, fields.model)
            tok = await self.state.catalog.tokenizer(entry)
            if fields.messages is not None:
                messages = [{**m.model_dump(exclude_none=True), "content": m.text()} for m in fields.messages]
                chars = sum(len(m["content"]) for m in messages)
                ids = await tokenize_chat(tok, messages, fields.add_generation_prompt, self.state.tokenizing, chars)
            else:
                prompt = fields.prompt or ""
                ids = await self.state.tokenizing.run(len(prompt), tok.encode, prompt, fields.add_special_tokens)
            assert isinstance(ids, list)
            out: dict[str, Any] = {"count": len(ids), "max_model_len": entry.max_model_len, "tokens": ids}
            if fields.return_token_strs:
                out["token_strs"] = [tok.tokenizer.id_to_token(i) for i in ids]
            return JSONResponse(out)
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    async def detokenize(self, request: Request) -> Response:
        try:
            fields: DetokenizeRequest = validate(DetokenizeRequest, await self._body(request))
            entry = await self._entry(request, fields.model)
            tok = await self.state.catalog.tokenizer(entry)
            vocab = tok.tokenizer.get_vocab_size()
            if any(t >= vocab for t in fields.tokens):
                raise BadRequest(f"tokens must be in [0, {vocab})", param="tokens")
            text = await self.state.tokenizing.run(len(fields.tokens), tok.decode, fields.tokens, False)
            return JSONResponse({"prompt": text})
        except ApiError as exc:
            return JSONResponse(exc.body(), status_code=exc.status)

    async def _body(self, request: Request) -> dict[str, Any]:
        return parse_json(await request.body(), self.limits.max_json_depth)
