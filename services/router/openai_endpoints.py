"""Every OpenAI generation endpoint the router serves, by path: one table for both doors.

The HTTP API routes each path to its endpoint's ``handle``; gRPC's ``openai_request_json`` uses the
same objects to validate, prepare and id a body, so both doors run the same code.
"""

from __future__ import annotations

from services.router.embeddings_api import EMBEDDINGS_PATH, EmbeddingsEndpoint
from services.router.generation_endpoint import Endpoint
from services.router.limits import Limits
from services.router.openai_request import CHAT_PATH, COMPLETION_PATH
from services.router.responses_api import RESPONSES_PATH, ResponsesEndpoint
from services.router.state import RouterState


def openai_endpoints(state: RouterState, limits: Limits) -> dict[str, Endpoint]:
    return {
        CHAT_PATH: Endpoint(state, chat=True, limits=limits),
        COMPLETION_PATH: Endpoint(state, chat=False, limits=limits),
        RESPONSES_PATH: ResponsesEndpoint(state, limits),
        EMBEDDINGS_PATH: EmbeddingsEndpoint(state, limits),
    }
