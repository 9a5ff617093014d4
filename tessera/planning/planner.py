"""The plan: the cheapest fleet that serves the forecast load within the SLOs, and why.

plan() asks the capacity model what one instance of every allowed (accelerator, tp, role)
sustains for this request shape, hands those numbers to the integer program (milp.py), and
explains the answer: which constraint decided it (the load, an accelerator kind running
out, the instance limits), what caps each chosen type (TTFT, TPOT, KV cache, max_num_seqs),
and how busy the fleet will be. When no fleet can meet the SLOs it still returns the fleet
that serves the most (feasible=False), with the reason, so the autoscaler does its best and
says so. A model idle for the policy's scale_to_zero_idle_s gets an empty plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from tessera.engine_model.perf.comm import SCALE_OUT, kv_transfer_time
from tessera.planning.capacity import Capacity, CapacityModel
from tessera.planning.corrections import CorrectionState
from tessera.planning.fleet import Counts, InstanceType, describe, devices_by_kind, kinds_without_room, nonzero
from tessera.planning.load import LoadMix
from tessera.planning.milp import Candidate, max_servable, served, solve
from tessera.planning.slo_policy import SloPolicy

KEEP_WARM_RPS = 1e-3  # an idle model not yet past its idle time keeps the smallest fleet that serves one request
# When no fleet meets the SLOs, the best effort serves at least this share of the most the
# inventory could serve, at the least cost. The last few percent are the dearest: in the
# bursts-on-tight-inventory benchmark, 8 x A100-tp2 at $29/h added 1.4 of 39 req/s to a
# 37-req/s fleet, ordered for a burst that was over before they started, then held by hysteresis
# (shares 0.90-0.98 measured alike: 99.24% within SLOs, $11.34-12.25 against $17.30 at 1.0).
BEST_EFFORT_SHARE = 0.95

LOAD, INVENTORY, MAX_INSTANCES, MIN_INSTANCES, SLO, IDLE = (
    "load",
    "inventory",
    "instances.max",
    "instances.min",
    "slo",
    "idle",
)


@dataclass(frozen=True)
class PlanEntry:
    """`count` instances of `itype`: per instance its capacity, price and the limit that caps it,
    and the predicted utilisation (share of that capacity the planned load uses; 1 = at the SLO)."""

    itype: InstanceType
    count: int
    capacity_rps: float
    cost_per_hour: float
    utilisation: float
    binding: str
    detail: str


@dataclass(frozen=True)
class Plan:
    """The fleet to run for `forecast` (planned for demand_rps = forecast * (1 + headroom))."""

    feasible: bool
    entries: tuple[PlanEntry, ...]
    forecast: LoadMix
    demand_rps: float
    cost_per_hour: float
    mixed_rps: float  # demand routed to mixed instances
    disaggregated_rps: float  # demand routed through the prefill -> decode pool
    binding: str  # LOAD, INVENTORY, MAX_INSTANCES, MIN_INSTANCES, SLO or IDLE
    reasons: tuple[str, ...]
    capacities: Mapping[InstanceType, float] = field(default_factory=dict)  # req/s per instance, every type
    # instances kept in vLLM's sleep mode (policy.sleep_mode): they serve nothing but wake in seconds
    # where a cold start takes minutes; billed like running ones and included in cost_per_hour
    sleeping: Mapping[InstanceType, int] = field(default_factory=dict)
    sleeping_cost_per_hour: float = 0.0

    def serves(self, counts: Counts) -> bool:
        """Whether a fleet (the running one, say) meets this plan's demand: what hysteresis asks."""
        cands = [Candidate(t, rate, 0.0) for t, rate in self.capacities.items()]
        return served(cands, counts) >= self.demand_rps * (1 - 1e-9)

    @property
    def counts(self) -> dict[InstanceType, int]:
        return {e.itype: e.count for e in self.entries}

    @property
    def devices(self) -> dict[str, int]:
        return devices_by_kind(self.counts)

    @property
    def prefill_decode(self) -> tuple[int, int]:
        """(prefill instances, decode instances): the P:D ratio the plan chose."""
        return (
            sum(e.count for e in self.entries if e.itype.role == "prefill"),
            sum(e.count for e in self.entries if e.itype.role == "decode"),
        )

    def summary(self) -> str:
        """A few lines for logs and `tessera status`."""
        head = "plan" if self.feasible else "best effort (SLO not met)"
        lines = [
            f"{head}: {describe(self.counts)} at ${self.cost_per_hour:.2f}/h for {self.demand_rps:.3g} req/s "
            f"(binding: {self.binding})"
        ]
        lines += [
            f"  {e.count} x {e.itype.label}: {e.capacity_rps:.3g} req/s each, {e.utilisation:.0%} used, "
            f"capped by {e.binding}"
            for e in self.entries
        ]
        lines += [f"  why: {r}" for r in self.reasons]
        return "\n".join(lines)


