"""A simulation's results as the JSON `vllm bench serve --save-result` writes, plus cluster figures.

Same key names as vLLM's benchmark (`p90_ttft_ms`, `request_throughput`, ...)
so simulated and measured runs go through the same comparison scripts; added:
`slo_attainment`, `prefix_cache_hit_rate`, per-accelerator `utilization` and
`cost_usd`. Pure: records in, dict out.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from tessera.bench.results import Outcome, summarize
from tessera.sim.simulator import RequestRecord, SimResult

SLO_METRICS = ("ttft", "tpot", "itl", "e2el")


class SloError(ValueError):
    """An --slo string that cannot be understood."""


def parse_slo(text: str | None) -> dict[str, tuple[float, float]]:
    """`ttft_p90=500,tpot_p90=50` -> {'ttft': (90.0, 500.0), 'tpot': (90.0, 50.0)} (percentile, ms)."""
    out: dict[str, tuple[float, float]] = {}
    for part in (p.strip() for p in (text or "").split(",") if p.strip()):
        key, sep, value = part.partition("=")
        metric, _, pct = key.strip().partition("_p")
        try:
            if not sep or metric not in SLO_METRICS:
                raise ValueError
            out[metric] = (float(pct) if pct else 100.0, float(value))
        except ValueError:
            raise SloError(
                f"bad SLO {part!r}: expected METRIC_pPCT=MS with METRIC one of "
                f"{', '.join(SLO_METRICS)}, e.g. ttft_p90=500"
            ) from None
    return out


def _outcome(rec: RequestRecord) -> Outcome:
    times = rec.token_times
    ok = rec.done and not rec.error
    return Outcome(
        prompt_len=rec.request.prompt_tokens,
        success=ok,
        output_tokens=len(times) if ok else 0,
        ttft=rec.first_token_s - rec.arrival_s if ok else 0.0,
        latency=rec.finish_s - rec.arrival_s if ok else 0.0,
        itl=[b - a for a, b in zip(times, times[1:])] if ok else [],
        start_time=rec.arrival_s,
        error=rec.error,
    )


def request_metrics_ms(rec: RequestRecord) -> dict[str, float]:
    """One request's TTFT, TPOT, worst ITL and end-to-end latency (ms), as SLOs judge it."""
    times = rec.token_times
    ttft = (rec.first_token_s - rec.arrival_s) * 1000
    e2el = (rec.finish_s - rec.arrival_s) * 1000
    tpot = (e2el - ttft) / (len(times) - 1) if len(times) > 1 else 0.0
    itl = max((b - a for a, b in zip(times, times[1:])), default=0.0) * 1000
    return {"ttft": ttft, "tpot": tpot, "itl": itl, "e2el": e2el}


def slo_attainment(records: list[RequestRecord], slo: dict[str, tuple[float, float]]) -> float:
    """Share of all requests (failed ones count as misses) meeting every SLO bound."""
    if not records:
        return 0.0
    good = 0
    for rec in records:
        if rec.done and not rec.error:
            m = request_metrics_ms(rec)
            good += all(m[k] <= bound for k, (_, bound) in slo.items())
    return good / len(records)


def summarize_sim(
    result: SimResult,
    slo: dict[str, tuple[float, float]] | None = None,
    percentiles: tuple[float, ...] = (50, 90, 99),
    details: bool = True,
) -> dict[str, Any]:
    slo = slo or {}
    outcomes = [_outcome(r) for r in result.records]
    duration = result.duration_s or 1e-9
    summary = summarize(
        outcomes,
        duration,
        percentiles,
        goodput_ms={k: b for k, (_, b) in slo.items() if k in ("ttft", "tpot", "e2el")} or None,
    )
    if not details:
        for key in (
            "input_lens",
            "output_lens",
            "ttfts",
            "itls",
            "latencies",
            "start_times",
            "generated_texts",
            "errors",
        ):
            summary.pop(key, None)
    done = [r for r in result.records if r.done and not r.error]
    prompt = sum(r.request.prompt_tokens for r in done)
    summary["prefix_cache_hit_rate"] = sum(r.cached_prompt_tokens for r in done) / prompt if prompt else 0.0
    summary["slo"] = {f"{k}_p{p:g}": b for k, (p, b) in slo.items()}
    summary["slo_attainment"] = slo_attainment(result.records, slo) if slo else None
    summary["slo_met"] = all(_percentile_ms(done, k, p) <= b for k, (p, b) in slo.items()) if slo else None
    summary["preemptions"] = sum(r.preemptions for r in result.records)
    summary.update(cluster_figures(result))
    return summary


def _percentile_ms(done: list[RequestRecord], metric: str, pct: float) -> float:
    values = [request_metrics_ms(r)[metric] for r in done]
    return float(np.percentile(values, pct)) if values else float("inf")


def cluster_figures(result: SimResult) -> dict[str, Any]:
    """Per accelerator kind: instances, devices, busy fraction, steps; and the fleet's cost."""
    duration = result.duration_s
    by_kind: dict[str, dict[str, float]] = {}
    cost = 0.0
    for inst in result.instances:
        k = by_kind.setdefault(inst.spec.label, {"instances": 0, "devices": 0, "busy_s": 0.0, "steps": 0})
        k["instances"] += 1
        k["devices"] += inst.spec.devices
        k["busy_s"] += inst.busy_s
        k["steps"] += inst.steps
        cost += inst.spec.devices * inst.spec.accelerator.cost_per_hour_usd * duration / 3600.0
    utilization = {
        kind: (v["busy_s"] / (v["instances"] * duration) if duration else 0.0) for kind, v in by_kind.items()
    }
    return {
        "utilization": utilization,
        "instances": {kind: int(v["instances"]) for kind, v in by_kind.items()},
        "devices": {kind: int(v["devices"]) for kind, v in by_kind.items()},
        "engine_steps": int(sum(v["steps"] for v in by_kind.values())),
        "cost_usd": cost,
    }
