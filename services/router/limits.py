"""Bounds on what a client may send the router, checked before any work is spent on it.

Everything here runs before templating and tokenizing, so a hostile request
costs the router at most one bounded read and one JSON parse:

- the body is capped while it is read (413 without reading a byte past the cap,
  before reading anything when Content-Length already says too much);
- the JSON may not hold NaN, Infinity or numbers that overflow to them, lone
  UTF-16 surrogates (they cannot be encoded, so the tokenizer would fail), or
  nesting deeper than any OpenAI request needs;
- headers the router reads are capped in length.

Envoy answers the same way (413 for a body over its buffer limit, 431/400 for
headers); the defaults are generous for real prompts: 32 MiB holds a
million-token prompt sent as token ids.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from services.router.errors import ApiError, BadRequest

DEFAULT_MAX_BODY_BYTES = 32 * 1024 * 1024
MAX_JSON_DEPTH = 32  # a chat request with tool schemas nests about 10 deep
MAX_HEADER_CHARS = 256  # x-request-id, x-session-id, x-tessera-profile, x-slo-ttft-ms


class BodyTooLarge(ApiError):
    status = 413
    type = "invalid_request_error"

    def __init__(self, limit: int) -> None:
        super().__init__(
            f"The request body is larger than this router accepts ({limit} bytes).", code="request_too_large"
        )


@dataclass(frozen=True)
class Limits:
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    max_json_depth: int = MAX_JSON_DEPTH
    max_header_chars: int = MAX_HEADER_CHARS


class BodyLimit:
    """ASGI middleware: refuse a body over `limit` bytes with 413, reading no further than the limit.

    A declared Content-Length over the limit is refused before the body is read;
    a chunked body is counted as it arrives and cut off where it passes the limit.
    """

    def __init__(self, app: ASGIApp, limit: int, on_refuse: Any) -> None:
        self.app, self.limit, self.on_refuse = app, limit, on_refuse

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    await self.on_refuse(scope, send, BadRequest("Content-Length is not a number"))
                    return
                if declared > self.limit:
                    await self.on_refuse(scope, send, BodyTooLarge(self.limit))
                    return
        seen = 0

        async def counted_receive() -> Message:
            """The body as it arrives; BodyTooLarge (answered 413 by the app) once past the cap."""
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.limit:
                    raise BodyTooLarge(self.limit)
            return message

        await self.app(scope, counted_receive, send)


def _refuse_constant(name: str) -> float:
    raise BadRequest(f"{name} is not a number JSON allows; send a finite number")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise BadRequest(f"the number {text[:40]} is out of range")
    return value


def _big_int(text: str) -> int:
    if len(text) > 40:  # int() of a 10^5-digit string is quadratic; no field needs over 40 digits
        raise BadRequest(f"the integer {text[:20]}... is out of range")
    return int(text)


def parse_json(raw: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """The body as a JSON object; 400 for anything a well-behaved client would never send."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant, parse_float=_finite_float, parse_int=_big_int)
    except RecursionError:
        raise BadRequest(f"The JSON body nests deeper than {max_depth} levels") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"Invalid JSON body: {exc}") from None
    if not isinstance(body, dict):
        raise BadRequest("The request body must be a JSON object")
    check_json_value(body, max_depth)
    return body


def check_json_value(value: Any, max_depth: int = MAX_JSON_DEPTH, path: str = "body") -> None:
    """No nesting past max_depth and no string that cannot be encoded as UTF-8 (a lone surrogate).

    Iterative, so a deep value cannot exhaust the stack.
    """
    stack: list[tuple[Any, int, str]] = [(value, 0, path)]
    while stack:
        item, depth, where = stack.pop()
        if isinstance(item, str):
            if not item.isascii():
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError:
                    raise BadRequest(f"{where}: the text holds a lone UTF-16 surrogate", param=_param(where)) from None
            continue
        if isinstance(item, dict):
            children: Any = item.items()
        elif isinstance(item, list):
            children = enumerate(item)
        else:
            continue
        if depth >= max_depth:
            raise BadRequest(f"{where}: the JSON nests deeper than {max_depth} levels", param=_param(where))
        for key, child in children:
            if isinstance(key, str):
                stack.append((key, depth + 1, where))
            stack.append((child, depth + 1, f"{where}.{key}"))


def _param(where: str) -> str | None:
    parts = where.split(".")
    return parts[1] if len(parts) > 1 else None


def header(headers: Any, name: str, limit: int = MAX_HEADER_CHARS) -> str | None:
    """A header's value, or 400 when it is longer than any legitimate value."""
    value: str | None = headers.get(name)
    if value is not None and len(value) > limit:
        raise BadRequest(f"the {name} header is longer than {limit} characters", param=name)
    return value


def slo_header(value: str | None) -> float | None:
    """x-slo-ttft-ms: the client's own time-to-first-token objective in milliseconds, as seconds.

    NaN, infinities, zero, negatives and anything over an hour are refused: a
    deadline that is not a finite positive number would never expire and
    would hold the model's admission queue behind it.
    """
    if value is None:
        return None
    try:
        ms = float(value)
    except ValueError:
        raise BadRequest(f"x-slo-ttft-ms must be a number of milliseconds, not {value[:40]!r}") from None
    if not math.isfinite(ms) or ms <= 0 or ms > 3_600_000:
        raise BadRequest(
            "x-slo-ttft-ms must be a positive number of milliseconds, at most 3600000", param="x-slo-ttft-ms"
        )
    return ms / 1000.0