def handoff_seconds(
    policy: SloPolicy,
    load: LoadMix,
    capacity: CapacityModel,
    prefill: InstanceType,
    decodes: Mapping[InstanceType, Capacity],
) -> float:
    """What a prefill instance must leave of the TTFT budget: the KV transfer of the percentile
    prompt to the slowest-linked decode type on offer, plus that type's first step at its
    capacity. The worst pair, because the router may pair any prefill with any decode."""
    engine = capacity.engine(prefill)
    if engine is None:
        return 0.0
    tokens = math.ceil(load.input_quantile(policy.targets.ttft.percentile))
    worst = 0.0
    for dtype, cap in decodes.items():
        dst = capacity.engine(dtype)
        if dst is None or cap.rate_rps <= 0 or cap.at_capacity is None:
            continue
        move = kv_transfer_time(
            engine.arch,
            tokens,
            engine.accelerator,
            dst.accelerator,
            network=SCALE_OUT,
            src_devices=prefill.tp * prefill.cp,
            dst_devices=dtype.tp * dtype.dp,
        )
        worst = max(worst, move + cap.at_capacity.tpot_s)
    return worst


def capacities(
    policy: SloPolicy, load: LoadMix, capacity: CapacityModel, corrections: CorrectionState = CorrectionState()
) -> dict[InstanceType, Capacity]:
    """Per-instance capacity of every instance type the policy allows (decode first: prefill needs them)."""
    types = policy.instance_types()
    out: dict[InstanceType, Capacity] = {}
    for itype in sorted(types, key=lambda t: t.role != "decode"):
        factors = corrections.for_label(itype.label)
        handoff = 0.0
        if itype.role == "prefill":
            handoff = handoff_seconds(
                policy, load, capacity, itype, {t: c for t, c in out.items() if t.role == "decode"}
            )
        out[itype] = capacity.capacity(itype, load, policy.targets, factors, handoff)
    return out


def _candidates(policy: SloPolicy, caps: Mapping[InstanceType, Capacity]) -> list[Candidate]:
    return _priced(policy, {t: c.rate_rps for t, c in caps.items()})


def _priced(policy: SloPolicy, rates: Mapping[InstanceType, float]) -> list[Candidate]:
    """The integer program's candidates: every type with a capacity, at the inventory's price."""
    return [
        Candidate(t, rate, t.devices * policy.cost_per_device_hour(t.accelerator))
        for t, rate in sorted(rates.items())
        if rate > 0
    ]


def _cost(cands: list[Candidate], counts: Counts) -> float:
    price = {c.itype: c.cost_per_hour for c in cands}
    return sum(n * price[t] for t, n in counts.items())


def plan(
    policy: SloPolicy,
    load: LoadMix,
    capacity: CapacityModel,
    *,
    idle_s: float = 0.0,
    corrections: CorrectionState = CorrectionState(),
    current: Counts | None = None,
) -> Plan:
    """The least-cost fleet for `load` (a forecast) under `policy`.

    idle_s: seconds since the last request (ForecastState.idle_s); current: the running fleet,
    preferred among equal-cost answers so a tie does not swap instances. Where the cheapest fleet
    and the running one do not both fit a kind's free devices, the running instances of that kind
    would have to stop before their replacements are up (a start-up's outage of that capacity):
    then the cheapest fleet that keeps them is planned instead, if one serves the load."""
    if load.rate_rps == 0 and idle_s >= policy.scale_to_zero_idle_s and policy.min_instances == 0:
        return Plan(
            True,
            (),
            load,
            0.0,
            0.0,
            0.0,
            0.0,
            IDLE,
            (
                f"no request for {idle_s:.0f} s >= scale_to_zero_idle_s {policy.scale_to_zero_idle_s:g} s: "
                "scale to zero",
            ),
        )
    demand = max(load.rate_rps * (1.0 + policy.headroom), KEEP_WARM_RPS)
    caps = capacities(policy, load, capacity, corrections)
    cands = _candidates(policy, caps)
    free = policy.free_devices()
    counts = solve(cands, demand, free, policy.min_instances, policy.max_instances, current)
    if counts is None:
        return _best_effort(policy, load, demand, caps, cands, current)
    kept_why = []
    crowded = kinds_without_room(current or {}, counts, free)
    if crowded:
        keep = {t: n for t, n in (current or {}).items() if t.accelerator in crowded}
        kept = solve(cands, demand, free, policy.min_instances, policy.max_instances, current, keep)
        if kept is not None:
            kept_why = [
                f"keeps the running {describe(keep)}: the cheapest fleet ({describe(counts)}, "
                f"${_cost(cands, counts):.2f}/h) leaves no room for them beside it on "
                f"{', '.join(crowded)}, so they would stop before its instances are up"
            ]
            counts = kept
    binding, why = _binding(policy, demand, cands, counts)
    planned = _assemble(True, load, demand, caps, cands, counts, binding, why + kept_why)
    return with_sleeping(planned, policy, capacity) if policy.sleep_mode else planned


