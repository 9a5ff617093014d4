"""vLLM's own OpenAI-compatible HTTP server, in the worker process, on the worker's engine.

This is exactly what `vllm serve` exposes (same FastAPI app, same handlers),
but sharing the AsyncLLM that the Worker gRPC API uses. Existing routers
(vllm-router, llm-d, ...) can front Tessera workers through it, and
benchmarks use it as the "straight to the engine" HTTP baseline.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.worker.http_key import require_key
from tessera.runtime.http_server import EmbeddedUvicorn, start_http


async def start_openai_server(
    llm: Any, model_path: str, served_name: str, host: str, port: int, api_key: str = ""
) -> tuple[EmbeddedUvicorn, asyncio.Task, int]:
    """Serve vLLM's app on the engine; with ``api_key``, every path but /health needs it (``http_key.py``)."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    args = make_arg_parser(FlexibleArgumentParser()).parse_args(
        [
            "--model",
            model_path,
            "--served-model-name",
            served_name,
            "--disable-uvicorn-access-log",
            "--disable-log-stats",
            "--disable-fastapi-docs",
        ]
    )
    tasks = await llm.get_supported_tasks()
    app = build_app(args, tasks, llm.model_config)
    await init_app_state(llm, app.state, args, tasks)
    return await start_http(require_key(app, api_key) if api_key else app, host, port)
