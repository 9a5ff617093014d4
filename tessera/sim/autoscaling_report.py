"""An autoscaled run as JSON: the usual `tessera sim` keys, billed cost, and time series.

Cost is what a cloud bills: each instance's devices x the policy's price per device-hour
x the time from its request to its stop (or the end of the run), start-up and drain
included. The time series are per interval (the policy's `interval_s`): the arrival rate,
the share of the requests that arrived in it meeting the SLOs (TTFT and TPOT bounds, each
and both), the mean instances by type (accelerator, tp, role) ready, starting and draining,
and the cost rate. Pure: a run in, a dict out.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tessera.sim.autoscaling import AutoscaledRun, fleet_changes
from tessera.sim.elastic import Lifetime
from tessera.sim.report import request_metrics_ms, summarize_sim
from tessera.sim.simulator import RequestRecord


def slo_of(run: AutoscaledRun) -> dict[str, tuple[float, float]]:
    """The policy's targets in `tessera sim --slo` form: {'ttft': (percentile, ms), 'tpot': ...}."""
    t = run.policy.targets
    return {"ttft": (t.ttft.percentile, t.ttft.ms), "tpot": (t.tpot.percentile, t.tpot.ms)}


def billed_hours(life: Lifetime, start_s: float, end_s: float) -> float:
    """Device-hours of one instance billed within [start_s, end_s)."""
    stop = life.stopped_s if life.stopped_s is not None else end_s
    return life.devices * max(0.0, min(stop, end_s) - max(life.requested_s, start_s)) / 3600.0


def billed_cost(lifetimes: list[Lifetime], end_s: float, start_s: float = 0.0) -> float:
    return sum(billed_hours(life, start_s, end_s) * life.price_per_device_hour for life in lifetimes)


def _overlap(a0: float, a1: float | None, b0: float, b1: float, end_s: float) -> float:
    a1 = end_s if a1 is None else a1
    return max(0.0, min(a1, b1) - max(a0, b0))


def fleet_series(lifetimes: list[Lifetime], end_s: float, bin_s: float) -> dict[str, Any]:
    """Per bin: mean instances of each label ready / starting / draining, and $ per hour."""
    edges = np.arange(max(1, math.ceil(end_s / bin_s)) + 1) * bin_s  # the bins request_series uses
    states: dict[str, dict[str, list[float]]] = {"ready": {}, "starting": {}, "draining": {}}
    cost = [0.0] * (len(edges) - 1)
    for life in lifetimes:
        label = life.itype.label
        stop = life.stopped_s if life.stopped_s is not None else end_s
        spans = {
            "starting": (life.requested_s, min(life.ready_s, stop)),
            "ready": (min(life.ready_s, stop), life.drain_s if life.drain_s is not None else stop),
            "draining": (life.drain_s if life.drain_s is not None else stop, stop),
        }
        for i, (b0, b1) in enumerate(zip(edges[:-1], edges[1:])):
            for state, (s0, s1) in spans.items():
                seconds = _overlap(s0, s1, b0, b1, end_s)
                if seconds > 0:
                    series = states[state].setdefault(label, [0.0] * (len(edges) - 1))
                    series[i] += seconds / bin_s
            cost[i] += billed_hours(life, b0, b1) * life.price_per_device_hour * 3600.0 / bin_s
    rounded = {
        s: {label: [round(v, 3) for v in vals] for label, vals in sorted(by.items())} for s, by in states.items()
    }
    return {
        "t": [round(float(x), 1) for x in edges[:-1]],
        "instances": rounded["ready"],
        "starting": rounded["starting"],
        "draining": rounded["draining"],
        "cost_per_hour": [round(c, 3) for c in cost],
    }


def request_series(
    records: list[RequestRecord], slo: dict[str, tuple[float, float]], end_s: float, bin_s: float
) -> dict[str, list]:
    """Per bin of arrival time: the arrival rate and the share meeting each bound and both."""
    n = max(1, math.ceil(end_s / bin_s))
    arrivals = [0] * n
    good = {"both": [0] * n, "ttft": [0] * n, "tpot": [0] * n}
    for rec in records:
        i = min(int(rec.arrival_s // bin_s), n - 1)
        arrivals[i] += 1
        if rec.done and not rec.error:
            m = request_metrics_ms(rec)
            ok = {k: m[k] <= slo[k][1] for k in ("ttft", "tpot") if k in slo}
            good["both"][i] += all(ok.values())
            for k, v in ok.items():
                good[k][i] += v

    def share(values: list[int]) -> list[float | None]:
        return [round(g / a, 4) if a else None for g, a in zip(values, arrivals)]

    return {
        "arrival_rps": [round(a / bin_s, 3) for a in arrivals],
        "slo_attainment": share(good["both"]),
        "ttft_attainment": share(good["ttft"]),
        "tpot_attainment": share(good["tpot"]),
    }


def attainment_by_metric(records: list[RequestRecord], slo: dict[str, tuple[float, float]]) -> dict[str, float]:
    """Share of all requests (failed and never-served ones count as misses) within each bound."""
    if not records:
        return {}
    out = {}
    for metric, (_, bound) in slo.items():
        ok = sum(1 for r in records if r.done and not r.error and request_metrics_ms(r)[metric] <= bound)
        out[f"{metric}_attainment"] = ok / len(records)
    return out


def summarize_autoscaled(run: AutoscaledRun, details: bool = False) -> dict[str, Any]:
    """`tessera sim`'s summary for an autoscaled run, with billed cost and the time series."""
    slo = slo_of(run)
    summary = summarize_sim(run.result, slo, details=details)
    bin_s = run.policy.interval_s
    series = fleet_series(run.lifetimes, run.end_s, bin_s)
    series.update(request_series(run.result.records, slo, run.end_s, bin_s))
    ready_s: dict[str, float] = {}
    hours: dict[str, float] = {}
    for life in run.lifetimes:
        label = life.itype.label
        stop = life.stopped_s if life.stopped_s is not None else run.end_s
        ready_s[label] = ready_s.get(label, 0.0) + max(0.0, stop - life.ready_s)
        hours[label] = hours.get(label, 0.0) + billed_hours(life, 0.0, run.end_s)
    busy: dict[str, float] = {}
    for inst in run.result.instances:
        busy[inst.spec.label] = busy.get(inst.spec.label, 0.0) + inst.busy_s
    cost = billed_cost(run.lifetimes, run.end_s)
    summary.update(attainment_by_metric(run.result.records, slo))
    summary.update(
        autoscaler=run.autoscaler,
        startup_s=run.startup_s,
        cost_usd=cost,
        cost_per_hour_mean=cost * 3600.0 / run.end_s if run.end_s else 0.0,
        billed_s=run.end_s,
        device_hours=hours,
        utilization={k: busy.get(k, 0.0) / v for k, v in ready_s.items() if v > 0},
        instances={label: int(math.ceil(max(vals))) for label, vals in series["instances"].items()},
        instances_started=len(run.lifetimes),
        queued_at_end=sum(1 for r in run.result.records if not r.done and not r.error),
        fleet_changes=fleet_changes(run),
        timeseries=series,
    )
    return summary
