"""The plain data a placement decision is made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tessera.placement.kv_compat import KVCompat


@dataclass(frozen=True)
class WorkerSnapshot:
    """One worker as the scheduler sees it at the moment of a decision."""

    id: str
    address: str
    model: str
    role: str = "mixed"  # mixed | prefill | decode
    vendor: str = "cpu"
    accelerator: str = "cpu"
    healthy: bool = True
    draining: bool = False
    num_waiting: int = 0  # queued in the engine, plus placements not yet reported
    pending: int = 0  # of which placements not yet reflected in a load report
    num_running: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    tokens_in_flight: int = 0
    kv_block_size: int = 16
    kv_capacity_blocks: int = 0  # 0: unknown
    max_model_len: int = 0  # 0: unknown
    max_num_seqs: int = 0  # the engine's batch slots, 0: unknown
    prefill_tokens_waiting: int = 0  # prompt tokens admitted but not yet computed
    # What the worker's hardware can do, from the performance model (0: unknown):
    prefill_tokens_per_s: float = 0.0  # prefill throughput on a long prompt
    decode_base_s: float = 0.0  # one decode step of a single sequence (2k context)
    decode_step_s: float = 0.0  # one decode step of 16 sequences (2k context)
    kv_compat: KVCompat | None = None  # its KV format: who it may pair with (kv_compat.py); None: nobody

    def step_seconds(self, sequences: int) -> float:
        """A decode step of `sequences` sequences, interpolated from the two measured points."""
        if sequences <= 0:
            return 0.0
        per_seq = max(0.0, self.decode_step_s - self.decode_base_s) / 15.0
        return self.decode_base_s + per_seq * (sequences - 1)

    @property
    def kv_capacity_tokens(self) -> int:
        return self.kv_block_size * self.kv_capacity_blocks


@dataclass(frozen=True)
class RequestInfo:
    """What a decision knows about the request (the router computed it once)."""

    request_id: str
    model: str
    prompt_tokens: int
    max_tokens: int = 0
    exclude: frozenset[str] = field(default_factory=frozenset)
    session_id: str = ""
    priority: int = 0
    block_hashes: tuple[int, ...] = ()  # canonical 16-token chained hashes of the prompt (prefix_index.py)
    ttft_slo_s: float = 0.0  # time-to-first-token objective, 0: none
    over_fair_share: bool = False  # its tenant holds its share already: not a worker's reserved slots


@dataclass
class PlacementContext:
    """Per-request facts the pipeline works out once and every scorer and picker may read."""

    prefix_hits: dict[str, int] = field(default_factory=dict)  # worker id -> prompt tokens already cached
    now: float = 0.0  # seconds, the caller's clock
    session_worker: str = ""  # the worker that served this request's session last, if known
    index: Any = None  # the pipeline's PrefixIndex, for pickers that weigh cache contents


@dataclass(frozen=True)
class PlacementDecision:
    worker: WorkerSnapshot | None
    candidates: int  # workers left after the filters
    scores: dict[str, float] = field(default_factory=dict)  # worker id -> weighted score
    reason: str = ""  # why no worker, when worker is None
    prefix_hit_tokens: int = 0  # prompt tokens the chosen worker is believed to hold
    saturated: bool = False  # no worker, because every one failed the saturation filter
