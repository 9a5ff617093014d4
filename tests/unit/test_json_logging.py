"""TESSERA_LOG_FORMAT=json: one object per line, with the id of the request the writing task handles."""

from __future__ import annotations

import asyncio
import json
import logging

from tessera.runtime.telemetry.log_context import bind_request_id, request_context
from tessera.runtime.telemetry.logging import JsonFormatter

formatter = JsonFormatter("router")


def line(msg: str, exc: BaseException | None = None) -> dict:
    exc_info = (type(exc), exc, None) if exc else None
    return json.loads(formatter.format(logging.LogRecord("tessera.router", logging.INFO, "", 0, msg, (), exc_info)))


def test_json_log_lines_carry_the_request_id_of_the_task_that_wrote_them():
    async def handle(rid: str) -> dict:
        bind_request_id(rid)
        await asyncio.sleep(0)
        return line(f"handling {rid}")

    async def main() -> list[dict]:
        return list(await asyncio.gather(handle("a"), handle("b")))

    a, b = asyncio.run(main())
    assert (a["request_id"], b["request_id"]) == ("a", "b")
    assert "request_id" not in line("outside any request")
    assert line("x")["service"] == "router" and line("x")["level"] == "INFO"


def test_a_stream_of_requests_in_one_task_names_each_in_turn():
    with request_context("first"):
        assert line("x")["request_id"] == "first"
    with request_context("second"):
        assert line("x")["request_id"] == "second"
    assert "request_id" not in line("between requests")


def test_an_exception_stays_on_the_line():
    record = line("engine failed", ValueError("bad block_size"))
    assert record["error"] == "ValueError: bad block_size" and "traceback" not in record