def top_up(
    policy: SloPolicy, planned: Plan, running: Counts, free: Mapping[str, int] | None = None
) -> dict[InstanceType, int] | None:
    """The least-cost fleet that keeps every running instance and serves `planned`'s demand (None: no
    such fleet within the inventory and the instance limits, or a running type serves nothing now).

    What a scale-up adds when the running fleet falls short: the cheapest addition to it, rather
    than the plan's own shape beside it. Where the plan has swapped to another shape (corrections
    moving, a near tie), adding that shape whole ran both fleets: on the day at 8 req/s the plan
    flipped between 2 x MI300X ($5.00/h) and an MI300X prefill + A100 decode pool ($4.29/h), and
    each flip left the fleet as both ($6.79/h) for hours (issue 18's floor 6). A cheaper shape is
    still reached, by hysteresis' make-before-break swap once it has been cheaper long enough.
    `free`: the devices the loop may use (the policy's free devices by default)."""
    rates = dict(planned.capacities)
    cands = _priced(policy, rates)
    keep = nonzero(running)
    if any(rates.get(t, 0.0) <= 0 for t in keep):
        return None
    return solve(
        cands,
        planned.demand_rps,
        policy.free_devices() if free is None else free,
        policy.min_instances,
        policy.max_instances,
        keep,
        keep,
    )


def with_sleeping(planned: Plan, policy: SloPolicy, capacity: CapacityModel) -> Plan:
    """The plan plus one sleeping instance of each planned type whose wake-up beats its cold start,
    where the inventory has the devices left: the next scale-up of that type then takes wake_s
    instead of cold_s. A sleeping instance holds its devices, so its full price is added to the
    plan's cost (and said in its reasons): keeping instances warm is paid for, not free."""
    left = dict(policy.free_devices())
    for kind, used in planned.devices.items():
        left[kind] = left.get(kind, 0) - used
    sleeping: dict[InstanceType, int] = {}
    why: list[str] = []
    cost = 0.0
    for itype in planned.counts:
        engine = capacity.engine(itype)
        start = engine.startup if engine is not None else None
        if start is None or start.wake_s >= start.cold_s or left.get(itype.accelerator, 0) < itype.devices:
            continue
        left[itype.accelerator] -= itype.devices
        sleeping[itype] = 1
        price = itype.devices * policy.cost_per_device_hour(itype.accelerator)
        cost += price
        why.append(
            f"keeps 1 x {itype.label} asleep (vLLM sleep mode): wakes in {start.wake_s:.0f} s instead of a "
            f"{start.cold_s:.0f}-s cold start, for ${price:.2f}/h"
        )
    if not sleeping:
        return planned
    return replace(
        planned,
        cost_per_hour=planned.cost_per_hour + cost,
        reasons=planned.reasons + tuple(why),
        sleeping=sleeping,
        sleeping_cost_per_hour=cost,
    )


