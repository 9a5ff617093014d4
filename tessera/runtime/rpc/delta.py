"""One request's new output since the previous message: the one type that runs from engine to client.

An engine (vLLM or the sim engine) yields Deltas; the worker sends each as a
``GenerateResponse``; the router turns each back into a Delta (adding which worker produced
it) and hands it to the HTTP or gRPC front end, which renders it for its client. The
conversions to and from the wire live here, so a field added to the stream is added once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tessera.runtime.rpc.enums import finish_reason_name, finish_reason_value
from tessera.v1 import common_pb2 as pb
from tessera.v1 import worker_pb2

# Trailing metadata of a worker's INVALID_ARGUMENT: the request field at fault (OpenAI's error.param).
PARAM_TRAILER = "tessera-error-param"


def param_of(trailers: Any) -> str | None:
    """The field a worker's INVALID_ARGUMENT named in its trailers, if any."""
    for key, value in trailers or ():
        if key == PARAM_TRAILER and isinstance(value, str) and value:
            return value
    return None


@dataclass
class Delta:
    token_ids: list[int]
    text: str
    finish_reason: str | None = None  # "stop" | "length" | "abort" | "error"; None while running
    stop_reason: str = ""  # the stop string that matched, if any
    cached_prompt_tokens: int = 0  # prompt tokens found in a prefix cache or moved by a KV transfer
    kv_transfer_params: dict[str, Any] | None = None  # what a prefill hands to its decode worker (last delta)
    worker_id: str = ""  # set by the router: the worker that produced it
    # A request served by vLLM's OpenAI code (worker.proto's openai_request): one JSON chunk, or the
    # whole response, as vLLM wrote it; completion_tokens: the request's tokens so far.
    openai_body: bytes = b""
    completion_tokens: int = 0

    def to_response(self, request_id: str, prompt_tokens: int, completion_tokens: int) -> worker_pb2.GenerateResponse:
        """The worker's message for this delta; usage (the request's totals so far) on the last one only."""
        response = worker_pb2.GenerateResponse(
            request_id=request_id, delta=pb.TokenDelta(token_ids=self.token_ids, text=self.text)
        )
        if self.openai_body:
            response.openai_body = self.openai_body
            response.usage.completion_tokens = completion_tokens
        if self.finish_reason:
            response.finish_reason = finish_reason_value(self.finish_reason)
            response.stop_reason = self.stop_reason
            response.usage.CopyFrom(
                pb.Usage(
                    prompt_tokens=prompt_tokens,
                    completion_tokens=completion_tokens,
                    cached_prompt_tokens=self.cached_prompt_tokens,
                )
            )
            if self.kv_transfer_params:
                response.kv_transfer.params.update(self.kv_transfer_params)
        return response

    @staticmethod
    def is_heartbeat(response: worker_pb2.GenerateResponse) -> bool:
        """A message that carries nothing: the worker's "accepted" or "still alive" (see worker.proto)."""
        return not (
            response.HasField("delta")
            or response.finish_reason
            or response.HasField("usage")
            or response.HasField("kv_transfer")
            or response.openai_body
        )

    @classmethod
    def from_response(cls, response: worker_pb2.GenerateResponse, worker_id: str) -> Delta:
        """A worker's message as the router forwards it."""
        finish = finish_reason_name(response.finish_reason)
        return cls(
            list(response.delta.token_ids),
            response.delta.text,
            finish,
            response.stop_reason,
            response.usage.cached_prompt_tokens if finish else 0,
            worker_id=worker_id,
            openai_body=response.openai_body,
            completion_tokens=response.usage.completion_tokens,
        )
