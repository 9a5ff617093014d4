"""One model's autoscaling loop: observed interval -> forecast -> plan -> hysteresis -> worker groups.

The pure parts (tessera/planning) decide; this class only carries
their state from one interval to the next and turns the fleet into the worker
groups the controller reconciles, one group per (accelerator, tp, role).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field, replace

from services.autoscaler.desired import WorkerGroup
from services.autoscaler.load_observer import ModelInterval
from tessera.planning import corrections as corr
from tessera.planning import forecast as fc
from tessera.planning import hysteresis
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import chunk_args, engines_for, shape_args
from tessera.planning.fleet import InstanceType
from tessera.planning.load import LoadMix
from tessera.planning.planner import Plan, plan
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


@dataclass
class ModelAutoscaler:
    policy: SloPolicy
    capacity: CapacityModel
    forecast: fc.ForecastState = field(default_factory=fc.ForecastState)
    fleet: hysteresis.FleetState = field(default_factory=hysteresis.FleetState)
    corrections: corr.CorrectionState = field(default_factory=corr.CorrectionState)
    last_plan: Plan | None = None
    reasons: tuple[str, ...] = ()
    last_load: LoadMix | None = None

    @classmethod
    def for_policy(cls, policy: SloPolicy, previous: ModelAutoscaler | None = None) -> ModelAutoscaler:
        """A new policy keeps the running fleet and the forecast; the capacity model is rebuilt."""
        me = cls(policy, CapacityModel(engines_for(policy)))
        if previous is not None:
            me.forecast, me.fleet, me.corrections = previous.forecast, previous.fleet, previous.corrections
        return me

    def step(
        self, seen: ModelInterval, now_s: float | None = None, peak_rps: float | None = None
    ) -> dict[InstanceType, int]:
        """The fleet to run after this interval; `peak_rps`: its highest arrival rate over the policy's
        peak window (forecast.peak_window_s), which the interval then counts as, as the simulator does."""
        now_s = time.monotonic() if now_s is None else now_s
        # Held requests are demand that has completed nothing yet (they may have arrived in an
        # earlier interval): the interval saw at least that many.
        requests = max(seen.requests, seen.held, (peak_rps or 0.0) * seen.duration_s)
        stats = fc.IntervalStats(
            seen.duration_s,
            int(round(requests)),
            seen.input_mean,
            seen.input_p90,
            seen.output_mean,
            None,
            seen.input_p99,
        )
        self.forecast = fc.observe(self.forecast, stats, self.policy.forecast)
        load = fc.forecast(self.forecast, self.policy.forecast, self.policy.interval_s)
        if seen.held and load.rate_rps <= 0:
            load = replace(load, rate_rps=seen.held / max(seen.duration_s, 1e-9))
        self._learn(seen)
        self.last_load = load
        current = self.fleet.as_dict()
        self.last_plan = plan(
            self.policy, load, self.capacity, idle_s=self.forecast.idle_s, corrections=self.corrections, current=current
        )
        self.fleet, decision = hysteresis.step(
            self.fleet,
            self.last_plan.counts,
            now_s,
            self.policy.hysteresis,
            self.policy.free_devices(),
            self.last_plan.serves,
        )
        self.reasons = decision.reasons
        if decision.changed:
            log.info(
                "%s: %s (forecast %.3g req/s); %s",
                self.policy.served_model,
                self.last_plan.summary().splitlines()[0],
                load.rate_rps,
                "; ".join(decision.reasons),
            )
        return decision.counts

    def _learn(self, seen: ModelInterval) -> None:
        """Correct the capacity model by how far observed latency was from its prediction, per running type."""
        if self.last_load is None or not seen.requests:
            return
        running = {t: n for t, n in self.fleet.as_dict().items() if n and t.role == "mixed"}
        total = sum(running.values())
        for itype, count in running.items():
            share = replace(self.last_load, rate_rps=seen.requests / seen.duration_s / total)
            try:
                predicted = self.capacity.predict(
                    itype, share, self.policy.targets, self.corrections.for_label(itype.label)
                )
            except KeyError:
                continue
            pct_ttft, pct_tpot = self.policy.targets.ttft.percentile, self.policy.targets.tpot.percentile
            for metric, observed, guess in (
                ("ttft", seen.ttft_s.get(pct_ttft), predicted.ttft_s),
                ("tpot", seen.itl_s.get(pct_tpot), predicted.tpot_s),
            ):
                if observed:
                    self.corrections = corr.observe(
                        self.corrections,
                        itype.label,
                        metric,
                        guess,
                        observed,
                        int(seen.requests * count / total),
                        self.policy.corrections,
                    )

    def status_lines(self) -> list[str]:
        """Why the fleet is what it is: the plan, the binding constraint, the forecast, corrections."""
        if self.last_plan is None:
            return [f"{self.policy.served_model}: no interval observed yet"]
        lines = [f"{self.policy.served_model}: " + self.last_plan.summary().replace("\n", "\n  ")]
        if self.last_load is not None:
            lines.append(
                f"  forecast: {self.last_load.rate_rps:.3g} req/s, prompts ~{self.last_load.input_mean:.0f} "
                f"tokens, answers ~{self.last_load.output_mean:.0f}; idle {self.forecast.idle_s:.0f} s"
            )
        chunks = [
            f"{t.label} {e.max_num_batched_tokens}"
            for t in self.last_plan.counts
            if self.last_plan.counts[t] and (e := self.capacity.engine(t)) is not None
        ]
        if chunks:
            lines.append(
                f"  prefill chunk (max_num_batched_tokens, for TPOT {self.policy.targets.tpot.ms:g} ms): "
                + ", ".join(chunks)
            )
        lines += [f"  hysteresis: {r}" for r in self.reasons]
        lines += [
            f"  correction {label}: ttft x{f.ttft:.2f}, tpot x{f.tpot:.2f}"
            for label, f in self.corrections.factors
            if (f.ttft, f.tpot) != (1.0, 1.0)
        ]
        return lines
