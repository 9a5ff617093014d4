"""The vLLM backend: vLLM's AsyncLLM in this process (not `vllm serve` behind HTTP).

Token ids in, incremental token ids and text out (vLLM's detokenizer, so stop
strings and multi-byte characters come out right). Closing the output stream
early aborts the request in the engine. A custom stat logger hands the engine's
per-step scheduler figures to the worker's load tracker.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Any

from services.worker.engine import EngineInfo, EngineLoad, EngineUnavailable, InvalidRequest, Unsupported
from services.worker.kv_descriptor import failed_kv_pulls, vllm_descriptor
from tessera.runtime.rpc.delta import Delta
from tessera.runtime.tasks import cancel_and_wait
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.worker.vllm")


def to_vllm_sampling(sp: pb.SamplingParams, kv_transfer_params: dict[str, Any] | None) -> Any:
    """Our SamplingParams message to vLLM's SamplingParams (deltas, not cumulative)."""
    from vllm import SamplingParams
    from vllm.sampling_params import RequestOutputKind

    kwargs: dict[str, Any] = {
        "output_kind": RequestOutputKind.DELTA,
        "stop": list(sp.stop) or None,
        "stop_token_ids": list(sp.stop_token_ids) or None,
        "ignore_eos": sp.ignore_eos,
        "presence_penalty": sp.presence_penalty,
        "frequency_penalty": sp.frequency_penalty,
        "include_stop_str_in_output": sp.include_stop_str_in_output,
    }
    for name in (
        "max_tokens",
        "temperature",
        "top_p",
        "top_k",
        "seed",
        "min_tokens",
        "repetition_penalty",
        "skip_special_tokens",
    ):
        if sp.HasField(name):
            kwargs[name] = getattr(sp, name)
    if kv_transfer_params:
        kwargs["extra_args"] = {"kv_transfer_params": kv_transfer_params}
    try:
        return SamplingParams(**kwargs)
    except (ValueError, TypeError) as exc:
        raise InvalidRequest(str(exc)) from None


CHAT_PATH, COMPLETION_PATH, RESPONSES_PATH = "/v1/chat/completions", "/v1/completions", "/v1/responses"
EMBEDDINGS_PATH = "/v1/embeddings"


class ChunkProgress:
    """Output tokens and finish reason so far of a chat or completion answer of vLLM's serving code."""

    def __init__(self) -> None:
        self.tokens, self.finish = 0, "stop"

    def see(self, chunk: dict[str, Any], whole: bool = False) -> None:
        usage = chunk.get("usage")
        if usage:  # the whole response, or the client asked for usage: exact
            self.tokens = max(self.tokens, int(usage.get("completion_tokens") or 0))
        elif not whole:  # one engine step per choice in a chunk: close enough for load and metrics
            self.tokens += sum(1 for c in chunk.get("choices") or () if c.get("delta") or c.get("text"))
        choices = chunk.get("choices") or ()
        self.finish = next((c["finish_reason"] for c in choices if c.get("finish_reason")), self.finish)


class ResponsesProgress:
    """The same for a /v1/responses answer: a Response object, or its stream of typed events."""

    FINISH = {"completed": "stop", "incomplete": "length", "failed": "error", "cancelled": "abort"}

    def __init__(self) -> None:
        self.tokens, self.finish = 0, "stop"

    def see(self, event: dict[str, Any], whole: bool = False) -> None:
        response = event if whole else event.get("response")
        if isinstance(response, dict):  # the response itself, or an event carrying it (created, completed)
            usage = response.get("usage") or {}
            self.tokens = max(self.tokens, int(usage.get("output_tokens") or 0))
            self.finish = self.FINISH.get(str(response.get("status")), self.finish)
        elif str(event.get("type", "")).endswith(".delta"):  # text, reasoning or arguments: about a token
            self.tokens += 1


def engine_args_for(engine_args: dict[str, Any], serve: Any) -> dict[str, Any]:
    """The engine's arguments, completed as `vllm serve` completes them from its flags.

    A reasoning parser given as a serve flag (``--reasoning-parser``) is the engine's too, so that
    structured output starts where the reasoning ends; ``structured_outputs_config`` given as a
    mapping (``--engine-arg structured_outputs_config={...}``) becomes vLLM's config object.
    """
    from vllm.config import StructuredOutputsConfig

    out = dict(engine_args)
    if getattr(serve, "reasoning_parser", None) and not out.get("reasoning_parser"):
        out["reasoning_parser"] = serve.reasoning_parser
    if isinstance(out.get("structured_outputs_config"), dict):
        out["structured_outputs_config"] = StructuredOutputsConfig(**out["structured_outputs_config"])
    return out


