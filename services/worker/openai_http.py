"""vLLM's own OpenAI-compatible serving code, in the worker process, on the worker's engine.

Two uses, one configuration (``serve_args``: `vllm serve` flags such as
``--enable-auto-tool-choice --tool-call-parser hermes``):

- the HTTP server: exactly what `vllm serve` exposes (same FastAPI app, same
  handlers), sharing the AsyncLLM that the Worker gRPC API uses. Existing routers
  (vllm-router, llm-d, ...) can front Tessera workers through it, and benchmarks
  use it as the "straight to the engine" HTTP baseline;
- the serving objects behind it (``serving_state``), which answer the requests the
  router sends as their OpenAI JSON body (tools, structured output, logprobs, n > 1:
  ``openai_request`` in worker.proto), so those features are vLLM's own.
"""

from __future__ import annotations

import asyncio
from typing import Any

from services.worker.http_key import require_key
from tessera.runtime.http_server import EmbeddedUvicorn, start_http


def serve_args(model_path: str, served_name: str, extra: list[str] | tuple[str, ...] = ()) -> Any:
    """`vllm serve`'s parsed arguments for this engine, with the operator's extra flags."""
    from vllm.entrypoints.launchers.cli_args import make_arg_parser
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    return make_arg_parser(FlexibleArgumentParser()).parse_args(
        [
            "--model",
            model_path,
            "--served-model-name",
            served_name,
            "--disable-uvicorn-access-log",
            "--disable-log-stats",
            "--disable-fastapi-docs",
            *extra,
        ]
    )


async def serving_state(llm: Any, args: Any) -> Any:
    """vLLM's serving objects (openai_serving_chat, openai_serving_completion, ...) on the engine."""
    from starlette.datastructures import State
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state

    state = State()
    await init_app_state(llm, state, args, await llm.get_supported_tasks())
    return state


async def start_openai_server(
    llm: Any, args: Any, host: str, port: int, api_key: str = ""
) -> tuple[EmbeddedUvicorn, asyncio.Task, int]:
    """Serve vLLM's app on the engine; with ``api_key``, every path but /health needs it (``http_key.py``)."""
    from vllm.entrypoints.launchers.api_server.app_state import init_app_state
    from vllm.entrypoints.launchers.app import build_app

    tasks = await llm.get_supported_tasks()
    app = build_app(args, tasks, llm.model_config)
    await init_app_state(llm, app.state, args, tasks)
    return await start_http(require_key(app, api_key) if api_key else app, host, port)
