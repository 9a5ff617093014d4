"""One model's autoscaling in the service: the routers' interval -> the planning loop -> worker groups.

The loop (tessera.planning.loop.PlanningLoop, the same object `tessera sim` drives) decides;
this module turns the routers' interval into its Observation and its fleet into the worker
groups the controller reconciles, one group per (accelerator, tp, role).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from services.autoscaler.desired import WorkerGroup
from services.autoscaler.load_observer import ModelInterval
from tessera.planning import forecast as fc
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import chunk_args, engines_for, shape_args
from tessera.planning.fleet import InstanceType
from tessera.planning.loop import LoopDecision, PlanningLoop
from tessera.planning.observation import Observation, TypeObservation
from tessera.planning.slo_policy import SloPolicy

log = logging.getLogger("tessera.autoscaler")

GROUP_PREFIX = "auto-"  # groups the planner owns (the rest come from --desired)


def group_prefix(policy: SloPolicy) -> str:
    """What every group of this model's fleet is named from: auto-<model>-."""
    slug = re.sub(r"[^a-z0-9]+", "-", policy.served_model.lower()).strip("-")[:30] or "model"
    return f"{GROUP_PREFIX}{slug}-"


def group_name(policy: SloPolicy, itype: InstanceType) -> str:
    tp = f"-tp{itype.tp}" if itype.tp > 1 else ""
    dp = f"-dp{itype.dp}" if itype.dp > 1 else ""  # DP/EP and CP shapes are groups of their own
    cp = f"-cp{itype.cp}" if itype.cp > 1 else ""
    return f"{group_prefix(policy)}{itype.accelerator}{tp}{dp}{cp}-{itype.role}"


def groups_for(
    policy: SloPolicy, counts: dict[InstanceType, int], capacity: CapacityModel | None = None
) -> list[WorkerGroup]:
    """The worker groups that run `counts`, launched as the policy's deployment section says, each with
    the prefill chunk its engine model was priced with (where that differs from the vendor default)."""
    out = []
    for itype in sorted(counts):
        engine_args = dict(policy.deployment.engine_args)
        engine = capacity.engine(itype) if capacity is not None else None
        if engine is not None:
            engine_args = {**chunk_args(engine), **engine_args}
        engine_args.update(shape_args(itype))  # tensor_parallel_size, DP/EP and CP args
        if policy.served_model != policy.worker_model:
            engine_args["served_model_name"] = policy.served_model
        out.append(
            WorkerGroup(
                name=group_name(policy, itype),
                model=policy.worker_model,
                replicas=counts[itype],
                role=itype.role,
                engine=policy.deployment.engine,
                accelerator=itype.accelerator,
                engine_args=engine_args,
            )
        )
    return out


def observation(
    policy: SloPolicy,
    seen: ModelInterval,
    now_s: float,
    peak_rps: float | None,
    asked: Mapping[InstanceType, int],
    ready: Mapping[InstanceType, int] | None = None,
) -> Observation:
    """The planning loop's Observation of one live interval.

    The routers' latency histograms are per model, not per worker, so each type is given the
    model's percentiles in its role (TTFT where it computes prompts: mixed and prefill; TPOT where
    it decodes: mixed and decode) and a share of the answered requests in proportion to its ready
    instances among the types of that role. `asked`: the fleet the loop asked for; `ready`: the
    workers registered per type (None: taken as the fleet asked for, all ready)."""
    ready = dict(asked) if ready is None else dict(ready)
    types = sorted(t for t in set(asked) | set(ready) if asked.get(t, 0) or ready.get(t, 0))
    prompt_ready = sum(ready.get(t, 0) for t in types if t.role != "decode")
    decode_ready = sum(ready.get(t, 0) for t in types if t.role != "prefill")
    answered = seen.requests if seen.answered is None else seen.answered
    ttft = seen.ttft_s.get(policy.targets.ttft.percentile)
    tpot = seen.itl_s.get(policy.targets.tpot.percentile)
    fleet = {}
    for t in types:
        n = ready.get(t, 0)
        total = prompt_ready if t.role != "decode" else decode_ready
        served = int(answered * n / total) if total else 0
        prompts, decodes = t.role != "decode", t.role != "prefill"
        fleet[t] = TypeObservation(
            n,
            max(0, asked.get(t, 0) - n),
            served,
            ttft if prompts else None,
            served if prompts and ttft is not None else 0,
            tpot if decodes else None,
            served if decodes and tpot is not None else 0,
        )
    arrivals = fc.IntervalStats(
        seen.duration_s,
        int(round(seen.requests)),
        seen.input_mean,
        seen.input_p90,
        seen.output_mean,
        None,
        seen.input_p99,
        seen.output_p90,
    )
    return Observation(now_s, arrivals, peak_rps, int(round(seen.held)), fleet)