def _binding(policy: SloPolicy, demand: float, cands: list[Candidate], counts: Counts) -> tuple[str, list[str]]:
    """Which constraint decided the plan: re-solve without each limit and see whether it gets cheaper."""
    cost = _cost(cands, counts)
    unlimited = {
        k: policy.max_instances * max(t.devices for t in policy.instance_types()) for k in policy.free_devices()
    }
    relaxed = solve(cands, demand, unlimited, policy.min_instances, policy.max_instances)
    if relaxed is not None and _cost(cands, relaxed) < cost - 1e-6:
        used = devices_by_kind(counts)
        smallest = {k: min(c.itype.devices for c in cands if c.itype.accelerator == k) for k in used}
        full = [
            f"{k} ({used[k]} of {policy.free_devices()[k]} devices)"
            for k in sorted(used)
            if used[k] + smallest[k] > policy.free_devices()[k]
        ]
        return INVENTORY, [
            f"inventory runs out: {', '.join(full) or 'a cheaper kind'}; with more free devices "
            f"{describe(relaxed)} would cost ${_cost(cands, relaxed):.2f}/h"
        ]
    if policy.min_instances and sum(counts.values()) <= policy.min_instances:
        fewer = solve(cands, demand, policy.free_devices(), 0, policy.max_instances)
        if fewer is not None and _cost(cands, fewer) < cost - 1e-6:
            return MIN_INSTANCES, [f"instances.min = {policy.min_instances} keeps more than the load needs"]
    more = solve(cands, demand, policy.free_devices(), policy.min_instances, None)
    if more is not None and _cost(cands, more) < cost - 1e-6:
        return MAX_INSTANCES, [
            f"instances.max = {policy.max_instances}: more, cheaper instances "
            f"({describe(more)}, ${_cost(cands, more):.2f}/h) would do"
        ]
    return LOAD, [f"the forecast needs {demand:.3g} req/s (headroom {policy.headroom:.0%} included)"]


def _best_effort(
    policy: SloPolicy,
    load: LoadMix,
    demand: float,
    caps: Mapping[InstanceType, Capacity],
    cands: list[Candidate],
    current: Counts | None = None,
) -> Plan:
    """No fleet meets the SLOs: say which limit stops it, and return the cheapest fleet that serves
    nearly the most (BEST_EFFORT_SHARE of it). As in plan(): where that fleet and the running one do
    not both fit a kind's free devices, the running instances of that kind are kept if a fleet
    keeping them serves as much. With the inventory used up, near-equal fleets of other shapes
    (4 x MI300X-tp2 against a prefill/decode pool on the same 8 devices) otherwise swap at once
    from one interval to the next as the corrections move, each swap a start-up with that capacity
    gone: the homogeneous MI300X loop met 73.7% of the compressed bursts so, while a burst it could
    not serve went on."""
    free = policy.free_devices()
    uncapped = max_servable(cands, free, None, demand)
    if uncapped <= 0:
        why = [f"{t.label}: {c.detail}" for t, c in caps.items() if c.rate_rps <= 0] or ["no instance type is on offer"]
        fallback = _unreachable_fallback(policy, caps)
        why = [
            "cannot meet SLO with inventory: no instance type on offer (or no prefill and decode "
            "pair) meets the SLOs even when idle"
        ] + why[:6]
        if fallback:
            ((itype, n),) = fallback.items()
            why.append(f"running {n} x {itype.label} anyway: a late answer beats none")
            cands = cands + [Candidate(itype, 0.0, itype.devices * policy.cost_per_device_hour(itype.accelerator))]
        return _assemble(False, load, demand, caps, cands, fallback, SLO, why)
    most = max_servable(cands, free, policy.max_instances, demand)
    if uncapped < demand * (1 - 1e-6):
        offer = ", ".join(f"{k} {n}" for k, n in sorted(free.items()))
        binding, why = (
            INVENTORY,
            [
                f"cannot meet SLO with inventory: the free devices ({offer}) serve at most "
                f"{uncapped:.3g} req/s within TTFT p{policy.targets.ttft.percentile:g} "
                f"{policy.targets.ttft.ms:g} ms and TPOT p{policy.targets.tpot.percentile:g} "
                f"{policy.targets.tpot.ms:g} ms; the forecast with headroom needs {demand:.3g} req/s"
            ],
        )
    elif most < demand * (1 - 1e-6):
        binding, why = (
            MAX_INSTANCES,
            [
                f"cannot meet SLO within instances.max = {policy.max_instances}: at most "
                f"{most:.3g} req/s; the forecast with headroom needs {demand:.3g} req/s"
            ],
        )
    else:
        binding, why = MIN_INSTANCES, [f"instances.min = {policy.min_instances} does not fit the inventory"]
    counts = solve(cands, most * BEST_EFFORT_SHARE, free, 0, policy.max_instances) or {}
    crowded = kinds_without_room(current or {}, counts, free)
    if crowded:
        keep = {t: n for t, n in (current or {}).items() if t.accelerator in crowded}
        kept = solve(cands, most * BEST_EFFORT_SHARE, free, 0, policy.max_instances, current, keep)
        if kept is not None:
            why.append(f"keeps the running {describe(keep)}: no room for another fleet beside them")
            counts = kept
    why.append(
        f"best effort: the cheapest fleet serving {served(cands, counts):.3g} req/s, at least "
        f"{BEST_EFFORT_SHARE:.0%} of the {most:.3g} the inventory could"
    )
    return _assemble(False, load, demand, caps, cands, counts, binding, why)


