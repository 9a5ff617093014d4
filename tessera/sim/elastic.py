"""A simulated fleet that follows an autoscaler: instances start, become ready, drain and stop.

The mechanics the autoscalers' decisions meet, kept apart from the decisions themselves:

- an instance starts with the engine arguments given for its (accelerator, tp) (the prefill
  chunk the planner priced it with), so every autoscaler runs the same engines;
- an instance asked for is billed from that moment and takes requests only after
  `startup_s` (a GPU vLLM engine loading an 8B model from local disk and capturing CUDA
  graphs takes about a minute), or, with `startup_s=None`, after its own cold start from
  the model (tessera.engine_model.startup: weights over the load link plus the engine's
  warm-up); a fleet running before the workload starts ready;
- an instance no longer wanted drains: the router stops sending it work, its requests
  finish, then it stops and its billing with it. Starting instances are cancelled first,
  then the ready ones with the least work in flight, newest first (as a ReplicaSet does);
- once per interval it hands the autoscaler an Observation (arrivals, the router's queue,
  per instance type: ready/starting counts, busy fractions, delivered latencies).

Placement uses the `tessera_disagg` profile while prefill instances are ready, `tessera`
(or the given mixed profile) otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from tessera.engine_model.batching import EngineConfig
from tessera.engine_model.build import build_instances, instance_startup
from tessera.engine_model.instance import InstanceSpec, find_accelerator
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.step_timer import StepTimer
from tessera.placement.pipeline import Pipeline
from tessera.planning.fleet import EngineKey, InstanceType
from tessera.planning.forecast import IntervalStats
from tessera.sim.autoscalers import Observation, TypeObservation
from tessera.sim.report import request_metrics_ms
from tessera.sim.simulator import READY, STARTING, RequestRecord, SimInstance, Simulator

DEFAULT_STARTUP_S = 60.0


@dataclass
class Lifetime:
    """When one instance was asked for, became ready, began draining and stopped (None: not yet)."""

    itype: InstanceType
    devices: int
    price_per_device_hour: float
    requested_s: float
    ready_s: float
    drain_s: float | None = None
    stopped_s: float | None = None


class ElasticFleet:
    def __init__(
        self,
        sim: Simulator,
        arch: ModelArch,
        prices: Mapping[str, float],
        startup_s: float | None,
        mixed_pipeline: Pipeline,
        disagg_pipeline: Pipeline | None = None,
        engine_args: Mapping[EngineKey, Mapping[str, object]] | None = None,
    ) -> None:
        self.sim, self.arch, self.prices, self.startup_s = sim, arch, dict(prices), startup_s
        self.engine_args = dict(engine_args or {})  # per (accelerator, tp): e.g. the planner's prefill chunk
        self.mixed_pipeline, self.disagg_pipeline = mixed_pipeline, disagg_pipeline
        self.types: dict[str, InstanceType] = {}  # instance id -> type
        self.lifetimes: dict[str, Lifetime] = {}
        self._built: dict[InstanceType, tuple[InstanceSpec, EngineConfig, StepTimer]] = {}
        self._last_tick = 0.0
        self._next_record = 0
        self._open: list[RequestRecord] = []
        self._busy_mark: dict[str, float] = {}

    # -- acting ------------------------------------------------------------------------------
    def apply(self, counts: Mapping[InstanceType, int], ready_now: bool = False) -> None:
        """Start or drain instances so that each type has counts[type] (absent: 0) not draining;
        ready_now: the new ones take requests at once (a deployment running before the workload)."""
        now = self.sim.now
        live = self._live()
        for itype in sorted(set(counts) | set(live)):
            have, want = live.get(itype, []), counts.get(itype, 0)
            for _ in range(want - len(have)):
                self._start(itype, None if ready_now else now + self.start_seconds(itype))
            if want < len(have):
                order = sorted(
                    have, key=lambda i: (i.state != STARTING, len(i.records) + i.incoming, -i.requested_s, i.id)
                )
                for inst in order[: len(have) - want]:
                    self.lifetimes[inst.id].drain_s = now
                    self.sim.drain_instance(inst)
                    self._note_stop(inst)
        self.refresh_pipeline()

    def start_seconds(self, itype: InstanceType) -> float:
        """The fixed start-up, or (startup_s None) this type's cold start from the start-up model."""
        if self.startup_s is not None:
            return self.startup_s
        spec = InstanceSpec(find_accelerator(itype.accelerator), itype.tp, itype.role, itype.dp, itype.cp)
        return instance_startup(self.arch, spec).cold_s

    def _start(self, itype: InstanceType, ready_s: float | None) -> None:
        if itype not in self._built:
            spec = InstanceSpec(find_accelerator(itype.accelerator), itype.tp, itype.role, itype.dp, itype.cp)
            [(spec, cfg, timer)] = build_instances(
                self.arch, [spec], engine_args=self.engine_args.get(itype.engine_key)
            )
            self._built[itype] = (spec, cfg, timer)
        inst = self.sim.add_instance(*self._built[itype], ready_s=ready_s)
        self.types[inst.id] = itype
        price = self.prices.get(itype.accelerator, inst.spec.accelerator.cost_per_hour_usd)
        self.lifetimes[inst.id] = Lifetime(itype, inst.spec.devices, price, self.sim.now, inst.ready_s)
        self._busy_mark[inst.id] = 0.0
        if ready_s is not None:
            self.sim.call_at(ready_s, lambda sim: self.refresh_pipeline())

    def _note_stop(self, inst: SimInstance) -> None:
        if inst.stopped_s is not None:
            self.lifetimes[inst.id].stopped_s = inst.stopped_s

    def refresh_pipeline(self) -> None:
        """Disaggregated placement while a prefill instance is ready, plain placement otherwise."""
        prefill = any(i.state == READY and i.spec.role == "prefill" for i in self.sim.instances)
        self.sim.pipeline = self.disagg_pipeline if prefill and self.disagg_pipeline else self.mixed_pipeline

    def _live(self) -> dict[InstanceType, list[SimInstance]]:
        out: dict[InstanceType, list[SimInstance]] = {}
        for inst in self.sim.instances:
            if inst.state in (STARTING, READY):
                out.setdefault(self.types[inst.id], []).append(inst)
        return out

    # -- observing ---------------------------------------------------------------------------
    def observe(self, interval_s: float) -> Observation:
        """What the last interval looked like (the first call sees an empty interval of interval_s)."""
        sim, now = self.sim, self.sim.now
        span = now - self._last_tick if now > self._last_tick else interval_s
        arrived = sim.records[self._next_record :]
        self._next_record = len(sim.records)
        self._open.extend(arrived)
        finished = [r for r in self._open if r.done or r.error]
        self._open = [r for r in self._open if not (r.done or r.error)]
        for inst in sim.retired:
            if inst.id in self.lifetimes and self.lifetimes[inst.id].stopped_s is None:
                self.lifetimes[inst.id].stopped_s = inst.stopped_s
        fleet = self._type_observations(finished, span)
        self._last_tick = now
        return Observation(
            now, span, _arrival_stats(arrived, finished, span), sim.queued, fleet, tuple(r.arrival_s for r in arrived)
        )

    def _type_observations(self, finished: list[RequestRecord], span: float) -> dict[InstanceType, TypeObservation]:
        now = self.sim.now
        ready: dict[InstanceType, list[float]] = {}
        starting: dict[InstanceType, int] = {}
        for inst in self.sim.instances:
            itype = self.types[inst.id]
            mark, self._busy_mark[inst.id] = self._busy_mark[inst.id], inst.busy_s
            if inst.state == READY:
                window = now - max(self._last_tick, inst.ready_s)
                ready.setdefault(itype, []).append(min(1.0, (inst.busy_s - mark) / window) if window > 0 else 0.0)
            elif inst.state == STARTING:
                starting[itype] = starting.get(itype, 0) + 1
        ttft: dict[InstanceType, list[float]] = {}
        tpot: dict[InstanceType, list[float]] = {}
        served: dict[InstanceType, int] = {}
        for rec in finished:
            if rec.error or rec.instance not in self.types:
                continue
            m = request_metrics_ms(rec)
            decoder = self.types[rec.instance]
            prompt = self.types.get(rec.prefill_instance, decoder)
            served[decoder] = served.get(decoder, 0) + 1
            if prompt != decoder:
                served[prompt] = served.get(prompt, 0) + 1
            ttft.setdefault(prompt, []).append(m["ttft"] / 1e3)
            if len(rec.token_times) > 1:
                tpot.setdefault(decoder, []).append(m["tpot"] / 1e3)
        types = set(ready) | set(starting) | set(served)
        return {
            t: TypeObservation(
                len(ready.get(t, ())),
                starting.get(t, 0),
                tuple(ready.get(t, ())),
                served.get(t, 0),
                tuple(ttft.get(t, ())),
                tuple(tpot.get(t, ())),
            )
            for t in sorted(types)
        }

    def close(self, end_s: float) -> None:
        """Settle lifetimes at the end of the run (instances still up are billed to end_s)."""
        for inst in self.sim.retired:
            if inst.id in self.lifetimes:
                self.lifetimes[inst.id].stopped_s = inst.stopped_s
        self.end_s = end_s


def _arrival_stats(arrived: list[RequestRecord], finished: list[RequestRecord], span: float) -> IntervalStats:
    """The interval's requests and shape, as the router's metrics give them (prefix reuse from the
    finished requests' cached prompt tokens)."""
    if not arrived:
        return IntervalStats(span, 0)
    prompts = np.array([r.request.prompt_tokens for r in arrived], dtype=float)
    outputs = [r.request.output_tokens for r in arrived]
    done = [r for r in finished if r.done and not r.error]
    total = sum(r.request.prompt_tokens for r in done)
    reuse = sum(r.cached_prompt_tokens for r in done) / total if total else None
    return IntervalStats(
        span,
        len(arrived),
        float(prompts.mean()),
        float(np.percentile(prompts, 90)),
        float(np.mean(outputs)),
        reuse,
        float(np.percentile(prompts, 99)),
        float(np.percentile(outputs, 90)),
    )
