"""Autoscalers over a day (issue 18): the daily cycle, where real fleets save, against static fleets.

Workloads, all but the last with the request mix (prompt and answer lengths) of `azure2023_code.csv`:

- day: arrivals from a non-homogeneous Poisson process under the measured weekday envelope of
  tessera.sim.workloads (`azure2024-code`: the Azure 2024 code service's invocations per minute,
  read off the dataset's published figure; peak hour 19:00 UTC at 2.24x the mean, about 10x the
  trough): 24 h at 8 req/s mean, and the same day's shape in 6 h at 32 req/s mean;
- hour: the trace itself as recorded (its bursts every one to two minutes);
- poisson: constant-rate Poisson arrivals at 2, 8 and 32 req/s for 20 minutes;
- mooncake: the other trace of ../shared/data, `mooncake_synthetic.jsonl` as recorded (17
  minutes of long prompts, 15k tokens on average, with shared prefixes), less the 10 of its 3,993
  requests longer than Llama-3.1-8B's 131,072-token context (a router refuses them with a 400),
  under deploy/slo-policies/llama3-8b-long-prompts.yaml (TTFT p99 10 s, TPOT p99 100 ms);
- scarce MI300X: the day in 6 h on an inventory with 4 MI300X free instead of 8. The cheapest kind
  per request (MI300X) then serves all but the peak hours, where the fleet needs more than 4 of them:
  the cheapest single kind for the whole day is another one, and a heterogeneous loop keeps MI300X
  for most of the day and adds the next-cheapest kind only at the peak. A data center's newest
  kind is usually the scarce one.

Under deploy/slo-policies/llama3-8b-p99.yaml (99% of requests within TTFT 500 ms and TPOT 50 ms,
instances ready 60 s after they are asked for, billed from then), or the long-prompt policy for
mooncake, each runs:

- static for the 60-s peak: the planner's plan for the workload's peak rate over 60-s windows;
- static, sized in hindsight: the cheapest multiple of that peak whose static plan meets the SLOs
  in the replay (down from 1x while it still meets them, up from 1x when it does not; fleets
  the planner gives twice are simulated once);
- hpa, homogeneous (the tessera loop on the best single kind for the peak), tessera.

The autoscalers start warm, as a deployment running before the workload: on a day, with the fleet
each provisions for the day's first five minutes (the envelope is cyclic, and yesterday's loop left
midnight's fleet running); on the other workloads with their provisioning for the peak. Until
stop 30 the days too opened with the peak's fleet, which billed the loops for ten minutes of
scaling it down (on the scarce day $2.33, 4% of tessera's cost).

The goals checked (issue 18): tessera within 99% at <= 0.6x the sized static fleet's cost and
<= 0.8x the homogeneous autoscaler's; and never dearer than the static fleet for the 60-s peak
where that fleet already meets the SLOs. Where a goal is missed the floor is printed: the day's
envelope alone (mean over peak: what a fleet that follows the load exactly, with no start-up or
integer instances, pays against one sized for the peak) and the planner's own plan at each 5
minutes' true mean rate with no start-up, hysteresis or burst window ("planner floor").

Writes results/autoscaling_diurnal.json, .md and autoscaling_diurnal.png (cost rate over the day
and attainment per interval).

    taskset -c 0 .venv/bin/python benchmarks/autoscaling_diurnal.py           # an hour or more on one core
    taskset -c 0 .venv/bin/python benchmarks/autoscaling_diurnal.py --quick   # a day at 0.5 req/s, poisson 5 min
    ... --only "day, 8"    # the workloads whose name contains it (or the one named in full), kept
                           # beside the others' results (each run also saved as it ends)
    ... --merge F ...      # fold such runs' JSON files into the results and redraw
    ... --autoscalers-only # after a change to the autoscalers alone: keep the static fleets' runs

Why these rates: the simulator prices every engine step, about 2,000 requests a second of one
free core, and the planning loop adds 0.06-0.12 s per 30-s tick (2,880 a day). A day whose peak
needs 8-20 instances of the planner's choice (by the planner an MI300X-tp2 carries about 25 req/s
of this mix within the p99 bounds) is 8-19 million requests: hours of one core per autoscaler. The
days here (692k requests each) have fleets of one or two instances (the day at 8 req/s) and
several (the day in 6 h), so whole instances weigh more than they would at scale.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
from autoscaling import KEYS, POLICY, RESULTS, ROOT, TRACE, simulate

from tessera.engine_model.build import resolve_arch
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.load import LoadMix
from tessera.planning.planner import plan, plan_homogeneous
from tessera.planning.slo_policy import SloPolicy, parse_slo_policy
from tessera.sim.autoscalers import build_autoscaler, homogeneous_kind, peak_load
from tessera.sim.workloads import DAY_S, SimRequest, azure_csv, diurnal, diurnal_envelope, mooncake_jsonl

BURST_WINDOW_S = 10.0
# (mean req/s, the day's length in s): a day as it is, and the day's shape four times as fast at
# four times the rate (six hours), whose fleet is several instances at the peak in the same
# simulation time (at 8 req/s the peak needs two instances, so whole instances weigh heavily)
DAYS = ((8.0, DAY_S), (32.0, DAY_S / 4))
POISSON_RATES = (2.0, 8.0, 32.0)
POISSON_S = 1200.0
# multiples of the 60-s peak tried for the hindsight fleet, down from 1x: fine enough that no
# fleet the planner gives between two of them is skipped (the scarce days' 2 x MI300X-tp2 + 1 x
# H100 comes only at 0.65-0.7x; fleets already simulated are not run again)
SCALES_DOWN = (0.9, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25)
SCALES_UP = (1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
FLOOR_BUCKET_S = 300.0
RUNS = ("static", "static-sized", "hpa", "homogeneous", "tessera")  # a workload's runs, in the tables' order
MOONCAKE = ROOT.parent / "shared" / "data" / "traces" / "mooncake_synthetic.jsonl"
MOONCAKE_NAME = "mooncake (long prompts)"
LONG_POLICY = ROOT / "deploy" / "slo-policies" / "llama3-8b-long-prompts.yaml"
CONTEXT_TOKENS = 131072  # Llama-3.1-8B's context
SCARCE = {"mi300x": 4}  # free devices of the scarce-kind inventory, the rest as the policy's
SCARCE_PREFIX = "scarce mi300x (4 free): "


def workload_policy(wname: str) -> SloPolicy:
    """The SLO policy a workload runs under: the long-prompt one for Mooncake, the p99 one with the
    MI300X scarce for the scarce day, else the p99 one."""
    if wname == MOONCAKE_NAME:
        return parse_slo_policy(LONG_POLICY.read_text())
    policy = parse_slo_policy(POLICY.read_text())
    if wname.startswith(SCARCE_PREFIX):
        inventory = tuple(replace(i, free=SCARCE.get(i.accelerator, i.free)) for i in policy.inventory)
        policy = replace(policy, inventory=inventory)
    return policy


def workload_model(wname: str, policy: SloPolicy, capacity: CapacityModel) -> tuple[SloPolicy, CapacityModel]:
    """The policy `wname` runs under and its capacity model (`capacity` when that is `policy`'s)."""
    wpolicy = workload_policy(wname)
    return wpolicy, capacity if wpolicy == policy else CapacityModel(engines_for(wpolicy))


def workloads(mix: list[SimRequest], quick: bool) -> dict[str, tuple[list[SimRequest], float | None]]:
    """name -> (requests, the day's mean rate or None for a workload without an envelope)."""
    out: dict[str, tuple[list[SimRequest], float | None]] = {}
    out["hour (azure2023_code)"] = (mix, None)
    for rate in POISSON_RATES:
        # a flat envelope: homogeneous Poisson with the same request mix
        out[f"poisson {rate:g} req/s"] = (
            diurnal(mix, rate, 300.0 if quick else POISSON_S, envelope="flat", seed=2),
            None,
        )
    for rate, day_s in ((0.5, DAY_S),) if quick else DAYS:
        out[day_name(rate, day_s)] = (diurnal(mix, rate, day_s, seed=1, day_s=day_s), rate)
    if not quick:  # the busier day: at 8 req/s the peak fits 4 MI300X, so scarcity changes nothing
        rate, day_s = DAYS[-1]
        out[SCARCE_PREFIX + day_name(rate, day_s)] = (diurnal(mix, rate, day_s, seed=1, day_s=day_s), rate)
        # and the same day at its own pace: 2.8 million requests, four times the simulation, but
        # the start-up and hysteresis weigh against the envelope as on a real day, not four times more
        out[SCARCE_PREFIX + day_name(rate, DAY_S)] = (diurnal(mix, rate, DAY_S, seed=1, day_s=DAY_S), rate)
    long = [r for r in mooncake_jsonl(MOONCAKE) if r.prompt_tokens + r.output_tokens <= CONTEXT_TOKENS]
    out[MOONCAKE_NAME] = ([r for r in long if r.arrival_s <= 300.0] if quick else long, None)
    return out


def day_name(rate: float, day_s: float) -> str:
    return f"day, {rate:g} req/s mean" if day_s == DAY_S else f"day in {day_s / 3600:g} h, {rate:g} req/s mean"


def day_length(wname: str) -> float:
    """The day's length of a day workload, from its name."""
    return next((d for r, d in DAYS if wname.endswith(day_name(r, d))), DAY_S)


def planner_floor(
    policy: SloPolicy, capacity: CapacityModel, work: list[SimRequest], homogeneous: bool = False
) -> list[float]:
    """The planner's own plan for each bucket's true mean rate, billed for the bucket ($ per
    FLOOR_BUCKET_S bucket; their sum is the day's floor): no start-up, no hysteresis, no burst
    window, no headroom beyond the policy's. A reference, not an autoscaler.

    homogeneous: the homogeneous loop's plan instead (its one kind, the best for the peak). The
    ratio of the two floors is what the choice among kinds, TPs and roles can save at most when
    both loops follow the load perfectly: tessera's goal against the homogeneous loop (0.8x) is
    past it where the ratio is above 0.8."""
    shape = peak_load([r.arrival_s for r in work], [r.prompt_tokens for r in work], [r.output_tokens for r in work])
    kind = homogeneous_kind(policy, shape, capacity) if homogeneous else None
    arrivals = np.array([r.arrival_s for r in work])
    end = float(arrivals.max())
    costs = []
    for start in np.arange(0.0, end, FLOOR_BUCKET_S):
        n = int(np.count_nonzero((arrivals >= start) & (arrivals < start + FLOOR_BUCKET_S)))
        cost = 0.0
        if n:
            load = shape.scaled(n / FLOOR_BUCKET_S)
            p = plan_homogeneous(policy, load, capacity, accelerator=kind) if kind else plan(policy, load, capacity)
            cost = p.cost_per_hour * min(FLOOR_BUCKET_S, end - start) / 3600.0
        costs.append(cost)
    return costs


def floors(policy: SloPolicy, capacity: CapacityModel, work: list[SimRequest]) -> dict[str, float]:
    """A day's floors: tessera's and the homogeneous loop's planner floors, and the envelope's."""
    buckets = planner_floor(policy, capacity, work)
    return {
        "planner_floor": sum(buckets),
        "planner_floor_buckets": buckets,
        "homogeneous_floor": sum(planner_floor(policy, capacity, work, homogeneous=True)),
        "envelope_floor": envelope_floor(),
    }


# The day's phases for excess_over_floor: rising where the envelope half an hour of the day later
# is more than PHASE_CHANGE above its value half an hour earlier, falling where it is that much
# below, level otherwise.
PHASE_CHANGE = 0.1
PHASES = ("rising", "level", "falling")


def day_phase(t_s: float, day_s: float) -> str:
    """Whether the envelope is rising, level or falling at `t_s` of a day `day_s` long."""
    half_hour = day_s / 48.0
    before, after = diurnal_envelope(t_s - half_hour, day_s=day_s), diurnal_envelope(t_s + half_hour, day_s=day_s)
    change = (after - before) / max(diurnal_envelope(t_s, day_s=day_s), 1e-9)
    return "rising" if change > PHASE_CHANGE else "falling" if change < -PHASE_CHANGE else "level"


def excess_over_floor(entry: dict, day_s: float, name: str = "tessera") -> dict[str, dict[str, float]]:
    """Where an autoscaler pays above the planner floor over a day, by the envelope's phase
    (day_phase): {phase: {"buckets": n, "floor": $, "cost": $}}. The floor follows each five
    minutes' true rate at once; a loop pays above it where it must act ahead of the load (rising:
    an instance takes a start-up to be ready) or keeps more than the load needs (falling: a
    forecast that crosses a plan's boundary adds an instance at once, and hysteresis removes it
    only after ten intervals of smaller plans, docs/autoscaling.md floor 10)."""
    ts = entry["runs"][name]["timeseries"]
    t, rate = np.asarray(ts["t"]), np.asarray(ts["cost_per_hour"])
    step = float(t[1] - t[0]) if len(t) > 1 else FLOOR_BUCKET_S
    out = {p: {"buckets": 0, "floor": 0.0, "cost": 0.0} for p in PHASES}
    for i, floor in enumerate(entry["planner_floor_buckets"]):
        start = i * FLOOR_BUCKET_S
        inside = (t >= start) & (t < start + FLOOR_BUCKET_S)
        phase = out[day_phase(start + FLOOR_BUCKET_S / 2, day_s)]
        phase["buckets"] += 1
        phase["floor"] += floor
        phase["cost"] += float(rate[inside].sum()) * step / 3600.0
    return out


def excess_table(results: dict[str, dict]) -> str:
    """Each day's tessera cost against its planner floor, by the envelope's phase."""
    lines = [
        "| day | phase | share of the day | planner floor | tessera | tessera above the floor |",
        "|---|---|---|---|---|---|",
    ]
    for wname, entry in results.items():
        if not entry.get("day_rate") or "planner_floor_buckets" not in entry or "tessera" not in entry["runs"]:
            continue
        by_phase = excess_over_floor(entry, day_length(wname))
        total = sum(seen["buckets"] for seen in by_phase.values())
        for phase, seen in by_phase.items():
            lines.append(
                f"| {wname} | {phase} | {seen['buckets'] / total:.0%} | ${seen['floor']:.2f} | ${seen['cost']:.2f} "
                f"| ${seen['cost'] - seen['floor']:.2f} ({seen['cost'] / max(seen['floor'], 1e-9) - 1:+.0%}) |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def opening_load(work: list[SimRequest]) -> LoadMix:
    """A day's load at midnight: its first FLOOR_BUCKET_S's mean rate, in the day's request shape.
    The autoscalers open with the fleet for it (build_autoscaler's opening): the envelope is
    cyclic, and yesterday's loop left the fleet for midnight's load running, not the peak's."""
    shape = peak_load([r.arrival_s for r in work], [r.prompt_tokens for r in work], [r.output_tokens for r in work])
    first = sum(1 for r in work if r.arrival_s < FLOOR_BUCKET_S)
    return shape.scaled(first / FLOOR_BUCKET_S)


def envelope_floor() -> float:
    """Mean over peak of the diurnal envelope: a fleet that follows the load exactly against one
    sized for the peak, at any rate."""
    ts = np.arange(0.0, DAY_S, 60.0)
    env = np.array([diurnal_envelope(float(t)) for t in ts])
    return float(env.mean() / env.max())


def run_workload(
    policy: SloPolicy,
    capacity: CapacityModel,
    arch,
    work: list[SimRequest],
    saved: Callable[[dict[str, dict]], None] = lambda runs: None,
    reuse: dict[str, dict] | None = None,
    opening: LoadMix | None = None,
    runs: frozenset[str] = frozenset(RUNS),
) -> dict[str, dict]:
    """Every autoscaler on `work`; `saved(runs so far)` after each run (a day takes an hour or more
    on a busy machine: what finished is kept). The loops first, hpa last.

    reuse: an earlier result's runs of this workload: its static and sized runs are kept and only
    the autoscalers run again (--autoscalers-only; static fleets never call the planning loop and
    never start from a warm fleet, so a change to either leaves them as they were, and a day's
    rerun takes half the time).

    opening: the load the autoscalers' fleet running before the workload was provisioned for
    (build_autoscaler's opening; None: the peak).

    runs: which of RUNS to make (--runs; a long day's runs split over processes, then --merge)."""
    peak = peak_load([r.arrival_s for r in work], [r.prompt_tokens for r in work], [r.output_tokens for r in work])
    out: dict[str, dict] = {}
    seen: dict[tuple, dict] = {}
    if reuse is not None:
        out = {name: reuse[name] for name in ("static", "static-sized")}

    def static_at(scale: float) -> dict:
        counts = plan(policy, peak.scaled(peak.rate_rps * scale), capacity).counts
        key = tuple(sorted((t.label, n) for t, n in counts.items() if n))
        if key not in seen:
            scaler = build_autoscaler("static", policy, capacity, peak.scaled(peak.rate_rps * scale))
            seen[key] = simulate(f"static x{scale:g} 60-s peak", scaler, policy, arch, work, capacity.engines)
            seen[key]["peak_scale"] = scale  # the largest multiple tried that gives this fleet
        return seen[key] | {"fleet": ", ".join(f"{n} x {label}" for label, n in key)}

    def run(name: str) -> None:
        scaler = build_autoscaler(name, policy, capacity, peak, burst_window_s=BURST_WINDOW_S, opening=opening)
        out[name] = simulate(name, scaler, policy, arch, work, capacity.engines)
        saved(out)

    if reuse is not None:
        runs = runs - {"static", "static-sized"}
    if runs & {"static", "static-sized"}:  # the sized search starts from static for the 60-s peak
        out["static"] = static_at(1.0)
        saved(out)
    for name in ("tessera", "homogeneous"):
        if name in runs:
            run(name)
    if "static-sized" in runs:
        out["static-sized"] = sized_static(out["static"], static_at)
        saved(out)
    if "hpa" in runs:
        run("hpa")
    return {name: out[name] for name in RUNS if name in out}


def sized_static(at_peak: dict, static_at: Callable[[float], dict]) -> dict:
    """The cheapest static fleet that meets 99% in hindsight: multiples of the 60-s peak, down
    from 1x while the fleet still meets it (`at_peak` does), else up from 1x until one does."""
    sized = at_peak if at_peak["slo_attainment"] >= 0.99 else None
    if sized is not None:
        for k in SCALES_DOWN:
            s = static_at(k)
            if s["slo_attainment"] < 0.99:
                break
            sized = s if s["cost_usd"] < sized["cost_usd"] else sized
    else:
        for k in SCALES_UP:
            s = static_at(k)
            if s["slo_attainment"] >= 0.99:
                sized = s
                break
    return sized or {"slo_attainment": 0.0, "cost_usd": float("nan"), "peak_scale": None}


def goals(runs: dict[str, dict]) -> dict[str, object]:
    """The issue's three checks on one workload."""
    t, static, sized, homog = runs["tessera"], runs["static"], runs["static-sized"], runs["homogeneous"]
    vs_sized = t["cost_usd"] / sized["cost_usd"] if sized.get("peak_scale") else float("nan")
    vs_homog = t["cost_usd"] / homog["cost_usd"]
    met = t["slo_attainment"] >= 0.99
    return {
        "tessera_within_slo": t["slo_attainment"],
        "vs_sized_static": vs_sized,
        "vs_homogeneous": vs_homog,
        "vs_static_60s_peak": t["cost_usd"] / static["cost_usd"],
        "goal_0.6x_sized": bool(met and vs_sized <= 0.6),
        "goal_0.8x_homogeneous": bool(met and vs_homog <= 0.8),
        "static_60s_meets_slo": static["slo_attainment"] >= 0.99,
        "goal_not_above_static_60s": bool(
            static["slo_attainment"] < 0.99 or t["cost_usd"] <= static["cost_usd"] * 1.0005
        ),
    }


LABELS = {
    "static": "static for the 60-s peak",
    "static-sized": "static, sized in hindsight",
    "hpa": "hpa",
    "homogeneous": "homogeneous",
    "tessera": "**tessera**",
}


def table(results: dict[str, dict]) -> str:
    lines = [
        "| workload | autoscaler | within both SLOs | TTFT p99 | TPOT p99 | cost | tessera vs it |",
        "|---|---|---|---|---|---|---|",
    ]
    for wname, entry in results.items():
        runs = entry["runs"]
        for name, label in LABELS.items():
            s = runs.get(name)
            if s is None:
                lines.append(f"| {wname} | {label} | not run (out of time) | | | | |")
                continue
            if name == "static-sized":
                scale = s.get("peak_scale")
                label = f"static x{scale:g} 60-s peak, sized in hindsight" if scale else "static, none meets"
            if "p99_ttft_ms" not in s:
                lines.append(f"| {wname} | {label} | none of x{SCALES_UP[-1]:g} | | | | |")
                continue
            ratio = runs["tessera"]["cost_usd"] / s["cost_usd"] if name != "tessera" and "tessera" in runs else None
            lines.append(
                f"| {wname} | {label} | {s['slo_attainment']:.2%} | {s['p99_ttft_ms']:.0f} ms | "
                f"{s['p99_tpot_ms']:.1f} ms | ${s['cost_usd']:.2f} | {f'{ratio:.2f}x' if ratio else ''} |"
            )
        g = entry.get("goals")
        if g is None:
            lines.append(f"| {wname} | goals | not all runs finished | | | | | |")
            continue
        floors = ""
        if entry.get("planner_floor") is not None:
            pf = entry["planner_floor"]
            floors = (
                f"; floors: envelope {entry['envelope_floor']:.2f}x the peak fleet, planner at the true "
                f"rate ${pf:.2f} ({pf / runs['static-sized']['cost_usd']:.2f}x sized)"
            )
            if entry.get("homogeneous_floor"):
                hf = entry["homogeneous_floor"]
                floors += f", homogeneous planner at the true rate ${hf:.2f} (the planner's {pf / hf:.2f}x)"
        lines.append(
            f"| {wname} | goals | 0.6x sized: {'met' if g['goal_0.6x_sized'] else 'missed'}; 0.8x homogeneous: "
            f"{'met' if g['goal_0.8x_homogeneous'] else 'missed'}; not above static 60-s: "
            f"{'met' if g['goal_not_above_static_60s'] else 'missed'}{floors} | | | | | |"
        )
    return "\n".join(lines)


def compact(results: dict[str, dict]) -> str:
    """One row per workload (the README's table): each autoscaler's share within both SLOs and cost,
    then tessera's cost over the sized static fleet's, the homogeneous loop's and the 60-s peak's."""
    head = ["static, 60-s peak", "static, sized", "hpa", "homogeneous", "tessera"]
    lines = [
        "| workload | " + " | ".join(head) + " | tessera / sized (goal <= 0.6) | tessera / homogeneous (goal <= 0.8) "
        "| tessera / static 60-s peak (goal <= 1 where that meets the SLOs) |",
        "|---|" + "---|" * (len(head) + 3),
    ]
    for wname, entry in results.items():
        runs, g = entry["runs"], entry.get("goals")
        cells = []
        for name in ("static", "static-sized", "hpa", "homogeneous", "tessera"):
            s = runs.get(name)
            if s is None:
                cells.append("not run (out of time)")
                continue
            scale = f" (x{s['peak_scale']:g})" if name == "static-sized" and s.get("peak_scale") else ""
            cells.append(f"{s['slo_attainment']:.2%}, ${s['cost_usd']:.2f}{scale}")
        if g is None:
            lines.append(f"| {wname} | " + " | ".join(cells) + " | | | |")
            continue
        third = f"{g['vs_static_60s_peak']:.2f}" + ("" if g["static_60s_meets_slo"] else " (static misses)")
        lines.append(
            f"| {wname} | "
            + " | ".join(cells)
            + f" | {g['vs_sized_static']:.2f} | {g['vs_homogeneous']:.2f} | {third} |"
        )
    return "\n".join(lines)


def plot(results: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [w for w, e in results.items() if e.get("day_rate")]
    if not days:  # nothing to draw: --only on workloads without an envelope
        return
    fig, axes = plt.subplots(3, len(days), figsize=(7 * len(days), 9), sharex=True, squeeze=False)
    for col, wname in enumerate(days):
        runs = results[wname]["runs"]
        clock = 24.0 / (day_length(wname) / 3600.0)  # clock hours per hour simulated
        first = next(runs[n] for n in LABELS if n in runs)["timeseries"]
        hours = np.array(first["t"]) / 3600.0 * clock
        axes[0][col].plot(hours, first["arrival_rps"][: len(hours)], color="black", lw=0.6)
        axes[0][col].set_title(f"{wname}: arrivals (req/s)")
        for name, label in LABELS.items():
            ts = runs.get(name, {}).get("timeseries")
            if not ts:
                continue
            label = label.strip("*")
            h = np.array(ts["t"]) / 3600.0 * clock
            color = f"C{list(LABELS).index(name)}"  # one colour per autoscaler in every panel, run or not
            axes[1][col].step(
                h,
                ts["cost_per_hour"][: len(h)],
                where="post",
                color=color,
                label=f"{label} (${runs[name]['cost_usd']:.0f})",
            )
            att = np.array([np.nan if v is None else v for v in ts["slo_attainment"][: len(h)]], dtype=float)
            # the share within both SLOs of each half hour's arrivals
            k = 60
            n = len(att) // k * k
            axes[2][col].plot(
                h[:n:k] + 0.25 * clock,
                np.nanmean(att[:n].reshape(-1, k), axis=1),
                marker=".",
                color=color,
                label=label,
            )
        axes[1][col].set_ylabel("fleet cost ($/h)")
        axes[1][col].legend(fontsize=8)
        axes[2][col].set_ylabel("within both SLOs (per 60 intervals)")
        axes[2][col].axhline(0.99, color="grey", ls=":")
        axes[2][col].set_xlabel("hour of the day")
        axes[2][col].legend(fontsize=8)
    fig.suptitle(
        "llama3-8b, TTFT p99 500 ms, TPOT p99 50 ms, start-up 60 s; "
        "azure2023_code mix, Azure 2024 code weekday envelope (UTC)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def keep(s: dict, day_rate: float | None) -> dict:
    """What the JSON keeps of a run: the figures, and the time series for a day."""
    out = {k: s.get(k) for k in KEYS} | {"peak_scale": s.get("peak_scale"), "fleet": s.get("fleet")}
    if s.get("note"):  # where a run came from, when it was not this one (an earlier run kept)
        out["note"] = s["note"]
    if day_rate:
        out |= {"timeseries": s.get("timeseries"), "fleet_changes": s.get("fleet_changes")}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="a day at 0.5 req/s and 5 minutes of Poisson")
    ap.add_argument("--replot", action="store_true", help="redraw the PNG and table from the JSON")
    ap.add_argument(
        "--only", default="", help="run only the workloads whose name contains this, keeping the others' results"
    )
    ap.add_argument(
        "--merge", nargs="*", default=[], help="fold these JSON files (of --only runs) into the results, then report"
    )
    ap.add_argument(
        "--autoscalers-only",
        action="store_true",
        help="rerun only hpa and the two planning loops, keeping the static and sized runs from the results",
    )
    ap.add_argument(
        "--runs",
        default=",".join(RUNS),
        help=f"which runs to make, comma-separated among {', '.join(RUNS)} (static-sized runs static too)",
    )
    args = ap.parse_args()
    wanted = frozenset(args.runs.split(","))
    if not wanted <= set(RUNS):
        ap.error(f"--runs: unknown {', '.join(sorted(wanted - set(RUNS)))}; known: {', '.join(RUNS)}")
    suffix = "-quick" if args.quick else ""
    out_json = RESULTS / f"autoscaling_diurnal{suffix}.json"
    if args.replot:
        results = json.loads(out_json.read_text())
    else:
        policy = parse_slo_policy(POLICY.read_text())
        arch = resolve_arch(policy.model)
        capacity = CapacityModel(engines_for(policy))
        mix = azure_csv(TRACE)
        kept_before = args.only or args.merge or args.autoscalers_only
        results = json.loads(out_json.read_text()) if out_json.exists() and kept_before else {}
        merged: set[str] = set()
        for extra in args.merge:  # a workload's runs may come in several files (--runs): their union
            for wname, entry in json.loads(Path(extra).read_text()).items():
                if wname in merged:
                    entry = (
                        results[wname]
                        | {k: v for k, v in entry.items() if k != "runs"}
                        | {"runs": results[wname]["runs"] | entry["runs"]}
                    )
                entry.pop("goals", None)  # computed again below, over all of its runs
                results[wname] = entry
                merged.add(wname)
        for wname, entry in results.items():  # runs saved one by one: what the whole-workload pass adds
            if "goals" not in entry and set(entry["runs"]) >= {"static", "static-sized", "homogeneous", "tessera"}:
                entry["goals"] = goals(entry["runs"])
            if entry.get("day_rate") and "planner_floor_buckets" not in entry:
                day_s = day_length(wname)
                work = diurnal(mix, entry["day_rate"], day_s, seed=1, day_s=day_s)
                entry |= floors(*workload_model(wname, policy, capacity), work)
        wall = time.monotonic()
        every = workloads(mix, args.quick) if not args.merge else {}
        # a workload named in full runs alone (the scarce day's name contains the day in 6 h's)
        chosen = [w for w in every if w == args.only] or [w for w in every if args.only in w]
        for wname, (work, day_rate) in ((w, every[w]) for w in chosen):
            print(
                f"{wname}: {len(work)} requests over {work[-1].arrival_s:.0f} s "
                f"(elapsed {time.monotonic() - wall:.0f} s)",
                flush=True,
            )
            stem = "".join(c for c in wname.replace(" ", "_") if c.isalnum() or c in "_.")
            partial = RESULTS / f"autoscaling_diurnal{suffix}.{stem}.json"

            def save(
                runs: dict[str, dict], wname: str = wname, day_rate: float | None = day_rate, partial: Path = partial
            ) -> None:
                kept = {name: keep(s, day_rate) for name, s in runs.items()}
                partial.write_text(json.dumps({wname: {"runs": kept, "day_rate": day_rate}}))

            wpolicy, wcapacity = workload_model(wname, policy, capacity)
            reuse = results[wname]["runs"] if args.autoscalers_only else None
            runs = run_workload(
                wpolicy, wcapacity, arch, work, save, reuse, opening_load(work) if day_rate else None, wanted
            )
            entry: dict[str, object] = {"runs": runs, "day_rate": day_rate}
            if set(runs) >= {"static", "static-sized", "homogeneous", "tessera"}:
                entry["goals"] = goals(runs)
            if day_rate:
                entry |= floors(wpolicy, wcapacity, work)
            print(f"    goals: {entry.get('goals', 'not all runs made')}", flush=True)
            entry["runs"] = {name: keep(s, day_rate) for name, s in runs.items()}
            partial.write_text(json.dumps({wname: entry}))
            results[wname] = entry
        RESULTS.mkdir(parents=True, exist_ok=True)
        # one line: the days' 30-s series make an indented file of 200,000 lines (2.5 MB) for no reader
        out_json.write_text(json.dumps(results, separators=(",", ":")))
    text = compact(results) + "\n\n" + table(results) + "\n\n" + excess_table(results)
    (RESULTS / f"autoscaling_diurnal{suffix}.md").write_text(text + "\n")
    plot(results, RESULTS / f"autoscaling_diurnal{suffix}.png")
    print(text)


if __name__ == "__main__":
    main()
