"""The `sim` engine: one catalog accelerator serving one model, without weights, on the wall clock.

Behind the same Engine interface as vLLM, so the worker's gRPC service, load
reports and registration are the real ones, and a router and scheduler cannot
tell a simulated worker from a real one except by speed. The batching, prefix
cache and preemption are tessera.engine_model.batching's (the same code the
discrete-event simulator runs); each step lasts what the performance model
says, slept on the event loop. Output tokens are a fixed filler text, always
exactly max_tokens of them (a simulated model never stops early).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from google.protobuf.json_format import MessageToDict

from services.worker.engine import EngineInfo, EngineLoad, EngineUnavailable, InvalidRequest, Unsupported
from services.worker.kv_events import Event, Removed, Stored
from tessera.engine_model.batching import BatchingEngine, EngineConfig, EngineRequest
from tessera.engine_model.block_pool import KVEvents
from tessera.engine_model.perf.step_timer import StepTimer
from tessera.placement.block_hash import token_block_hashes
from tessera.placement.kv_compat import KVCompat, incompatibility
from tessera.runtime.rpc.delta import Delta
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.worker.sim")

FILLER = (
    "The simulated engine answers with this sentence, repeated as often as the request asks, "
    "so that clients receive real text at the speed the performance model predicts. "
)
# How far the engine may fall behind its own schedule before it stops catching up
# (a paused event loop should not be followed by a burst of instant steps).
MAX_CATCH_UP_S = 0.05


@dataclass
class _Stream:
    req: EngineRequest
    output_ids: list[int]
    token_ids: list[int]  # prompt + output: the content of the request's KV blocks
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)
    sent: int = 0  # output tokens already handed to the client
    text_sent: str = ""


def filler_run(prompt: list[int], filler: list[int]) -> int:
    """How many filler tokens (from the filler's start) end the prompt: a resumed request's output so far.

    A router resumes a broken stream by sending the tokens produced so far after the prompt; a
    real model then continues its own text. The simulated one does the same by continuing the
    filler where that run stops, so a resumed answer reads exactly as an unbroken one would
    (which is what the chaos benchmark's checker verifies). At least one prompt token is kept
    as the original prompt; the longest run wins.
    """
    n, period = len(prompt), len(filler)
    for k in range(n - 1, 0, -1):
        if prompt[-1] != filler[(k - 1) % period]:
            continue
        if all(prompt[n - 1 - j] == filler[(k - 1 - j) % period] for j in range(k)):
            return k
    return 0


class SimEngine:
    def __init__(
        self,
        config: EngineConfig,
        timer: StepTimer,
        tokenizer: Any | None,
        description: str,
        on_stats: Callable[[EngineLoad], None] | None = None,
        on_kv_events: Callable[[list[Event]], None] | None = None,
        kv_compat: pb.KVCompatibility | None = None,
        engine_id: str = "",
        transfer_s: Callable[[int], float] | None = None,
    ) -> None:
        """kv_compat: this engine's published KV format; with it, the engine takes part in prefill/decode
        hand-offs as vLLM's connector does (see `_remote`). transfer_s(tokens): a KV copy's seconds."""
        self.config = config
        self.timer = timer
        self.tokenizer = tokenizer
        self.model = BatchingEngine(config)
        self.model.pool.record_events = on_kv_events is not None
        self.info = EngineInfo(
            "sim",
            description,
            config.block_size,
            config.num_blocks,
            config.max_model_len,
            config.max_num_seqs,
            kv_compat,
        )
        self.engine_id = engine_id
        self.transfer_s = transfer_s or (lambda tokens: 0.0)
        self.kv_pulls_failed = 0  # hand-offs refused since the last stats (reported, then reset)
        self._on_stats = on_stats
        self._on_kv_events = on_kv_events
        self._streams: dict[str, _Stream] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task | None = None
        self._filler_ids: list[int] = tokenizer.encode(FILLER, add_special_tokens=False).ids if tokenizer else [0]
        self.dead = False
        self.frozen = False  # fault injection: a hung engine (SIGUSR1 toggles it; see services/worker/main.py)
        self._thaw = asyncio.Event()
        self.steps = 0
        self._reported = (0, 0)
        self.llm = None  # no vLLM underneath: the worker serves no vLLM HTTP app

    async def start(self) -> None:
        self._loop_task = asyncio.create_task(self._run(), name="sim-engine")

    def toggle_frozen(self) -> None:
        """Fault injection for chaos tests: stop stepping (every request hangs, gRPC stays up), or go on."""
        self.frozen = not self.frozen
        if not self.frozen:
            self._thaw.set()
        log.warning("simulated engine %s (fault injection)", "frozen" if self.frozen else "thawed")

    async def stop(self) -> None:
        if self._loop_task:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
        for stream in self._streams.values():
            stream.queue.put_nowait(None)

    # -- requests ----------------------------------------------------------------------------
    async def generate(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        sampling: pb.SamplingParams,
        kv_transfer_params: dict[str, Any] | None = None,
        priority: int = 0,
        data_parallel_rank: int | None = None,
    ) -> AsyncIterator[Delta]:
        if self.dead:
            raise EngineUnavailable("the simulated engine has stopped")
        prompt = len(prompt_token_ids)
        limit = self.config.max_model_len
        max_tokens = sampling.max_tokens if sampling.HasField("max_tokens") else limit - prompt
        if prompt == 0:
            raise InvalidRequest("the prompt is empty")
        if prompt + max_tokens > limit:
            raise InvalidRequest(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{prompt + max_tokens} tokens ({prompt} in the messages, {max_tokens} in the completion)."
            )
        if max_tokens <= 0:
            raise InvalidRequest("max_tokens must be at least 1", "max_tokens")
        filler = self._filler_ids
        start = filler_run(prompt_token_ids, filler)
        output = [filler[(start + i) % len(filler)] for i in range(max_tokens)]
        hashes = token_block_hashes(list(prompt_token_ids) + output, self.config.block_size)
        # (the engine's own block hashes; schedulers re-hash the published token ids canonically)
        remote_kv, hand_off = self._remote(request_id, kv_transfer_params)
        req = EngineRequest(request_id, prompt, max_tokens, hashes, priority, remote_kv=remote_kv)
        try:
            self.model.add(req)
        except ValueError as exc:
            raise InvalidRequest(str(exc)) from None
        stream = _Stream(req, output, list(prompt_token_ids) + output)
        self._streams[request_id] = stream
        self._wake.set()
        self._publish_stats()
        finished = False
        try:
            while True:
                chunk = await stream.queue.get()
                if chunk is None:
                    raise EngineUnavailable("the simulated engine stopped")
                if chunk.finish_reason and hand_off is not None:
                    chunk.kv_transfer_params = hand_off
                yield chunk
                if chunk.finish_reason:
                    finished = True
                    return
        finally:
            self._streams.pop(request_id, None)
            if not finished:
                self.model.abort(request_id)
                self._publish_stats()

    def _remote(self, request_id: str, params: dict[str, Any] | None) -> tuple[bool, dict[str, Any] | None]:
        """A prefill/decode hand-off, as vLLM's NIXL connector runs it: (whether this request's prompt KV
        is pulled from a prefill worker, the parameters a prefill hands to its decode worker).

        Prefill side (do_remote_decode): the prompt is computed here and the answer carries where its
        KV is, with this engine's descriptor (vLLM's handshake carries its compatibility hash). Decode
        side (do_remote_prefill): the KV is "pulled" (the copy takes transfer_s) when the writer's
        descriptor is one this engine can read (tessera.placement.kv_compat); otherwise the handshake
        is refused, counted (kv_pulls_failed) and the prompt recomputed here, as vLLM's
        kv_load_failure_policy=recompute does.
        """
        if not params or self.info.kv_compat is None:
            return False, None
        own = MessageToDict(self.info.kv_compat, preserving_proto_field_name=True)
        if params.get("do_remote_decode"):
            return False, {
                "do_remote_prefill": True,
                "do_remote_decode": False,
                "remote_engine_id": self.engine_id,
                "remote_request_id": request_id,
                "tessera_kv_compat": own,
            }
        if params.get("do_remote_prefill"):
            theirs = params.get("tessera_kv_compat")
            why = (
                incompatibility(kv_compat_from(theirs), kv_compat_from(own))
                if isinstance(theirs, dict)
                else "no descriptor"
            )
            if not why:
                return True, None
            self.kv_pulls_failed += 1
            log.warning(
                "request %s: KV from %s refused (%s); recomputing the prompt",
                request_id,
                params.get("remote_engine_id", "?"),
                why,
            )
        return False, None

    def _kv_arrived(self, request_id: str) -> None:
        if request_id in self.model.loading:
            self.model.kv_arrived(request_id)
            self._wake.set()

    async def generate_openai(
        self, request_id: str, endpoint: str, body: bytes, priority: int = 0
    ) -> AsyncIterator[Delta]:
        """Refused: tools, structured output, logprobs and the like need vLLM's serving code and a
        real model (the router names the fields in its 400)."""
        raise Unsupported("the simulated engine does not run vLLM's OpenAI serving code; serve the model with vLLM")
        yield  # an async generator, as the Engine protocol has it

    async def abort(self, request_id: str) -> None:
        stream = self._streams.pop(request_id, None)
        self.model.abort(request_id)
        if stream is not None:
            stream.queue.put_nowait(Delta([], "", finish_reason="abort"))

    # -- the step loop ---------------------------------------------------------------------
    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        step_end = loop.time()
        try:
            while True:
                if self.frozen:
                    self._thaw.clear()
                    await self._thaw.wait()
                    step_end = loop.time()
                step = self.model.schedule()
                for req in step.loading:  # blocks allocated for a pulled prompt: the copy starts
                    loop.call_later(self.transfer_s(req.remote_tokens), self._kv_arrived, req.request_id)
                if step.empty:
                    self._wake.clear()
                    await self._wake.wait()
                    step_end = loop.time()
                    continue
                prefill, decode = step.batch()
                # Steps follow each other back to back on the engine's own schedule, so the
                # event loop's wake-up jitter does not accumulate into lost time.
                step_end = max(step_end + self.timer(prefill, decode), loop.time() - MAX_CATCH_UP_S)
                delay = step_end - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                out = self.model.complete(step)
                self.steps += 1
                for req in out.emitted:
                    self._emit(req)
                if out.kv_events and self._on_kv_events:
                    self._on_kv_events(self._relay_events(out.kv_events))
                self._publish_stats()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("the simulated engine failed")
            self.dead = True
            for stream in self._streams.values():
                stream.queue.put_nowait(None)

    def _relay_events(self, events: KVEvents) -> list[Event]:
        """The engine model's events with each stored block's token ids, as vLLM publishes them."""
        out: list[Event] = []
        bs = self.config.block_size
        for block_hash, parent, origin in events.stored:
            req, b = cast(tuple[EngineRequest, int], origin)  # what the engine model passes along
            stream = self._streams.get(req.request_id)
            if stream is None:
                continue
            out.append(Stored(block_hash, parent, tuple(stream.token_ids[b * bs : (b + 1) * bs])))
        out.extend(Removed(h) for h in events.removed)
        return out

    def _emit(self, req: EngineRequest) -> None:
        stream = self._streams.get(req.request_id)
        if stream is None:
            return
        new_ids = stream.output_ids[stream.sent : req.num_output]
        stream.sent = req.num_output
        text = self._detokenize(stream)
        done = req.num_output >= req.max_tokens
        stream.queue.put_nowait(
            Delta(
                new_ids,
                text,
                finish_reason="length" if done else None,
                cached_prompt_tokens=max(0, req.cached_prompt_tokens),
            )
        )

    def _detokenize(self, stream: _Stream) -> str:
        """New text since the last chunk (decodes a short window, as vLLM's incremental detokenizer does)."""
        if self.tokenizer is None:
            return ""
        start = max(0, stream.sent - 8)
        window = self.tokenizer.decode(stream.output_ids[start : stream.sent])
        before = self.tokenizer.decode(stream.output_ids[start : stream.sent - 1]) if stream.sent > 1 else ""
        return window[len(before) :] if window.startswith(before) else window[-1:]

    def _publish_stats(self) -> None:
        """The engine's figures, with prefix-cache lookups since the last report (as vLLM's stats are)."""
        if self._on_stats:
            m = self.model
            queries, hits = m.prefix_queries - self._reported[0], m.prefix_hits - self._reported[1]
            self._reported = (m.prefix_queries, m.prefix_hits)
            failed, self.kv_pulls_failed = self.kv_pulls_failed, 0
            self._on_stats(EngineLoad(m.num_running, m.num_waiting, m.kv_usage, queries, hits, kv_pulls_failed=failed))


def open_tokenizer(model_path: str) -> Any | None:
    """The model's fast tokenizer (tokenizer.json), or None when the folder has none."""
    path = Path(model_path) / "tokenizer.json"
    if not path.is_file():
        return None
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(path))


def kv_compat_from(fields: dict[str, Any]) -> KVCompat:
    """A descriptor as a hand-off's parameters carry it (proto field names; numbers as they came)."""
    return KVCompat(
        engine=str(fields.get("engine", "")),
        engine_version=str(fields.get("engine_version", "")),
        model=str(fields.get("model", "")),
        dtype=str(fields.get("dtype", "")),
        kv_cache_dtype=str(fields.get("kv_cache_dtype", "")),
        block_size=int(fields.get("block_size", 0)),
        kv_layout=str(fields.get("kv_layout", "")),
        attention_backend=str(fields.get("attention_backend", "")),
        tensor_parallel=int(fields.get("tensor_parallel", 0)),
        kv_connector=str(fields.get("kv_connector", "")),
        num_kv_heads=int(fields.get("num_kv_heads", 0)),
    )
