"""The router's OpenAPI document, generated from the request models the router validates with.

Served at /openapi.json so clients and fuzzers (tests/integration/test_hostile_input.py)
work from the schema the router actually enforces, not a hand-kept copy.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from services.router.api_types import ChatCompletionRequest, CompletionRequest

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type"],
            "properties": {
                "message": {"type": "string"},
                "type": {"type": "string"},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "integer", "null"]},
            },
        }
    },
}


def _operation(model: type[BaseModel], components: dict[str, Any], summary: str) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    errors = {"description": "an OpenAI-shaped error", "content": {"application/json": {"schema": _ERROR}}}
    return {
        "post": {
            "summary": summary,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
            },
            "responses": {
                "200": {"description": "the completion, or a text/event-stream of chunks when stream is true"},
                **{code: errors for code in ("400", "401", "403", "404", "413", "429", "502", "503")},
            },
        }
    }


def openapi_document(version: str) -> dict[str, Any]:
    components: dict[str, Any] = {}
    paths = {
        "/v1/chat/completions": _operation(ChatCompletionRequest, components, "Create a chat completion"),
        "/v1/completions": _operation(CompletionRequest, components, "Create a completion"),
    }
    return {
        "openapi": "3.1.0",
        "info": {"title": "Tessera router (OpenAI-compatible)", "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
