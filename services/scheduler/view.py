"""The scheduler's live view of the workers.

Membership comes from two places: etcd registrations (authoritative, but
slow to notice a death: up to one lease TTL) and the workers' report streams
(instant: a broken stream marks the worker unhealthy at once). A worker is
kept while either says it exists, so an etcd outage or restart does not
empty the view, and a dead worker stops receiving requests before its
lease expires.

With TLS (``require_stream``) a worker is placeable only while both say it
exists: its etcd registration, and a report stream, which the scheduler's
authorization lets only a worker certificate open. Anyone who can write to
etcd, or holds some other cluster certificate, cannot add a worker that
receives requests.

Placements not yet visible in a load report are counted as pending load, so
a burst of requests between two reports does not all land on the same worker.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from tessera.engine_model.catalog.expert_parallel import pick_dp_rank
from tessera.engine_model.perf.step_scale import corrected_speed
from tessera.placement.kv_compat import KVCompat
from tessera.placement.snapshot import WorkerSnapshot
from tessera.runtime.rpc.enums import role_name
from tessera.v1 import common_pb2 as pb

# A placement made this long before a load report was received is assumed to
# be reflected in that report (the router calls the worker within a few ms).
PENDING_REFLECTED_AFTER_S = 0.05
# Pending placements older than this are dropped even without a report.
PENDING_MAX_AGE_S = 2.0


@dataclass
class WorkerEntry:
    identity: pb.WorkerIdentity
    load: pb.LoadReport = field(default_factory=pb.LoadReport)
    registered: bool = False
    streams: int = 0  # open report streams (a reconnect can overlap)
    stream_lost: bool = False  # a stream broke and none is open now
    last_report_monotonic: float = 0.0
    last_report_unix_ms: int = 0
    pending: deque = field(default_factory=deque)  # (monotonic time, tokens) of unreported placements
    started_seen: int = -1  # the worker's requests_started in its last report (-1: none yet)
    speed: dict[str, float] = field(default_factory=dict)  # from the performance model (worker_speed.py)
    cached: WorkerSnapshot | None = None  # the snapshot, until anything it shows changes
    rank_placements: deque = field(default_factory=deque)  # (monotonic time, DP rank) of recent placements
    require_stream: bool = False  # placeable only with both a registration and an open report stream
    kv_compat: KVCompat | None = None  # from the identity (kv_compat_of), what pairs it may join

    @property
    def healthy(self) -> bool:
        if self.load.stalled:  # the worker says its engine is hung: nothing new goes there
            return False
        if self.require_stream:
            return self.registered and self.streams > 0
        return self.streams > 0 or (self.registered and not self.stream_lost)

    def prune_pending(self, now: float) -> None:
        while self.pending and now - self.pending[0][0] > PENDING_MAX_AGE_S:
            self.pending.popleft()
            self.cached = None

    def snapshot(self) -> WorkerSnapshot:
        if self.cached is None:
            self.cached = self._build()
        return self.cached

    def _build(self) -> WorkerSnapshot:
        ident, load = self.identity, self.load
        pending_tokens = sum(t for _, t in self.pending)
        return WorkerSnapshot(
            id=ident.id,
            address=ident.address,
            model=ident.model,
            role=role_name(ident.role),
            vendor=ident.vendor or "cpu",
            accelerator=ident.accelerator,
            healthy=self.healthy,
            draining=load.draining,
            num_waiting=load.num_waiting + len(self.pending),
            pending=len(self.pending),
            num_running=load.num_running,
            kv_cache_usage=load.kv_cache_usage,
            tokens_in_flight=load.tokens_in_flight + pending_tokens,
            kv_block_size=ident.kv_block_size or 16,
            kv_capacity_blocks=ident.kv_capacity_blocks,
            max_model_len=ident.max_model_len,
            max_num_seqs=ident.max_num_seqs,
            prefill_tokens_waiting=load.prefill_tokens_waiting + pending_tokens,
            kv_compat=self.kv_compat,
            # the model's speed for this hardware, corrected by what the worker learnt of its machine
            **corrected_speed(self.speed, load.prefill_time_scale, load.decode_time_scale),
        )


def kv_compat_of(identity: pb.WorkerIdentity) -> KVCompat | None:
    """The worker's published KV format as placement reads it; None when it published none."""
    if not identity.HasField("kv_compat"):
        return None
    c = identity.kv_compat
    return KVCompat(
        engine=c.engine,
        engine_version=c.engine_version,
        model=c.model,
        dtype=c.dtype,
        kv_cache_dtype=c.kv_cache_dtype,
        block_size=c.block_size,
        kv_layout=c.kv_layout,
        attention_backend=c.attention_backend,
        tensor_parallel=c.tensor_parallel,
        kv_connector=c.kv_connector,
        num_kv_heads=c.num_kv_heads,
    )


RANK_WINDOW_S = 10.0  # how long a placement counts towards its DP rank's load


