"""A key in front of the worker's vLLM HTTP API (``--http-api-key``, ``TESSERA_WORKER_HTTP_KEY``).

vLLM's own ``--api-key`` guards only ``/v1``, ``/v2`` and ``/inference``;
``/invocations`` and the rest of its app run the same engine without one. This
middleware wraps the whole app instead: every request needs
``Authorization: Bearer <key>``, except ``/health`` (load balancers' probes,
which reveal nothing). Plain ASGI, so it sits outside vLLM's routing.
"""

from __future__ import annotations

import hmac
import json
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

ENV_KEY = "TESSERA_WORKER_HTTP_KEY"
OPEN_PATHS = frozenset({"/health"})

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def require_key(app: ASGIApp, key: str) -> ASGIApp:
    """``app`` behind ``key``: requests without ``Authorization: Bearer <key>`` get 401."""
    expected = f"Bearer {key}".encode()

    async def guarded(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or scope.get("path") in OPEN_PATHS:
            await app(scope, receive, send)
            return
        given = dict(scope.get("headers") or []).get(b"authorization", b"")
        if hmac.compare_digest(given, expected):
            await app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})
            return
        body = json.dumps({"error": {"message": "a valid API key is required", "type": "Unauthorized"}}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 401,
                "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")],
            }
        )
        await send({"type": "http.response.body", "body": body})

    return guarded
