"""What the worker needs from an inference engine, whatever runs underneath.

Two engines implement it: vLLM (``vllm_engine``) and the ``sim`` engine
(``sim_engine``: a catalog accelerator timed by the performance model, without
weights), so the gRPC service, registration and load reporting are shared.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any, Protocol

from tessera.runtime.rpc.delta import Delta
from tessera.v1 import common_pb2 as pb


class InvalidRequest(ValueError):
    """The request cannot be served as asked (too long, bad parameters): the client's fault.

    ``param``: the request field at fault when known, so that the router's 400 names it in
    OpenAI's ``error.param`` as vLLM's own server does.
    """

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class Unsupported(InvalidRequest):
    """The engine cannot serve this kind of request at all (the sim engine and vLLM's OpenAI code)."""


class EngineUnavailable(RuntimeError):
    """The engine cannot take requests now (dead, draining): try another worker."""


@dataclass(frozen=True)
class EngineInfo:
    engine: str
    engine_version: str
    kv_block_size: int
    kv_capacity_blocks: int
    max_model_len: int
    max_num_seqs: int = 0
    kv_compat: pb.KVCompatibility | None = None  # what a KV hand-off partner must match (kv_descriptor.py)


@dataclass
class EngineLoad:
    """The engine's own view of its queue, from its latest scheduler step."""

    num_running: int = 0
    num_waiting: int = 0
    kv_cache_usage: float = 0.0
    prefix_cache_queries: int = 0
    prefix_cache_hits: int = 0
    data_parallel_rank: int = 0  # which rank's engine core stepped (DP instances have several)
    kv_pulls_failed: int = 0  # KV pulls from a prefill worker that failed in this step (handshake or transfer)


class Engine(Protocol):
    info: EngineInfo

    async def start(self) -> None: ...

    def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: pb.SamplingParams,
        kv_transfer_params: dict[str, Any] | None = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,  # DP instances: the rank the scheduler chose
    ) -> AsyncIterator[Delta]: ...

    def generate_openai(self, request_id: str, endpoint: str, body: bytes, priority: int = 0) -> AsyncIterator[Delta]:
        """An OpenAI request body (worker.proto's openai_request) served by vLLM's own serving code:
        Deltas carrying its JSON chunks in openai_body, then one with the finish reason. An engine
        without that code raises InvalidRequest."""
        ...

    async def abort(self, request_id: str) -> None: ...

    async def stop(self) -> None: ...