def _invalid(exc: Any, fields: dict[str, Any] | None = None) -> InvalidRequest:
    """A pydantic ValidationError of vLLM's request model as a 400 naming the field (its dotted
    path; with ``fields``, the first part of the path that is one of them)."""
    err = exc.errors()[0]
    parts = [str(p) for p in err["loc"] if p != "body"]
    loc = next((p for p in parts if p in fields), None) if fields is not None else ".".join(parts) or None
    return InvalidRequest(f"{loc or 'body'}: {err['msg'].removeprefix('Value error, ')}", loc)


def _param_of(exc: Exception) -> str | None:
    """The request field a vLLM validation error names (``VLLMValidationError.parameter``), if any."""
    param = getattr(exc, "parameter", None)
    return param if isinstance(param, str) and param else None


class VllmEngine:
    """One vLLM engine. ``engine_args`` are AsyncEngineArgs fields."""

    def __init__(
        self, engine_args: dict[str, Any], on_stats: Callable[[EngineLoad], None], serve_flags: list[str] | None = None
    ) -> None:
        """serve_flags: `vllm serve` flags for vLLM's OpenAI serving code (tool and reasoning parsers)."""
        self.engine_args = engine_args
        self.serve_flags = list(serve_flags or [])
        self.serve_args: Any = None  # `vllm serve`'s arguments, once started
        self._serving: Any = None  # vLLM's OpenAI serving objects (openai_http.serving_state)
        self.on_stats = on_stats
        self.info: EngineInfo | None = None
        self._llm: Any = None  # vLLM's AsyncLLM once started (vLLM is imported only then)
        self._priority_enabled = engine_args.get("scheduling_policy") == "priority"
        self.background: list[asyncio.Task] = []  # helpers that live and die with the engine (KV events)

    async def start(self) -> None:
        import vllm
        from vllm.engine.arg_utils import AsyncEngineArgs
        from vllm.v1.engine.async_llm import AsyncLLM

        from services.worker.openai_http import serve_args, serving_state

        self.serve_args = serve_args(
            str(self.engine_args["model"]), str(self.engine_args.get("served_model_name") or ""), self.serve_flags
        )
        args = AsyncEngineArgs(**engine_args_for(self.engine_args, self.serve_args))
        self._llm = AsyncLLM.from_engine_args(args, stat_loggers=[self._stat_logger_factory()])
        config = self._llm.vllm_config
        # As in `vllm serve`, the serving code reads the engine's structured-output settings (its
        # reasoning parser among them): one object for both.
        self.serve_args.structured_outputs_config = config.structured_outputs_config
        from vllm.platforms import current_platform

        kv_compat = vllm_descriptor(
            config, vllm.__version__, str(current_platform.fp8_dtype()), str(current_platform.device_type)
        )
        self.info = EngineInfo(
            engine="vllm",
            engine_version=vllm.__version__,
            kv_block_size=int(config.cache_config.block_size),
            kv_capacity_blocks=int(config.cache_config.num_gpu_blocks or 0),
            max_model_len=int(config.model_config.max_model_len),
            max_num_seqs=int(config.scheduler_config.max_num_seqs),
            kv_compat=kv_compat,
        )
        try:
            self._serving = await serving_state(self._llm, self.serve_args)
        except Exception as exc:  # noqa: BLE001 - plain requests are still served
            log.warning("vLLM's OpenAI serving code did not start (requests that need it are refused): %s", exc)

    def _stat_logger_factory(self) -> Callable[..., Any]:
        from vllm.v1.metrics.loggers import StatLoggerBase

        on_stats = self.on_stats

        class LoadStatLogger(StatLoggerBase):
            """Forwards each step's scheduler figures to the load tracker."""

            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(
                self, scheduler_stats: Any, iteration_stats: Any, mm_cache_stats: Any = None, engine_idx: int = 0
            ) -> None:
                if scheduler_stats is None:
                    return
                pcs = scheduler_stats.prefix_cache_stats
                on_stats(
                    EngineLoad(
                        num_running=scheduler_stats.num_running_reqs,
                        num_waiting=scheduler_stats.num_waiting_reqs + scheduler_stats.num_skipped_waiting_reqs,
                        kv_cache_usage=float(scheduler_stats.kv_cache_usage),
                        prefix_cache_queries=int(getattr(pcs, "queries", 0)),
                        prefix_cache_hits=int(getattr(pcs, "hits", 0)),
                        data_parallel_rank=int(engine_idx),
                        kv_pulls_failed=failed_kv_pulls(getattr(scheduler_stats, "kv_connector_stats", None)),
                    )
                )

            def log_engine_initialized(self) -> None:
                pass

        return LoadStatLogger

    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: pb.SamplingParams,
        kv_transfer_params: dict[str, Any] | None = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,
    ) -> AsyncIterator[Delta]:
        from vllm import TokensPrompt
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._llm is None or self.info is None:
            raise EngineUnavailable("engine not started")
        if not prompt_token_ids:
            raise InvalidRequest("the prompt is empty")
        if len(prompt_token_ids) >= self.info.max_model_len:
            raise InvalidRequest(
                f"the prompt has {len(prompt_token_ids)} tokens; this model's context is "
                f"{self.info.max_model_len} tokens"
            )
        params = to_vllm_sampling(sampling, kv_transfer_params)
        stream = self._llm.generate(
            TokensPrompt(prompt_token_ids=prompt_token_ids),
            params,
            request_id,
            priority=priority if self._priority_enabled else 0,
            data_parallel_rank=data_parallel_rank,
        )
        try:
            async for out in stream:
                completion = out.outputs[0] if out.outputs else None
                finish = ((completion.finish_reason if completion else None) or "stop") if out.finished else None
                stop_reason = completion.stop_reason if completion else None
                yield Delta(
                    token_ids=list(completion.token_ids) if completion else [],
                    text=completion.text if completion else "",
                    finish_reason=finish,
                    stop_reason=stop_reason if isinstance(stop_reason, str) else "",
                    cached_prompt_tokens=int(out.num_cached_tokens or 0),
                    kv_transfer_params=getattr(out, "kv_transfer_params", None) if out.finished else None,
                )
        except EngineDeadError as exc:
            raise EngineUnavailable(f"engine died: {exc}") from None
        except (ValueError, VLLMClientError) as exc:  # vLLM's input validation (a VLLMClientError in 0.32)
            raise InvalidRequest(str(exc)) from None
        finally:
            await stream.aclose()  # aborts the request in the engine if it is still running

    async def generate_openai(
        self, request_id: str, endpoint: str, body: bytes, priority: int = 0
    ) -> AsyncIterator[Delta]:
        """An OpenAI request served by vLLM's own serving code: its JSON chunks (or whole response)
        as Deltas' openai_body, then a last Delta with the finish reason. Cancelling aborts it."""
        from pydantic import BaseModel, ValidationError
        from vllm.entrypoints.openai.chat_completion.protocol import ChatCompletionRequest
        from vllm.entrypoints.openai.completion.protocol import CompletionRequest
        from vllm.entrypoints.openai.responses.protocol import ResponsesRequest
        from vllm.entrypoints.serve.engine.protocol import ErrorResponse
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        if self._llm is None:
            raise EngineUnavailable("engine not started")
        if endpoint == EMBEDDINGS_PATH:
            async for delta in self._embed(request_id, body):
                yield delta
            return
        kinds: dict[str, tuple[str, type[BaseModel], str]] = {
            CHAT_PATH: ("openai_serving_chat", ChatCompletionRequest, "create_chat_completion"),
            COMPLETION_PATH: ("openai_serving_completion", CompletionRequest, "create_completion"),
            RESPONSES_PATH: ("openai_serving_responses", ResponsesRequest, "create_responses"),
        }
        if endpoint not in kinds:
            raise Unsupported(f"{endpoint} is not an endpoint of vLLM's OpenAI serving code")
        attribute, request_type, create = kinds[endpoint]
        serving = getattr(self._serving, attribute, None) if self._serving is not None else None
        if serving is None:
            raise Unsupported(f"this worker's model does not serve {endpoint} with vLLM's OpenAI code")
        responses = endpoint == RESPONSES_PATH
        data = self._request_data(request_id, body)
        try:
            request = request_type.model_validate(data)
        except ValidationError as exc:
            raise _invalid(exc) from None
        except VLLMClientError as exc:  # its validators raise this (VLLMValidationError) unwrapped
            raise InvalidRequest(str(exc), _param_of(exc)) from None
        try:
            result = await getattr(serving, create)(request, None)
            if isinstance(result, ErrorResponse):
                if result.error.code >= 500:
                    raise EngineUnavailable(result.error.message)
                raise InvalidRequest(result.error.message, result.error.param)
            progress = ResponsesProgress() if responses else ChunkProgress()
            if isinstance(result, BaseModel):  # the whole response (stream: false)
                whole = result.model_dump_json(by_alias=responses)
                progress.see(json.loads(whole), whole=True)
                yield Delta([], "", openai_body=whole.encode(), completion_tokens=progress.tokens)
                yield Delta([], "", finish_reason=progress.finish, completion_tokens=progress.tokens)
                return
            async for event in result:
                # Chat and completions: server-sent events, "data: {...}\n\n", the last "data: [DONE]".
                # Responses: event objects; the router writes their "event:" lines from their type.
                if isinstance(event, BaseModel):
                    payload = event.model_dump_json(indent=None, by_alias=True)
                else:
                    payload = event.removeprefix("data: ").strip()
                    if payload == "[DONE]":
                        break
                progress.see(json.loads(payload))
                yield Delta([], "", openai_body=payload.encode(), completion_tokens=progress.tokens)
            yield Delta([], "", finish_reason=progress.finish, completion_tokens=progress.tokens)
        except EngineDeadError as exc:
            raise EngineUnavailable(f"engine died: {exc}") from None
        except InvalidRequest:
            raise  # ours, from vLLM's ErrorResponse above (a ValueError too): as it is, param and all
        except (ValueError, VLLMClientError) as exc:  # vLLM's checks of the request (VLLMValidationError)
            raise InvalidRequest(str(exc), _param_of(exc)) from None

    def _request_data(self, request_id: str, body: bytes) -> dict[str, Any]:
        """The client's body for vLLM's serving code, with the engine's id (unique per attempt, as
        for plain requests) and the priority this engine can honour."""
        data = json.loads(body)
        data["request_id"] = request_id
        data["priority"] = data.get("priority", 0) if self._priority_enabled else 0
        return data

    async def _embed(self, request_id: str, body: bytes) -> AsyncIterator[Delta]:
        """/v1/embeddings by vLLM's pooling serving code (a model run with runner=pooling): one whole
        response, as vLLM's server writes it."""
        from pydantic import TypeAdapter, ValidationError
        from vllm.entrypoints.pooling.embed.protocol import EmbeddingRequest
        from vllm.exceptions import VLLMClientError
        from vllm.v1.engine.exceptions import EngineDeadError

        serving = getattr(self._serving, "serving_embedding", None) if self._serving is not None else None
        if serving is None:
            raise Unsupported("this worker's model is not an embedding model (run it with runner=pooling)")
        data = self._request_data(request_id, body)
        try:
            request = TypeAdapter(EmbeddingRequest).validate_python(data)
            result = await serving(request, None)
        except ValidationError as exc:
            # A union of request shapes: its locations start with the shape's name, not a field.
            raise _invalid(exc, fields=data) from None
        except EngineDeadError as exc:
            raise EngineUnavailable(f"engine died: {exc}") from None
        except (ValueError, TypeError, VLLMClientError) as exc:  # vLLM's checks of the request
            raise InvalidRequest(str(exc), _param_of(exc)) from None
        answer = bytes(result.body)
        if result.status_code >= 400:
            error = json.loads(answer).get("error") or {}
            if result.status_code >= 500:
                raise EngineUnavailable(str(error.get("message")))
            raise InvalidRequest(str(error.get("message")), error.get("param"))
        yield Delta([], "", openai_body=answer)
        yield Delta([], "", finish_reason="stop")

    async def abort(self, request_id: str) -> None:
        if self._llm is not None:
            await self._llm.abort(request_id)

    @property
    def llm(self) -> Any:
        """The AsyncLLM itself, for vLLM's own OpenAI server (services/worker/openai_http.py)."""
        return self._llm

    @property
    def dead(self) -> bool:
        return bool(self._llm is not None and getattr(self._llm, "errored", False))

    async def stop(self) -> None:
        for task in self.background:
            await cancel_and_wait(task)
        self.background.clear()
        if self._llm is not None:
            self._llm.shutdown()
            self._llm = None