class ClusterView:
    def __init__(
        self,
        speed_of: Callable[[pb.WorkerIdentity], dict[str, float]] | None = None,
        require_stream: bool = False,
    ) -> None:
        self.workers: dict[str, WorkerEntry] = {}
        self.require_stream = require_stream
        self._speed_of = speed_of
        self._model_paths: dict[str, str] = {}  # served model -> the folder its workers load
        self.on_joined: list[Callable[[pb.WorkerIdentity], None]] = []  # a worker appeared
        self.on_left: list[Callable[[str], None]] = []  # a worker is gone for good

    def _new_entry(self, identity: pb.WorkerIdentity) -> WorkerEntry:
        entry = self.workers[identity.id] = WorkerEntry(identity, require_stream=self.require_stream)
        self._identity_changed(entry)
        return entry

    def _identity_changed(self, entry: WorkerEntry) -> None:
        entry.speed = self._speed_of(entry.identity) if self._speed_of else {}
        entry.kv_compat = kv_compat_of(entry.identity)
        if entry.identity.model_path:
            self._model_paths[entry.identity.model] = entry.identity.model_path
        entry.cached = None
        for hook in self.on_joined:
            hook(entry.identity)

    def _remove(self, worker_id: str) -> None:
        del self.workers[worker_id]
        for hook in self.on_left:
            hook(worker_id)

    # -- etcd ------------------------------------------------------------------
    def registered(self, identity: pb.WorkerIdentity) -> None:
        entry = self.workers.get(identity.id)
        if entry is None:
            entry = self._new_entry(identity)
        elif entry.identity != identity:
            entry.identity = identity
            self._identity_changed(entry)
        entry.registered = True
        entry.cached = None

    def unregistered(self, worker_id: str) -> None:
        entry = self.workers.get(worker_id)
        if entry is None:
            return
        entry.registered = False
        entry.cached = None
        if entry.streams == 0:
            self._remove(worker_id)

    # -- report streams ------------------------------------------------------
    def stream_opened(self, identity: pb.WorkerIdentity) -> None:
        entry = self.workers.get(identity.id)
        if entry is None:
            entry = self._new_entry(identity)
        entry.streams += 1
        entry.stream_lost = False
        entry.cached = None

    def stream_closed(self, worker_id: str) -> None:
        entry = self.workers.get(worker_id)
        if entry is None:
            return
        entry.streams = max(0, entry.streams - 1)
        entry.cached = None
        if entry.streams == 0:
            entry.stream_lost = True
            if not entry.registered:
                self._remove(worker_id)

    def load_reported(self, worker_id: str, load: pb.LoadReport) -> None:
        entry = self.workers.get(worker_id)
        if entry is None:
            return
        now = time.monotonic()
        entry.load = load
        entry.last_report_monotonic = now
        entry.last_report_unix_ms = load.timestamp_unix_ms
        entry.cached = None
        if load.requests_started and entry.started_seen >= 0:
            # Each request the worker started since its last report settles one pending placement.
            for _ in range(max(0, load.requests_started - entry.started_seen)):
                if not entry.pending:
                    break
                entry.pending.popleft()
        elif not load.requests_started:
            # A worker that does not count its starts: assume a placement shows after a short while.
            while entry.pending and entry.pending[0][0] < now - PENDING_REFLECTED_AFTER_S:
                entry.pending.popleft()
        entry.started_seen = load.requests_started

    # -- placement -------------------------------------------------------------
    def placed(self, worker_id: str, tokens: int) -> None:
        entry = self.workers.get(worker_id)
        if entry is not None:
            entry.pending.append((time.monotonic(), tokens))
            entry.cached = None

    def choose_rank(self, worker_id: str) -> int | None:
        """The DP rank of a multi-rank instance to pin a request to; None for a single-rank one.

        The worker reports each rank's queue and KV usage (LoadReport.ranks);
        placements made since that report are added as waiting (without any
        report, the recent placements alone), and the load is scored as vLLM's
        DP balancer scores it (tessera.engine_model.catalog.expert_parallel.pick_dp_rank). Pinning keeps a
        request's retries and a session's turns on the rank whose prefix cache
        the scheduler reasons about; leaving it to vLLM would hide the choice.
        """
        entry = self.workers.get(worker_id)
        if entry is None or len(entry.identity.data_parallel_ranks) < 2:
            return None
        now = time.monotonic()
        recent = entry.rank_placements
        while recent and now - recent[0][0] > RANK_WINDOW_S:
            recent.popleft()
        reported = {r.data_parallel_rank: r for r in entry.load.ranks}
        lately = Counter(r for _, r in recent)  # one pass over the window, not one per rank
        since = Counter(r for t, r in recent if not reported or t > entry.last_report_monotonic)
        loads = {}
        for rank in entry.identity.data_parallel_ranks:
            # The worker's per-rank figures, plus what this scheduler sent there since that report.
            base = reported.get(rank, pb.LoadReport())
            loads[rank] = pb.LoadReport(
                num_running=base.num_running,
                num_waiting=base.num_waiting + since[rank],
                kv_cache_usage=base.kv_cache_usage,
            )
        rank = pick_dp_rank(loads, recent=lately)
        recent.append((now, rank))
        return rank

    def model_path(self, model: str) -> str:
        """The folder (or hub id) workers load `model` from: where its architecture is read.
        Kept as workers join, not searched per placement (this is on the placement path)."""
        return self._model_paths.get(model, "")

    def snapshots(self, model: str | None = None) -> list[WorkerSnapshot]:
        now = time.monotonic()
        out = []
        for entry in self.workers.values():
            if model is None or entry.identity.model == model:
                entry.prune_pending(now)
                out.append(entry.snapshot())
        return out
