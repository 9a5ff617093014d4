"""The OpenAI-compatible HTTP API: /v1/chat/completions, /v1/completions, /v1/responses, /v1/models,
/tokenize, /detokenize, /health, /metrics (the generation endpoints: generation_endpoint.py).

Built on Starlette (what FastAPI runs on) without FastAPI's body handling,
so every error, malformed JSON included, comes back in OpenAI's shape.
"""

from __future__ import annotations

import importlib.metadata
from typing import Any

import prometheus_client
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from services.router import metrics
from services.router.errors import ApiError, Unauthenticated
from services.router.generation_endpoint import error_response
from services.router.limits import BodyLimit, Limits
from services.router.openai_endpoints import openai_endpoints
from services.router.openapi import openapi_document
from services.router.state import RouterState
from services.router.tokenize_api import TokenizeEndpoints


def build_app(state: RouterState, limits: Limits | None = None) -> BodyLimit:
    """The router's ASGI app: the endpoints behind a body cap (413 before the body is read)."""
    limits = limits or Limits()

    async def models(request: Request) -> Response:
        try:
            principal = await state.gate.authenticate(request.headers.get("authorization"))
        except ApiError as exc:
            return error_response(exc)
        data = [
            {
                "id": m.name,
                "object": "model",
                "created": int(state.started_at),
                "owned_by": "tessera",
                "root": m.model_path,
                "max_model_len": m.max_model_len,
                "workers": len(m.workers),
            }
            for m in state.catalog.models.values()
            if principal.may_use(m.name)
        ]
        return JSONResponse({"object": "list", "data": data})

    async def health(request: Request) -> Response:
        return JSONResponse(
            {
                "status": "ok",
                "schedulers": len(state.schedulers.addresses),
                "models": {m.name: len(m.workers) for m in state.catalog.models.values()},
            }
        )

    document = openapi_document(_version())

    async def openapi(request: Request) -> Response:
        return JSONResponse(document)

    async def metrics_endpoint(request: Request) -> Response:
        if not state.gate.metrics_allowed(request.headers.get("authorization")):
            return error_response(Unauthenticated("/metrics needs the metrics API key (Authorization: Bearer KEY)."))
        return Response(prometheus_client.generate_latest(), media_type=prometheus_client.CONTENT_TYPE_LATEST)

    async def http_error(request: Request, exc: HTTPException) -> Response:
        kind = "not_found" if exc.status_code == 404 else "invalid_request_error"
        return JSONResponse(
            {
                "error": {
                    "message": f"{request.method} {request.url.path}: {exc.detail}",
                    "type": kind,
                    "param": None,
                    "code": exc.status_code,
                }
            },
            status_code=exc.status_code,
        )

    async def api_error(request: Request, exc: ApiError) -> Response:
        return error_response(exc)

    tokens = TokenizeEndpoints(state, limits)
    generation = openai_endpoints(state, limits)

    app = Starlette(
        routes=[
            *(Route(path, endpoint.handle, methods=["POST"]) for path, endpoint in generation.items()),
            Route("/v1/models", models, methods=["GET"]),
            Route("/tokenize", tokens.tokenize, methods=["POST"]),
            Route("/detokenize", tokens.detokenize, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/openapi.json", openapi, methods=["GET"]),
            Route("/metrics", metrics_endpoint, methods=["GET"]),
        ],
        # ApiError outside an endpoint's own handling (a body over the cap on any route): OpenAI-shaped too.
        exception_handlers={HTTPException: http_error, ApiError: api_error},  # type: ignore[dict-item]
    )
    return BodyLimit(app, limits.max_body_bytes, _refuse)


def _version() -> str:
    try:
        return importlib.metadata.version("tessera")
    except importlib.metadata.PackageNotFoundError:
        return "0"


async def _refuse(scope: Any, send: Any, exc: ApiError) -> None:
    """Answer an ApiError from outside the app (the body cap), closing the connection: the rest of
    an oversized body is never read."""
    response = error_response(exc)
    response.headers["Connection"] = "close"
    metrics.REQUESTS.labels("unknown", scope.get("path", ""), str(exc.status)).inc()
    await response(scope, _no_receive, send)


async def _no_receive() -> dict[str, Any]:
    return {"type": "http.disconnect"}
