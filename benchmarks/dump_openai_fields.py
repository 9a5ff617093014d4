"""Write services/router/openai_fields.json: every request field of OpenAI's and vLLM's schemas.

The router must know the whole surface without importing vLLM (it stays light), so the names
and defaults are taken once from the installed vLLM and openai packages and checked in.
tests/unit/test_openai_fields.py fails when the installed packages have fields this file lacks:
rerun `python benchmarks/dump_openai_fields.py` then, and classify the new fields in
services/router/openai_fields.py.
"""

from __future__ import annotations

import json
import sys
import typing
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent.parent / "services" / "router" / "openai_fields.json"


def _default(field: Any) -> Any:
    """The field's JSON default, or None where it has none that JSON can hold (a factory, a model)."""
    from pydantic_core import PydanticUndefined

    value = field.default
    if value is PydanticUndefined:
        return None
    try:
        json.dumps(value)
    except TypeError:
        return None
    return value


def vllm_fields() -> dict[str, dict[str, Any]]:
    from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
    from vllm.entrypoints.openai.completion.protocol import CompletionRequest
    from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
    from vllm.entrypoints.pooling.embed.protocol import EmbeddingCompletionRequest

    return {
        "chat": {n: _default(f) for n, f in sorted(ChatCompletionRequest.model_fields.items())},
        "completion": {n: _default(f) for n, f in sorted(CompletionRequest.model_fields.items())},
        "responses": {n: _default(f) for n, f in sorted(ResponsesRequest.model_fields.items())},
        "embeddings": {n: _default(f) for n, f in sorted(EmbeddingCompletionRequest.model_fields.items())},
    }


def openai_fields() -> dict[str, list[str]]:
    from openai.types import completion_create_params, embedding_create_params
    from openai.types.chat import completion_create_params as chat_params
    from openai.types.responses import response_create_params

    return {
        "chat": sorted(typing.get_type_hints(chat_params.CompletionCreateParamsBase)),
        "completion": sorted(typing.get_type_hints(completion_create_params.CompletionCreateParamsBase)),
        "responses": sorted(typing.get_type_hints(response_create_params.ResponseCreateParamsBase)),
        "embeddings": sorted(typing.get_type_hints(embedding_create_params.EmbeddingCreateParams)),
    }


def current() -> dict[str, Any]:
    import openai
    import vllm

    return {
        "vllm_version": vllm.__version__,
        "openai_version": openai.__version__,
        "vllm": vllm_fields(),
        "openai": openai_fields(),
    }


def main() -> int:
    OUT.write_text(json.dumps(current(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
