"""The key in front of the worker's vLLM HTTP API: every path needs it (vLLM's own --api-key leaves some open)."""

from __future__ import annotations

import httpx
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from services.worker.http_key import require_key


def _app() -> Starlette:
    async def ok(request):
        return PlainTextResponse("engine")

    paths = ("/v1/completions", "/invocations", "/health", "/tokenize")
    return Starlette(routes=[Route(p, ok, methods=["GET", "POST"]) for p in paths])


async def _status(path: str, headers: dict[str, str] | None = None) -> int:
    transport = httpx.ASGITransport(app=require_key(_app(), "s3cret"))
    async with httpx.AsyncClient(transport=transport, base_url="http://worker") as client:
        return (await client.post(path, headers=headers or {})).status_code


async def test_every_path_but_health_needs_the_key():
    for path in ("/v1/completions", "/invocations", "/tokenize"):
        assert await _status(path) == 401, path
        assert await _status(path, {"Authorization": "Bearer wrong"}) == 401, path
        assert await _status(path, {"Authorization": "s3cret"}) == 401, path  # not a bearer token
        assert await _status(path, {"Authorization": "Bearer s3cret"}) == 200, path
    assert await _status("/health") == 200