@dataclass
class ModelAutoscaler:
    """The service's driver of one model's PlanningLoop: builds its Observation from the routers'
    interval, logs each change, and explains the fleet for `tessera status`."""

    policy: SloPolicy
    capacity: CapacityModel
    loop: PlanningLoop

    @classmethod
    def for_policy(cls, policy: SloPolicy, previous: ModelAutoscaler | None = None) -> ModelAutoscaler:
        """A new policy keeps the running fleet, the forecast and the corrections; the capacity model is rebuilt."""
        capacity = CapacityModel(engines_for(policy))
        state = previous.loop.state if previous is not None else None
        return cls(policy, capacity, PlanningLoop(policy, capacity, state=state))

    def observe(
        self,
        seen: ModelInterval,
        now_s: float | None = None,
        peak_rps: float | None = None,
        ready: Mapping[InstanceType, int] | None = None,
    ) -> Observation:
        """This interval as the loop sees it; `peak_rps`: its highest arrival rate over the policy's peak
        window (forecast.peak_window_s); `ready`: registered workers per type (None: all asked for)."""
        now_s = time.monotonic() if now_s is None else now_s
        return observation(self.policy, seen, now_s, peak_rps, self.loop.state.fleet.as_dict(), ready)

    def step(
        self,
        seen: ModelInterval,
        now_s: float | None = None,
        peak_rps: float | None = None,
        ready: Mapping[InstanceType, int] | None = None,
    ) -> dict[InstanceType, int]:
        """The fleet to run after this interval."""
        return self.decide(self.observe(seen, now_s, peak_rps, ready)).counts

    def decide(self, obs: Observation) -> LoopDecision:
        d = self.loop.step(obs)
        if d.changed:
            log.info(
                "%s: %s (forecast %.3g req/s); %s",
                self.policy.served_model,
                d.plan.summary().splitlines()[0],
                d.load.rate_rps,
                "; ".join(d.reasons),
            )
        return d

    def status_lines(self) -> list[str]:
        """Why the fleet is what it is: the plan, the binding constraint, the forecast, corrections."""
        last = self.loop.last
        if last is None:
            return [f"{self.policy.served_model}: no interval observed yet"]
        lines = [f"{self.policy.served_model}: " + last.plan.summary().replace("\n", "\n  ")]
        load = last.load
        lines.append(
            f"  forecast: {load.rate_rps:.3g} req/s, prompts ~{load.input_mean:.0f} "
            f"tokens, answers ~{load.output_mean:.0f}"
            + (f" (p90 {load.output_p90:.0f})" if load.output_p90 > 0 else "")
            + f"; idle {self.loop.state.forecast.idle_s:.0f} s"
        )
        chunks = [
            f"{t.label} {e.max_num_batched_tokens}"
            for t in last.plan.counts
            if last.plan.counts[t] and (e := self.capacity.engine(t)) is not None
        ]
        if chunks:
            lines.append(
                f"  prefill chunk (max_num_batched_tokens, for TPOT {self.policy.targets.tpot.ms:g} ms): "
                + ", ".join(chunks)
            )
        lines += [f"  hysteresis: {r}" for r in last.reasons]
        lines += [
            f"  correction {label}: ttft x{f.ttft:.2f}, tpot x{f.tpot:.2f}"
            for label, f in last.corrections.factors
            if (f.ttft, f.tpot) != (1.0, 1.0)
        ]
        return lines
