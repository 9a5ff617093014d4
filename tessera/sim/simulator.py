"""The discrete-event simulator: a workload through placement policy and engine models in virtual time.

Nothing here sleeps or talks to a network. Arrivals are placed by the very
Pipeline object the live scheduler runs (tessera/placement), on
WorkerSnapshots built from the simulated engines; each engine is the same
BatchingEngine the sim worker runs, its steps timed by the performance model.
Time jumps from event to event: an arrival, or the end of some engine's step.

The fleet may change while it runs (tessera/sim/autoscaling.py drives this):
add_instance() with a ready time starts an instance that takes no work until
then, drain_instance() stops placements on one and retires it once its last
request is gone, and call_at() runs a callback at a virtual time. Requests
that find no ready instance wait in the router queue, so a fleet scaled to
zero holds them until an instance is up.

A profile with a `disaggregation:` section places each request as a pair
(tessera/placement/disaggregation.py). A request given a prefill
instance runs there first as a prompt-only request (max_tokens=1, as vLLM runs
it behind a KV connector; that token is never the user's). When it finishes,
the decode instance takes it with blocks for the whole prompt, waits the KV
copy (tessera.engine_model.perf.comm.kv_transfer_time between the two accelerators), then
computes the last prompt token in its next step: that step's end is the first
token the user sees, as in llm-d and Dynamo.
"""

from __future__ import annotations

import heapq
import itertools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from tessera.engine_model.batching import BatchingEngine, EngineConfig, EngineRequest, ScheduledStep
from tessera.engine_model.block_pool import KVEvents
from tessera.engine_model.instance import InstanceSpec
from tessera.engine_model.perf.comm import kv_transfer_estimator
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.step_timer import StepTimer
from tessera.placement.block_hash import content_block_hashes
from tessera.placement.decision import place_request
from tessera.placement.kv_compat import DTYPE_NAMES, KVCompat
from tessera.placement.pipeline import Pipeline
from tessera.placement.prefix_index import CANONICAL_BLOCK_TOKENS, PrefixIndex
from tessera.placement.snapshot import RequestInfo, WorkerSnapshot
from tessera.sim.workloads import SimRequest

_ARRIVAL, _STEP_DONE, _SAMPLE, _KV_ARRIVED, _CALL = 0, 1, 2, 3, 4
# An instance's life: billed from its request, placeable once ready, no new work while draining.
STARTING, READY, DRAINING, GONE = "starting", "ready", "draining", "gone"


@dataclass
class RequestRecord:
    """One request's life, in virtual seconds."""

    request: SimRequest
    arrival_s: float
    instance: str = ""  # where it decoded (and prefilled, unless prefill_instance says otherwise)
    prefill_instance: str = ""  # where its prompt was prefilled, when disaggregated
    prefill_done_s: float = -1.0  # the prefill instance finished the prompt
    kv_transfer_s: float = 0.0  # the KV copy to the decode instance
    first_token_s: float = -1.0
    finish_s: float = -1.0
    token_times: list[float] = field(default_factory=list)
    cached_prompt_tokens: int = 0
    preemptions: int = 0
    error: str = ""

    @property
    def done(self) -> bool:
        return self.finish_s >= 0


@dataclass
class Sample:
    """Cluster state at one moment, for the load-over-time plots."""

    t: float
    running: int
    waiting: int
    kv_usage: float  # mean over instances
    busy_by_kind: dict[str, float]  # fraction of instances of a kind that are mid-step


@dataclass
class SimInstance:
    """One engine instance and its bookkeeping."""

    id: str
    spec: InstanceSpec
    engine: BatchingEngine
    timer: StepTimer
    snapshot_base: WorkerSnapshot
    step: ScheduledStep | None = None
    busy_s: float = 0.0
    steps: int = 0
    tokens_in_flight: int = 0
    records: dict[str, RequestRecord] = field(default_factory=dict)
    incoming: int = 0  # placed here to decode, still prefilling elsewhere: queued as far as placement goes
    state: str = READY
    requested_s: float = 0.0  # asked for (billing starts)
    ready_s: float = 0.0  # takes placements from here on
    stopped_s: float | None = None  # drained and gone (billing stops)

    @property
    def idle(self) -> bool:
        return self.step is None and not self.records and not self.incoming

    def snapshot(self) -> WorkerSnapshot:
        e = self.engine
        return _replace_load(
            self.snapshot_base,
            e.num_waiting + self.incoming,
            self.incoming,
            e.num_running,
            e.kv_usage,
            self.tokens_in_flight,
            e.pending_prefill_tokens,
        )


