"""The plain data a placement decision is made from."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class WorkerSnapshot:
    """One worker as the scheduler sees it at the moment of a decision."""

    id: str
    address: str
    model: str
    role: str = "mixed"           # mixed | prefill | decode
    vendor: str = "cpu"
    accelerator: str = "cpu"
    healthy: bool = True
    draining: bool = False
    num_waiting: int = 0          # queued in the engine, plus placements not yet reported
    num_running: int = 0
    kv_cache_usage: float = 0.0   # 0..1
    tokens_in_flight: int = 0
    kv_block_size: int = 16
    kv_capacity_blocks: int = 0   # 0: unknown
    max_model_len: int = 0        # 0: unknown

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
    block_hashes: tuple[int, ...] = ()


@dataclass(frozen=True)
class Decision:
    worker: WorkerSnapshot | None
    candidates: int                      # workers left after the filters
    scores: dict[str, float] = field(default_factory=dict)  # worker id -> weighted score
    reason: str = ""                     # why no worker, when worker is None