def _unreachable_fallback(policy: SloPolicy, caps: Mapping[InstanceType, Capacity]) -> Counts:
    """When no type can meet the SLOs at all: instances.min (at least one) of the cheapest mixed type
    the model fits on, so requests are served late rather than not at all (and the online corrections
    get observations to learn from). Nothing when no mixed type fits or the inventory has no room."""
    fits = [
        t
        for t, c in caps.items()
        if t.role == "mixed" and c.binding != "fit" and policy.free_devices().get(t.accelerator, 0) >= t.devices
    ]
    if not fits:
        return {}
    cheapest = min(fits, key=lambda t: (t.devices * policy.cost_per_device_hour(t.accelerator), t))
    return {
        cheapest: max(1, min(policy.min_instances, policy.free_devices()[cheapest.accelerator] // cheapest.devices))
    }


def _assemble(
    feasible: bool,
    load: LoadMix,
    demand: float,
    caps: Mapping[InstanceType, Capacity],
    cands: list[Candidate],
    counts: Counts,
    binding: str,
    why: list[str],
) -> Plan:
    """The Plan record: costs, the load split between mixed and P/D (in proportion to what each
    serves, so both run equally close to their SLO limits), per-type utilisation."""
    counts = nonzero(counts)
    by_role = {
        role: sum(n * caps[t].rate_rps for t, n in counts.items() if t.role == role)
        for role in ("mixed", "prefill", "decode")
    }
    pool = min(by_role["prefill"], by_role["decode"])
    total = served(cands, counts)
    carried = min(demand, total)
    pd_rps = carried * pool / total if total > 0 else 0.0
    role_load = {"mixed": carried - pd_rps, "prefill": pd_rps, "decode": pd_rps}
    entries = tuple(
        PlanEntry(
            t,
            n,
            caps[t].rate_rps,
            _cost(cands, {t: 1}),
            role_load[t.role] / by_role[t.role] if by_role[t.role] > 0 else 0.0,
            caps[t].binding,
            caps[t].detail,
        )
        for t, n in counts.items()
    )
    reasons = list(why)
    reasons += [f"{e.itype.label}: {e.capacity_rps:.3g} req/s per instance; {e.detail}" for e in entries]
    return Plan(
        feasible,
        entries,
        load,
        demand,
        _cost(cands, counts),
        carried - pd_rps,
        pd_rps,
        binding,
        tuple(reasons),
        {t: c.rate_rps for t, c in caps.items()},
    )


def plan_homogeneous(
    policy: SloPolicy,
    load: LoadMix,
    capacity: CapacityModel,
    *,
    accelerator: str | None = None,
    idle_s: float = 0.0,
    corrections: CorrectionState = CorrectionState(),
    current: Counts | None = None,
) -> Plan:
    """The cheapest fleet of a single accelerator kind (`accelerator`, or the best kind on offer):
    the baseline a heterogeneous plan is compared against. Infeasible kinds lose to feasible ones;
    among infeasible ones the one serving most wins. `current`: the running fleet, as in plan()."""
    items = [i for i in policy.inventory if accelerator is None or i.accelerator == accelerator]
    if not items:
        raise ValueError(f"{accelerator!r} is not in the policy's inventory")
    plans = [
        plan(
            replace(policy, inventory=(item,)),
            load,
            capacity,
            idle_s=idle_s,
            corrections=corrections,
            current={t: n for t, n in (current or {}).items() if t.accelerator == item.accelerator},
        )
        for item in items
    ]
    return min(
        plans, key=lambda p: (not p.feasible, p.cost_per_hour if p.feasible else -p.mixed_rps - p.disaggregated_rps)
    )