def _replace_load(
    base: WorkerSnapshot, waiting: int, pending: int, running: int, kv: float, tokens: int, prefill: int
) -> WorkerSnapshot:
    # dataclasses.replace is ~3x slower; this runs once per instance per arrival.
    s = object.__new__(WorkerSnapshot)
    s.__dict__.update(base.__dict__)
    s.__dict__.update(
        num_waiting=waiting,
        pending=pending,
        num_running=running,
        kv_cache_usage=kv,
        tokens_in_flight=tokens,
        prefill_tokens_waiting=prefill,
    )
    return s


@dataclass
class SimResult:
    records: list[RequestRecord]
    instances: list[SimInstance]
    samples: list[Sample]
    duration_s: float
    events: int


class Simulator:
    def __init__(
        self,
        arch: ModelArch,
        model_name: str,
        instances: list[tuple[InstanceSpec, EngineConfig, StepTimer]],
        pipeline: Pipeline,
        sample_interval_s: float = 1.0,
        on_progress: Callable[[float, int], None] | None = None,
        kv_transfer: Callable[[WorkerSnapshot, WorkerSnapshot, int], float] | None = None,
    ):
        """kv_transfer(prefill, decode, tokens) -> seconds: the KV copy of a disaggregated pair, for
        placement and for the copy itself (default: the catalog's scale-out links, per instance TP)."""
        self.arch = arch
        self.model_name = model_name
        self.pipeline = pipeline
        self.sample_interval_s = sample_interval_s
        self.on_progress = on_progress
        self.instances: list[SimInstance] = []
        # Engine KV events feed a precise prefix index, as workers' events feed the live scheduler's.
        spec_mode = pipeline.index_spec.mode if pipeline.index_spec else None
        self.index: PrefixIndex | None = PrefixIndex() if spec_mode in ("precise", "hybrid") else None
        self._canonical: dict[str, list[int]] = {}
        self._router_queue: deque[RequestRecord] = deque()  # admission control: saturated, waiting
        self._heap: list[tuple[float, int, int, Any]] = []
        self._seq = itertools.count()
        self.now = 0.0
        self._hash_cache: dict[tuple[int, int], list[int]] = {}
        self._by_id: dict[str, SimInstance] = {}
        self._devices: dict[str, int] = {}  # by instance id, for KV transfers (grows with the fleet)
        self._ids = itertools.count()
        self.retired: list[SimInstance] = []
        self.records: list[RequestRecord] = []
        self.pending = 0  # requests (later turns included) not yet finished or failed
        for spec, cfg, timer in instances:
            self.add_instance(spec, cfg, timer)
        self.kv_transfer = kv_transfer or kv_transfer_estimator(arch, self._devices)

    # -- the fleet -----------------------------------------------------------------------------
    def add_instance(
        self, spec: InstanceSpec, cfg: EngineConfig, timer: StepTimer, ready_s: float | None = None
    ) -> SimInstance:
        """A new instance, requested now; it takes placements from `ready_s` (default: at once)."""
        iid = f"{spec.label}-{next(self._ids)}"
        speeds = _speeds(timer)
        base = WorkerSnapshot(
            id=iid,
            address=iid,
            model=self.model_name,
            role=spec.role,
            vendor=spec.accelerator.vendor,
            accelerator=spec.accelerator.name,
            kv_block_size=cfg.block_size,
            kv_capacity_blocks=cfg.num_blocks,
            max_model_len=cfg.max_model_len,
            max_num_seqs=cfg.max_num_seqs,
            prefill_tokens_per_s=speeds.get("prefill_tokens_per_s", 0.0),
            decode_base_s=speeds.get("decode_base_s", 0.0),
            decode_step_s=speeds.get("decode_step_s", 0.0),
            kv_compat=self._kv_compat(spec, cfg),
        )
        inst = SimInstance(iid, spec, BatchingEngine(cfg), timer, base, requested_s=self.now, ready_s=self.now)
        self.instances.append(inst)
        self._by_id[iid] = inst
        self._devices[iid] = spec.devices
        if self.index is not None:
            self.index.add_worker(iid, cfg.block_size)
            inst.engine.pool.record_events = True
        if ready_s is not None and ready_s > self.now:
            inst.state, inst.ready_s = STARTING, ready_s
            self.call_at(ready_s, lambda sim: sim._make_ready(inst))
        return inst

    def _kv_compat(self, spec: InstanceSpec, cfg: EngineConfig) -> KVCompat:
        """What a sim worker of this shape publishes (services/worker/sim_engine.py): every instance
        of one simulation serves one model in one dtype, so pairs differ only in block size and TP,
        where NIXL's rules apply (an operator pairing TP degrees sets a head-contiguous KV layout)."""
        dtype = DTYPE_NAMES.get(self.arch.dtype_bytes, "bfloat16")
        return KVCompat(
            engine="sim",
            engine_version="",
            model=self.model_name,
            dtype=dtype,
            kv_cache_dtype=dtype,
            block_size=cfg.block_size,
            kv_layout="LBHNC",
            attention_backend="sim",
            tensor_parallel=spec.tp,
            kv_connector="NixlConnector",
            num_kv_heads=self.arch.kv_heads,
        )

    def drain_instance(self, inst: SimInstance) -> None:
        """No new placements; the instance is retired when its last request is done (at once if idle
        or still starting)."""
        if inst.state in (STARTING, READY):
            inst.state = DRAINING
            self._retire_if_idle(inst)

    @property
    def queued(self) -> int:
        """Requests waiting at the router (every instance saturated, or none ready)."""
        return len(self._router_queue)

    def call_at(self, t: float, fn: Callable[[Simulator], None]) -> None:
        """Run fn(simulator) at virtual time t (not before now); the router queue is retried after it."""
        self._push(max(t, self.now), _CALL, fn)

    def _make_ready(self, inst: SimInstance) -> None:
        if inst.state == STARTING:
            inst.state = READY

    def _retire_if_idle(self, inst: SimInstance) -> None:
        if inst.state == DRAINING and inst.idle:
            inst.state, inst.stopped_s = GONE, self.now
            self.instances.remove(inst)
            self.retired.append(inst)
            if self.index is not None:
                self.index.remove_worker(inst.id)

    def _push(self, t: float, kind: int, payload: Any) -> None:
        heapq.heappush(self._heap, (t, next(self._seq), kind, payload))

    def run(self, workload: list[SimRequest]) -> SimResult:
        records = self.records
        for req in workload:
            self._push(req.arrival_s, _ARRIVAL, req)
        samples: list[Sample] = []
        if self.sample_interval_s > 0 and workload:
            self._push(0.0, _SAMPLE, None)
        events = 0
        self.pending = len(workload)
        while self._heap:
            t, _, kind, payload = heapq.heappop(self._heap)
            self.now = t
            events += 1
            if kind == _ARRIVAL:
                rec = self._arrive(payload)
                records.append(rec)
                if rec.error:
                    self.pending -= 1
            elif kind == _STEP_DONE:
                self.pending -= self._step_done(payload)
                if self._router_queue:
                    self.pending -= self._drain_router_queue()
            elif kind == _KV_ARRIVED:
                inst, request_id = payload
                inst.engine.kv_arrived(request_id)
                if inst.step is None:
                    self._start_step(inst)
            elif kind == _CALL:
                payload(self)
                if self._router_queue:
                    self.pending -= self._drain_router_queue()
            elif self.pending > 0:
                samples.append(self._sample())
                self._push(t + self.sample_interval_s, _SAMPLE, None)
                if self.on_progress:
                    self.on_progress(t, len(records))
        duration = max((r.finish_s for r in records if r.done), default=0.0)
        return SimResult(records, self.instances + self.retired, samples, duration, events)

    # -- events ------------------------------------------------------------------------------
    def _arrive(self, req: SimRequest) -> RequestRecord:
        rec = RequestRecord(req, self.now)
        if self._router_queue or not self._place(rec):
            if not rec.error:
                self._router_queue.append(rec)  # saturated: waits at the router, in arrival order
        return rec

    def _place(self, rec: RequestRecord) -> bool:
        """Place one request; False when every instance is saturated (it should wait), or it failed (rec.error)."""
        req = rec.request
        canonical = self._canonical.get(req.request_id) or self._canonical_hashes(req)
        info = RequestInfo(
            request_id=req.request_id,
            model=self.model_name,
            prompt_tokens=req.prompt_tokens,
            max_tokens=req.output_tokens,
            session_id=req.session_id,
            block_hashes=tuple(canonical[: req.prompt_tokens // CANONICAL_BLOCK_TOKENS]),
        )
        snapshots = [inst.snapshot() for inst in self.instances if inst.state == READY]
        if not snapshots:
            return False  # nothing ready (scaled to zero, or still starting): wait at the router
        decision = place_request(info, snapshots, self.pipeline, self.kv_transfer, self.now, self.index)
        worker, prefill, saturated, reason = decision.decode, decision.prefill, decision.saturated, decision.reason
        if worker is None:
            if saturated:
                return False
            return self._fail(rec, reason or "no worker")
        inst = self._by_id[worker.id]
        rec.instance = inst.id
        if prefill is None:
            return self._admit(
                inst,
                rec,
                EngineRequest(
                    req.request_id,
                    req.prompt_tokens,
                    req.output_tokens,
                    self._hashes(req, inst.engine.config.block_size),
                ),
            )
        pre = self._by_id[prefill.id]
        rec.prefill_instance = pre.id
        if not self._admit(
            pre,
            rec,
            EngineRequest(req.request_id, req.prompt_tokens, 1, self._hashes(req, pre.engine.config.block_size)),
        ):
            return False
        inst.incoming += 1
        return True

    def _admit(self, inst: SimInstance, rec: RequestRecord, ereq: EngineRequest) -> bool:
        """Hand a request to an engine; False (rec.error set) when the engine refuses it."""
        try:
            inst.engine.add(ereq)
        except ValueError as exc:
            return self._fail(rec, str(exc))
        inst.records[ereq.request_id] = rec
        inst.tokens_in_flight += ereq.prompt_tokens
        if inst.step is None:
            self._start_step(inst)
        return True

    def _fail(self, rec: RequestRecord, error: str) -> bool:
        rec.error = error
        self._canonical.pop(rec.request.request_id, None)
        return False

    def _hand_off(self, rec: RequestRecord, prefilled: EngineRequest) -> int:
        """The prefill instance finished the prompt: the decode instance takes it with its KV to come.
        1 when the decode engine refuses it (the request failed), else 0."""
        rec.prefill_done_s = self.now
        rec.cached_prompt_tokens = max(0, prefilled.cached_prompt_tokens)
        dec = self._by_id[rec.instance]
        dec.incoming -= 1
        req = rec.request
        ereq = EngineRequest(
            req.request_id,
            req.prompt_tokens,
            req.output_tokens,
            self._hashes(req, dec.engine.config.block_size),
            remote_kv=True,
        )
        return 0 if self._admit(dec, rec, ereq) else 1

    def _start_transfer(self, dec: SimInstance, ereq: EngineRequest) -> None:
        """Blocks are allocated on the decode instance: the KV copy from the prefill instance starts."""
        rec = dec.records[ereq.request_id]
        src = self._by_id[rec.prefill_instance]
        rec.kv_transfer_s = (
            self.kv_transfer(src.snapshot_base, dec.snapshot_base, ereq.remote_tokens) if ereq.remote_tokens else 0.0
        )
        self._push(self.now + rec.kv_transfer_s, _KV_ARRIVED, (dec, ereq.request_id))

    def _drain_router_queue(self) -> int:
        """Place waiting requests while instances take them; the number that failed outright."""
        failed = 0
        while self._router_queue:
            rec = self._router_queue[0]
            if not self._place(rec) and not rec.error:
                break
            self._router_queue.popleft()
            failed += bool(rec.error)
        return failed

    def _canonical_hashes(self, req: SimRequest) -> list[int]:
        """16-token chained hashes of prompt and output, as the router computes them from token ids."""
        if not req.content_ids:
            return []
        if req.request_id in self._canonical:
            return self._canonical[req.request_id]
        hashes = content_block_hashes(
            req.content_ids, req.content_block_tokens, req.prompt_tokens + req.output_tokens, CANONICAL_BLOCK_TOKENS
        )
        if self.index is not None:
            self._canonical[req.request_id] = hashes
        return hashes

    def _apply_kv_events(self, inst: SimInstance, events: KVEvents) -> None:
        index = self.index
        if index is None:
            return
        per = inst.engine.config.block_size // CANONICAL_BLOCK_TOKENS
        for block_hash, _, origin in events.stored:
            ereq, b = cast(tuple[EngineRequest, int], origin)  # what the engine model passes along
            canonical = self._canonical.get(ereq.request_id, ())
            keys = canonical[b * per : (b + 1) * per]
            if len(keys) == per:
                index.stored(inst.id, block_hash, keys)
        if events.removed:
            index.removed(inst.id, events.removed)

    def _hashes(self, req: SimRequest, block_size: int) -> list[int]:
        if not req.content_ids:
            return []
        total = req.prompt_tokens + req.output_tokens
        return content_block_hashes(req.content_ids, req.content_block_tokens, total, block_size)

    def _start_step(self, inst: SimInstance) -> None:
        step = inst.engine.schedule()
        for ereq in step.loading:
            self._start_transfer(inst, ereq)
        if step.empty:
            inst.step = None
            return
        prefill, decode = step.batch()
        duration = inst.timer(prefill, decode)
        inst.step = step
        inst.busy_s += duration
        inst.steps += 1
        self._push(self.now + duration, _STEP_DONE, inst)

    def _step_done(self, inst: SimInstance) -> int:
        step = inst.step
        assert step is not None
        for req in step.preempted:
            inst.records[req.request_id].preemptions += 1
        out = inst.engine.complete(step)
        if self.index is not None and out.kv_events:
            self._apply_kv_events(inst, out.kv_events)
        finished = 0
        for ereq in out.emitted:
            rec = inst.records[ereq.request_id]
            inst.tokens_in_flight += 1
            if rec.prefill_instance == inst.id:
                continue  # the prefill side's token: the decode instance emits the user's first
            if rec.first_token_s < 0:
                rec.first_token_s = self.now
                if not rec.prefill_instance:
                    rec.cached_prompt_tokens = max(0, ereq.cached_prompt_tokens)
            rec.token_times.append(self.now)
        for ereq in out.finished:
            rec = inst.records.pop(ereq.request_id)
            inst.tokens_in_flight -= ereq.prompt_tokens + ereq.num_output
            if rec.prefill_instance == inst.id:
                finished += self._hand_off(rec, ereq)
                continue
            rec.finish_s = self.now
            self._canonical.pop(ereq.request_id, None)
            finished += 1
            nxt = rec.request.next_turn
            if nxt is not None:
                self._push(self.now + rec.request.think_time_s, _ARRIVAL, nxt)
                finished -= 1  # the session goes on: its next turn is now pending instead
        self._start_step(inst)
        self._retire_if_idle(inst)
        return finished

    def _sample(self) -> Sample:
        running = waiting = 0
        kv = 0.0
        busy: dict[str, list[int]] = {}
        for inst in self.instances:
            running += inst.engine.num_running
            waiting += inst.engine.num_waiting
            kv += inst.engine.kv_usage
            b = busy.setdefault(inst.spec.label, [0, 0])
            b[0] += inst.step is not None
            b[1] += 1
        return Sample(
            self.now, running, waiting, kv / max(1, len(self.instances)), {k: v[0] / v[1] for k, v in busy.items()}
        )


def _speeds(timer: StepTimer) -> dict[str, float]:
    try:
        return {
            "prefill_tokens_per_s": timer.prefill_tokens_per_s(),
            "decode_base_s": timer.decode_base_s(),
            "decode_step_s": timer.decode_step_s(),
        }
    except (AttributeError, ZeroDivisionError):  # a stand-in timer (tests) without the performance model
        return {}
