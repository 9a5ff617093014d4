"""One simulated inference engine: vLLM's continuous batching, without weights.

Each call to `schedule()` forms the next step the way vLLM's v1 scheduler
does: running requests first (a decode token each, or the next chunk of an
unfinished prefill), then waiting requests in arrival order while the token
budget, the sequence limit and the KV cache allow; a prompt longer than the
remaining budget is prefilled in chunks. When a running request needs a block
and none is free, the most recently admitted request is preempted: its blocks
are freed (their cached content stays findable) and it is recomputed later.
A decode instance of a disaggregated pair takes requests whose prompt was
prefilled elsewhere (`remote_kv`): on admission their blocks are allocated
and they wait, outside the batch, while the KV cache arrives (the step lists
them in `loading`; the caller knows how long the copy takes and calls
`kv_arrived`); then, as vLLM does, they compute only the last prompt token.
`complete(step)` then advances every scheduled request as if the step ran:
prefix-cache blocks are registered, a token is emitted where a sequence's
computation reached its end, finished requests free their blocks.

The model has no clock. The step's duration comes from the performance model
(see StepTimer); the worker's sim engine sleeps that long on the wall clock,
the discrete-event simulator advances virtual time by it. Same code, so the two
agree.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from tessera.engine_model.block_pool import BlockPool, KVEvents

WAITING, LOADING, RUNNING, FINISHED = "waiting", "loading", "running", "finished"


@dataclass(frozen=True)
class EngineConfig:
    """The scheduler limits of one engine instance (vLLM's names)."""

    num_blocks: int
    block_size: int = 16
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    max_model_len: int = 32768
    enable_prefix_caching: bool = True

    def __post_init__(self) -> None:
        if self.block_size <= 0 or self.max_num_seqs <= 0 or self.max_num_batched_tokens <= 0:
            raise ValueError("block_size, max_num_seqs and max_num_batched_tokens must be positive")


@dataclass(eq=False)
class EngineRequest:
    """A request inside the engine.

    block_hashes: chained content hashes of the request's full blocks at the
    engine's block size, as far as content is known (prompt, and output too
    where the caller knows it): what the prefix cache matches on. Blocks past
    the end of this list are never shared.
    """

    request_id: str
    prompt_tokens: int
    max_tokens: int
    block_hashes: Sequence[int] = ()
    priority: int = 0
    remote_kv: bool = False  # the prompt's KV comes from a prefill instance, not from computing it
    # state, owned by the engine model
    status: str = WAITING
    num_computed: int = 0
    num_output: int = 0
    blocks: list[int] = field(default_factory=list)
    num_registered_blocks: int = 0  # leading blocks already offered to the prefix cache
    cached_prompt_tokens: int = -1  # prefix-cache hit on first admission (-1: not admitted yet)
    num_preemptions: int = 0
    remote_tokens: int = 0  # prompt tokens whose KV had to be copied in (the rest was cached here)

    @property
    def num_tokens(self) -> int:
        """Tokens that exist (prompt plus output so far); all but the newest output are computed when caught up."""
        return self.prompt_tokens + self.num_output

    @property
    def prefilling(self) -> bool:
        return self.num_computed < self.prompt_tokens


@dataclass
class ScheduledStep:
    """One step's batch: which requests run and with how many tokens each."""

    requests: list[EngineRequest] = field(default_factory=list)
    new_tokens: list[int] = field(default_factory=list)
    computed_before: list[int] = field(default_factory=list)
    preempted: list[EngineRequest] = field(default_factory=list)
    loading: list[EngineRequest] = field(default_factory=list)  # blocks allocated, KV copy starts now

    @property
    def empty(self) -> bool:
        """Nothing to compute (requests that only started loading their KV cost no compute)."""
        return not self.requests

    def batch(self) -> tuple[list[tuple[int, int]], list[int]]:
        """(prefill chunks as (new, prefix), decode contexts): what the performance model prices.
        A request computing exactly one token past a complete prompt is a decode."""
        prefill: list[tuple[int, int]] = []
        decode: list[int] = []
        for req, n, before in zip(self.requests, self.new_tokens, self.computed_before):
            if n == 1 and before >= req.prompt_tokens:
                decode.append(before)
            else:
                prefill.append((n, before))
        return prefill, decode


@dataclass
class StepOutcome:
    """What a completed step produced."""

    emitted: list[EngineRequest] = field(default_factory=list)  # one new token each
    finished: list[EngineRequest] = field(default_factory=list)
    kv_events: KVEvents = field(default_factory=KVEvents)


class BatchingEngine:
    def __init__(self, config: EngineConfig, on_admit: Callable[[EngineRequest], None] | None = None) -> None:
        self.config = config
        self.pool = BlockPool(config.num_blocks, config.enable_prefix_caching)
        self.waiting: deque[EngineRequest] = deque()
        self.running: list[EngineRequest] = []
        self.loading: dict[str, EngineRequest] = {}  # remote-KV requests holding blocks, copy in flight
        self._by_id: dict[str, EngineRequest] = {}
        self.pending_prefill_tokens = 0  # tokens to compute before requests' next outputs (prefill and recompute)
        self.prefix_queries = 0  # prompt tokens looked up in the prefix cache (every admission)
        self.prefix_hits = 0  # of which were found
        self._on_admit = on_admit

    # -- requests --------------------------------------------------------------------------
    def add(self, req: EngineRequest) -> None:
        if req.request_id in self._by_id:
            raise ValueError(f"request {req.request_id} is already in the engine")
        if req.prompt_tokens <= 0 or req.max_tokens <= 0:
            raise ValueError("a request needs a prompt and at least one output token")
        if req.prompt_tokens + req.max_tokens > self.config.max_model_len:
            raise ValueError(
                f"{req.prompt_tokens} prompt + {req.max_tokens} output tokens exceed the "
                f"context of {self.config.max_model_len}"
            )
        if self._blocks_for(req.prompt_tokens + req.max_tokens - 1) > self.config.num_blocks:
            raise ValueError(f"request needs more KV blocks than the engine has ({self.config.num_blocks})")
        self._by_id[req.request_id] = req
        self.waiting.append(req)
        self.pending_prefill_tokens += _to_prefill(req)

    def abort(self, request_id: str) -> EngineRequest | None:
        req = self._by_id.pop(request_id, None)
        if req is None:
            return None
        self.pending_prefill_tokens -= _to_prefill(req)
        if req.status == RUNNING:
            self.running.remove(req)
        elif req.status == WAITING:
            self.waiting.remove(req)
        elif req.status == LOADING:
            del self.loading[request_id]
        self.pool.free(req.blocks)
        req.blocks = []
        req.status = FINISHED
        return req

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        """Requests not in the batch: queued, or waiting for their KV to arrive (as vLLM counts them)."""
        return len(self.waiting) + len(self.loading)

    def kv_arrived(self, request_id: str) -> None:
        """A loading request's KV copy finished: it queues first, to compute the last prompt token
        (vLLM recomputes it for the logits of the first output token)."""
        req = self.loading.pop(request_id)
        req.remote_kv = False
        req.num_computed = req.prompt_tokens - 1
        req.status = WAITING
        self.waiting.appendleft(req)

    @property
    def kv_usage(self) -> float:
        return self.pool.usage

    def _blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.config.block_size)

    # -- one step ------------------------------------------------------------------------
    def schedule(self) -> ScheduledStep:
        cfg = self.config
        step = ScheduledStep()
        budget = cfg.max_num_batched_tokens

        i = 0
        while i < len(self.running) and budget > 0:
            req = self.running[i]
            n = min(req.num_tokens - req.num_computed, budget)
            if n <= 0:
                i += 1
                continue
            need = self._blocks_for(req.num_computed + n) - len(req.blocks)
            while need > self.pool.num_free:
                victim = self.running.pop()  # the newest admitted goes first
                self._preempt(victim)
                step.preempted.append(victim)
                if victim is req:
                    break
            if req.status != RUNNING:
                continue  # preempted itself; running[i] is the next one now
            if need > 0:
                req.blocks.extend(self.pool.allocate(need))
            self._schedule(step, req, n)
            budget -= n
            i += 1

        while not step.preempted and self.waiting and budget > 0 and len(self.running) < cfg.max_num_seqs:
            req = self.waiting[0]
            if req.blocks:  # its KV arrived: the last prompt token is left
                n = min(req.num_tokens - req.num_computed, budget)
                if not self._claim(req, req.blocks, req.num_computed + n):
                    break
                self._run(step, req, n)
                budget -= n
                continue
            # Longest cached prefix, but at least one token must be computed to produce logits.
            hit_blocks = self.pool.cached_prefix(req.block_hashes, (req.num_tokens - 1) // cfg.block_size)
            hit_tokens = len(hit_blocks) * cfg.block_size
            if req.remote_kv:  # blocks for the whole prompt, then the copy
                if not self._claim(req, hit_blocks, req.prompt_tokens):
                    break
                self._start_loading(step, req, hit_tokens)
                continue
            n = min(req.num_tokens - hit_tokens, budget)
            if not self._claim(req, hit_blocks, hit_tokens + n):
                break  # head of the queue waits for room (FCFS)
            self.pending_prefill_tokens -= _to_prefill(req)
            req.num_computed = hit_tokens
            self.pending_prefill_tokens += _to_prefill(req)
            req.num_registered_blocks = len(hit_blocks)
            self.prefix_queries += req.num_tokens
            self.prefix_hits += hit_tokens
            if req.cached_prompt_tokens < 0:
                req.cached_prompt_tokens = min(hit_tokens, req.prompt_tokens)
            self._run(step, req, n)
            budget -= n
        return step

    def _claim(self, req: EngineRequest, held: list[int], tokens: int) -> bool:
        """Take the head of the queue with blocks for `tokens` tokens, `held` (cache hits or its own)
        first; False, leaving everything as it was, when the free blocks do not stretch that far."""
        need = self._blocks_for(tokens) - len(held)
        if need > self.pool.num_free - self.pool.evictable_among(held):
            return False
        self.waiting.popleft()
        if held is not req.blocks:
            self.pool.touch(held)
        req.blocks = held + self.pool.allocate(max(0, need))
        return True

    def _run(self, step: ScheduledStep, req: EngineRequest, n: int) -> None:
        req.status = RUNNING
        self.running.append(req)
        if self._on_admit:
            self._on_admit(req)
        self._schedule(step, req, n)

    def _start_loading(self, step: ScheduledStep, req: EngineRequest, hit_tokens: int) -> None:
        req.num_registered_blocks = hit_tokens // self.config.block_size
        req.cached_prompt_tokens = hit_tokens
        req.remote_tokens = req.prompt_tokens - hit_tokens
        req.status = LOADING
        self.loading[req.request_id] = req
        step.loading.append(req)

    @staticmethod
    def _schedule(step: ScheduledStep, req: EngineRequest, n: int) -> None:
        step.requests.append(req)
        step.new_tokens.append(n)
        step.computed_before.append(req.num_computed)

    def _preempt(self, req: EngineRequest) -> None:
        self.pool.free(req.blocks)
        req.blocks = []
        self.pending_prefill_tokens -= _to_prefill(req)
        req.num_computed = 0
        self.pending_prefill_tokens += _to_prefill(req)
        req.num_registered_blocks = 0
        req.status = WAITING
        req.num_preemptions += 1
        self.waiting.appendleft(req)

    def complete(self, step: ScheduledStep) -> StepOutcome:
        """Advance the requests of `step` as if it ran."""
        out = StepOutcome()
        bs = self.config.block_size
        for req, n in zip(step.requests, step.new_tokens):
            if req.status != RUNNING:
                continue  # aborted while the step ran
            self.pending_prefill_tokens -= _to_prefill(req)
            req.num_computed += n
            full = min(req.num_computed // bs, len(req.block_hashes))
            hashes = req.block_hashes
            for b in range(req.num_registered_blocks, full):
                self.pool.cache_block(req.blocks[b], hashes[b], hashes[b - 1] if b else None, (req, b))
            req.num_registered_blocks = max(req.num_registered_blocks, full)
            if req.num_computed < req.num_tokens:
                self.pending_prefill_tokens += _to_prefill(req)
                continue  # mid-prefill chunk: no token yet
            req.num_output += 1
            out.emitted.append(req)
            if req.num_output >= req.max_tokens:
                self._finish(req)
                out.finished.append(req)
            else:
                self.pending_prefill_tokens += _to_prefill(req)
        out.kv_events = self.pool.drain_events()
        return out

    def _finish(self, req: EngineRequest) -> None:
        self.running.remove(req)
        self._by_id.pop(req.request_id, None)
        self.pool.free(req.blocks)
        req.blocks = []
        req.status = FINISHED


def _to_prefill(req: EngineRequest) -> int:
    """Tokens a request must compute before its next output, when that is more than a decode's one
    (none for a prompt whose KV comes from a prefill instance)."""
    if req.remote_kv:
        return 0
    left = req.num_tokens - req.num_computed
    return left if left > 1 else 0
