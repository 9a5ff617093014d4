"""Goodput of prefill/decode disaggregation in the simulator, DistServe-style.

Goodput is the highest request rate (Poisson arrivals) at which at least 90% of
requests meet BOTH a time-to-first-token and a time-per-output-token target
(DistServe, OSDI'24). Serving Llama-3.1-8B (`llama3-8b`), it compares:

(a) disaggregated (P prefill + D decode instances) against colocated (P + D mixed
    instances) on the same 8 H100s, both placed by the `tessera_disagg` profile (on
    mixed instances it places as its decode side, the `tessera` profile's scoring), for
    the Azure 2023 code trace's lengths and for a long-prompt workload
    (4-8k-token prompts, 32-256-token answers), each under a tight and a loose TPOT;
(b) heterogeneous pairs (prefill on MI300X, Rubin CPX or H100, decode on A100)
    against homogeneous fleets of about the same price per hour (catalog prices),
    with goodput per dollar;
(c) the prefill:decode split of 8 H100s, 1:7 to 7:1, as goodput against the ratio
    (what the autoscaler sizes prefill and decode pools by).

The same requests are replayed at every rate (one pool, one seed; only the gaps
scale and the window's length in requests), so a rate search compares like with
like. The search starts at 60% of what the roofline says the cluster sustains,
steps by 1.5x to a bracket, then bisects it three times on a log scale (5%).

    taskset -c 0 .venv/bin/python benchmarks/disagg_goodput.py [--quick]

Writes benchmarks/results/disagg_goodput.json and .png.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import yaml

from tessera.engine_model.build import build_instances, resolve_arch
from tessera.engine_model.instance import parse_cluster
from tessera.placement.pipeline import PROFILES_DIR, build_pipeline
from tessera.sim import workloads as wl
from tessera.sim.report import request_metrics_ms
from tessera.sim.simulator import Simulator

ROOT = Path(__file__).resolve().parents[1]

MODEL = "llama3-8b"
TRACE = ROOT.parent / "shared" / "data" / "traces" / "azure2023_code.csv"
OUT = ROOT / "benchmarks" / "results" / "disagg_goodput.json"
ATTAINMENT = 0.90
# One profile for every case, read once (a long run must not pick up an edit halfway through): on
# mixed instances it places as its decode side alone, the tessera profile's filters and scorers, so
# colocated and disaggregated differ only in the instances' roles.
PROFILE = yaml.safe_load((PROFILES_DIR / "tessera_disagg.yaml").read_text())


@dataclass(frozen=True)
class Slo:
    """Per-request targets, both to be met (ms)."""

    name: str
    ttft_ms: float
    tpot_ms: float

    def met(self, m: dict[str, float]) -> bool:
        return m["ttft"] <= self.ttft_ms and m["tpot"] <= self.tpot_ms


# Targets per workload (Llama-3.1-8B, where a decode step takes 8-15 ms on an H100 and a full
# 8192-token prefill chunk about 0.2 s). Tight: a 50 ms TPOT, which a step carrying a prefill chunk of
# more than ~2k tokens breaks. Loose: DistServe's own TPOT targets, 0.2 s for code completion and 0.15 s
# for summarization, which only whole-chunk steps back to back break. TTFT: 1 s for code completion
# (interactive), 3 s for a long document.
SLOS = {
    "azure_code": (Slo("tight", 1000, 50), Slo("loose", 1000, 200)),
    "long_prompt": (Slo("tight", 3000, 50), Slo("loose", 3000, 150)),
}


@dataclass(frozen=True)
class Workload:
    """A pool of requests in a fixed order; a run at rate r takes its first max(min_requests, r x window_s)
    with Poisson arrivals. A window of fixed length, not a fixed count, so an overload has time to show
    (a queue growing x% faster than it drains needs about TTFT target / x seconds to break the TTFT)."""

    name: str
    pool: tuple[wl.SimRequest, ...]
    window_s: float
    min_requests: int

    def at(self, rate: float) -> list[wl.SimRequest]:
        n = min(len(self.pool), max(self.min_requests, math.ceil(rate * self.window_s)))
        return wl.poisson_arrivals(list(self.pool[:n]), rate, seed=1)

    @property
    def mean_prompt(self) -> float:
        return sum(r.prompt_tokens for r in self.pool) / len(self.pool)

    @property
    def mean_output(self) -> float:
        return sum(r.output_tokens for r in self.pool) / len(self.pool)


def workload(name: str, window_s: float, min_requests: int, pool: int = 40_000, seed: int = 0) -> Workload:
    """azure_code: lengths drawn from the Azure 2023 code trace (median prompt 1.5k, answer 13 tokens);
    long_prompt: 4-8k-token prompts with 32-256-token answers (summaries, RAG), every prompt unique."""
    rng = random.Random(seed)
    if name == "azure_code":
        trace = wl.azure_csv(TRACE)
        reqs = [trace[rng.randrange(len(trace))] for _ in range(pool)]
        reqs = [dataclasses.replace(r, request_id=f"az-{i}") for i, r in enumerate(reqs)]
    elif name == "long_prompt":
        reqs = [wl.SimRequest(f"long-{i}", 0.0, rng.randint(4096, 8192), rng.randint(32, 256)) for i in range(pool)]
    else:
        raise ValueError(name)
    return Workload(name, tuple(reqs), window_s, min_requests)


@dataclass(frozen=True)
class Case:
    label: str
    cluster: str  # with prefill and decode roles: disaggregated; mixed instances: colocated

    @property
    def cost_per_hour(self) -> float:
        specs = parse_cluster(self.cluster, resolve_arch(MODEL))
        return sum(s.devices * s.accelerator.cost_per_hour_usd for s in specs)


@functools.cache
def instances(cluster: str) -> tuple:
    """Engine limits and step timers per instance, built once per cluster (timers memoise step times)."""
    arch = resolve_arch(MODEL)
    return tuple(build_instances(arch, parse_cluster(cluster, arch)))


_RUNS: dict[tuple, dict] = {}  # (cluster, workload, rate) -> per-request metrics: both SLOs read one run


def simulate(case: Case, w: Workload, rate: float) -> dict:
    """One simulation at `rate` req/s: each request's TTFT and TPOT (None: failed), and how many paired."""
    key = (case.cluster, w.name, round(rate, 6))
    if key not in _RUNS:
        arch = resolve_arch(MODEL)
        sim = Simulator(
            arch, arch.name, list(instances(case.cluster)), build_pipeline(PROFILE, seed=0), sample_interval_s=0
        )
        records = sim.run(w.at(rate)).records
        done = [r for r in records if r.done and not r.error]
        _RUNS[key] = {
            "metrics": [request_metrics_ms(r) for r in done] + [None] * (len(records) - len(done)),
            "disaggregated": sum(bool(r.prefill_instance) for r in done) / max(1, len(done)),
        }
    return _RUNS[key]


def attainment(run: dict, slo: Slo) -> dict:
    n = len(run["metrics"])
    ok = [m for m in run["metrics"] if m is not None]
    return {
        "requests": n,
        "attainment": sum(slo.met(m) for m in ok) / n,
        "ttft_ok": sum(m["ttft"] <= slo.ttft_ms for m in ok) / n,
        "tpot_ok": sum(m["tpot"] <= slo.tpot_ms for m in ok) / n,
        "disaggregated": run["disaggregated"],
    }


def goodput(case: Case, w: Workload, slo: Slo, guess: float, steps: int, say, known_ok: float = 0.0) -> dict:
    """Highest rate with attainment >= 90%: from `guess` (or from `known_ok`, a rate known to pass),
    up or down by 1.5x to a bracket, then `steps` bisections on a log scale (1.5^(1/2^steps) apart)."""
    probes: list[dict] = []

    def ok(rate: float) -> bool:
        p = {"rate": round(rate, 4), **attainment(simulate(case, w, rate), slo)}
        probes.append(p)
        say(
            f"    {case.label:<18} {w.name:<11} {slo.name:<5} {rate:8.2f} req/s ({p['requests']:5d})  "
            f"attainment {p['attainment']:6.1%} (TTFT {p['ttft_ok']:4.0%}, TPOT {p['tpot_ok']:4.0%}, "
            f"paired {p['disaggregated']:4.0%})"
        )
        return p["attainment"] >= ATTAINMENT

    lo, hi, rate = 0.0, 0.0, known_ok or guess
    if known_ok or ok(rate):
        lo = rate
        while not hi and rate < guess * 40:
            rate *= 1.5
            lo, hi = (rate, 0.0) if ok(rate) else (lo, rate)
    else:
        hi = rate
        while not lo and rate > guess / 40:
            rate /= 1.5
            lo, hi = (rate, hi) if ok(rate) else (0.0, rate)
    for _ in range(steps if lo and hi else 0):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if ok(mid) else (lo, mid)
    return {"goodput": lo, "probes": probes}


@functools.cache
def per_instance_rates(kind: str, prompt: float, output: float, tpot_ms: float) -> tuple[float, float, float]:
    """(prefill req/s, decode req/s, $/h) of one instance of `kind` for requests of these mean lengths,
    by the roofline: prefill at its long-prompt rate; decode at the largest batch whose step stays under
    80% of the TPOT target at the mean context, as far as its KV cache and batch slots hold."""
    spec, cfg, timer = instances(f"{kind}:1")[0]
    ctx = int(prompt + output / 2)
    most = min(cfg.max_num_seqs, cfg.num_blocks * cfg.block_size // int(prompt + output))
    batch = max([b for b in range(1, most + 1) if timer(decode=[ctx] * b) <= 0.8 * tpot_ms / 1000] or [1])
    decode = batch / timer(decode=[ctx] * batch) / output
    return timer.prefill_tokens_per_s() / prompt, decode, spec.devices * spec.accelerator.cost_per_hour_usd


def rates(kind: str, w: Workload, slo: Slo) -> tuple[float, float, float]:
    return per_instance_rates(kind, w.mean_prompt, w.mean_output, slo.tpot_ms)


def roofline_rate(cluster: str, w: Workload, slo: Slo) -> float:
    """What the roofline says a cluster sustains: prefill and decode pools in series for a
    disaggregated one (the weaker pool), each mixed instance doing both in turn otherwise."""
    prefill = decode = mixed = 0.0
    for spec, _, _ in instances(cluster):
        p, d, _ = rates(spec.accelerator.name, w, slo)
        if spec.role == "prefill":
            prefill += p
        elif spec.role == "decode":
            decode += d
        else:
            mixed += 1.0 / (1.0 / p + 1.0 / d)
    return mixed + (min(prefill, decode) if prefill and decode else 0.0)


def balanced_split(prefill_kind: str, decode_kind: str, budget: float, w: Workload, slo: Slo) -> str:
    """The prefill:decode counts within `budget` $/h whose pools are best balanced by the roofline
    (per_instance_rates): the most requests per second the weaker pool allows, the cheaper on a tie."""
    p_rate, _, p_cost = rates(prefill_kind, w, slo)
    _, d_rate, d_cost = rates(decode_kind, w, slo)
    options = [
        (min(p * p_rate, d * d_rate), -(p * p_cost + d * d_cost), p, d)
        for p in range(1, 33)
        for d in range(1, 33)
        if p * p_cost + d * d_cost <= budget + 1e-9
    ]
    _, _, p, d = max(options)
    return f"{prefill_kind}:{p}:prefill,{decode_kind}:{d}:decode"


def colocated(kind: str, budget: float) -> str:
    """As many mixed instances of `kind` as `budget` $/h buys."""
    spec = instances(f"{kind}:1")[0][0]
    return f"{kind}:{int(budget // (spec.devices * spec.accelerator.cost_per_hour_usd)) * spec.tp}"


@dataclass
class Bench:
    """What every part shares: the workloads, the search's bisection steps, the log."""

    workloads: dict[str, Workload]
    steps: int
    say: Callable[..., None]

    def goodputs(self, case: Case, w: Workload) -> dict[str, dict]:
        """Goodput under each of the workload's SLOs, tightest first: a rate meeting a tight TPOT meets
        the loose one (same TTFT), so the loose search starts where the tight one ended."""
        out: dict[str, dict] = {}
        known = 0.0
        for slo in SLOS[w.name]:
            guess = 0.6 * roofline_rate(case.cluster, w, slo)
            out[slo.name] = goodput(case, w, slo, max(guess, known), self.steps, self.say, known_ok=known)
            known = out[slo.name]["goodput"]
        return out


def ratio_sweep(b: Bench, kind: str = "h100", total: int = 8) -> dict:
    """(c): goodput of `total` instances of `kind` split P:D, and colocated, per workload and SLO."""
    out: dict = {}
    for w in b.workloads.values():
        b.say(f"\n(c) P:D split of {total} x {kind}, {w.name}")
        rows = [
            {
                "prefill": 0,
                "decode": total,
                "cluster": f"{kind}:{total}",
                "goodput": b.goodputs(Case(f"{kind}:{total} colocated", f"{kind}:{total}"), w),
            }
        ]
        for p in range(1, total):
            cluster = f"{kind}:{p}:prefill,{kind}:{total - p}:decode"
            rows.append(
                {
                    "prefill": p,
                    "decode": total - p,
                    "cluster": cluster,
                    "goodput": b.goodputs(Case(f"{p}P:{total - p}D", cluster), w),
                }
            )
        out[w.name] = rows
    return out


def same_accelerators(sweep: dict) -> dict:
    """(a): on the same 8 H100s, colocated against the best disaggregated split, per workload and SLO."""
    out: dict = {}
    for name, rows in sweep.items():
        for slo in SLOS[name]:
            best = max(rows[1:], key=lambda r: r["goodput"][slo.name]["goodput"])
            out[f"{name}/{slo.name}"] = {
                "slo": {"ttft_ms": slo.ttft_ms, "tpot_ms": slo.tpot_ms},
                "colocated": rows[0]["goodput"][slo.name]["goodput"],
                "disaggregated": best["goodput"][slo.name]["goodput"],
                "best_split": f"{best['prefill']}:{best['decode']}",
            }
    return out


HETEROGENEOUS = (
    ("mi300x", "a100"),
    ("h100", "a100"),
    ("rubin-cpx", "a100"),
    ("rubin-cpx", "h100"),
    ("rubin-cpx", "mi300x"),
)


def equal_cost(b: Bench, sweep: dict, budget: float) -> dict:
    """(b): heterogeneous pairs against homogeneous fleets, all within `budget` $/h; goodput per $/h.
    Pairs are sized by balanced_split for the tight TPOT (where disaggregation earns its keep)."""
    out: dict = {}
    for w in b.workloads.values():
        tight = SLOS[w.name][0]
        b.say(f"\n(b) equal cost (${budget:.2f}/h), {w.name}; pairs sized for the {tight.name} TPOT")
        rows = sweep[w.name]
        best = max(rows[1:], key=lambda r: r["goodput"][tight.name]["goodput"])
        cases = [
            (Case("h100 colocated", rows[0]["cluster"]), rows[0]["goodput"]),
            (Case("h100 best split", best["cluster"]), best["goodput"]),
        ]
        cases += [(Case(f"{kind} colocated", colocated(kind, budget)), None) for kind in ("mi300x", "a100")]
        cases.append((Case("mi300x split", balanced_split("mi300x", "mi300x", budget, w, tight)), None))
        cases += [
            (Case(f"{pre} -> {dec}", balanced_split(pre, dec, budget, w, tight)), None) for pre, dec in HETEROGENEOUS
        ]
        out[w.name] = []
        for case, known in cases:
            got = known or b.goodputs(case, w)
            cost = case.cost_per_hour
            out[w.name].append(
                {
                    "label": case.label,
                    "cluster": case.cluster,
                    "cost_per_hour": cost,
                    "homogeneous": "->" not in case.label,
                    **{f"goodput_{k}": v["goodput"] for k, v in got.items()},
                    **{f"requests_per_usd_{k}": v["goodput"] * 3600 / cost for k, v in got.items()},
                }
            )
    return out


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(14, 9.5))
    style = {
        "tight": dict(color="tab:red", marker="o", ls="-", lw=2.5, ms=8),
        "loose": dict(color="tab:blue", marker="s", ls="--", lw=1.2, ms=5),
    }
    for ax, (workload, rows) in zip(axes[0], result["ratio_sweep"].items()):
        split = rows[1:]
        for slo in SLOS[workload]:
            st = style[slo.name]
            ax.plot(
                [r["prefill"] for r in split],
                [r["goodput"][slo.name]["goodput"] for r in split],
                **st,
                label=f"disaggregated, TTFT<={slo.ttft_ms / 1000:g}s TPOT<={slo.tpot_ms:g}ms",
            )
            ax.axhline(
                rows[0]["goodput"][slo.name]["goodput"],
                color=st["color"],
                ls=":",
                lw=1.5,
                label="colocated (8 mixed), same targets",
            )
        ax.set_xticks([r["prefill"] for r in split], [f"{r['prefill']}:{r['decode']}" for r in split])
        ax.set_xlabel("prefill : decode instances (8 x H100)")
        ax.set_ylabel("goodput (req/s, >=90% meet TTFT and TPOT)")
        ax.set_title(f"(c) goodput vs P:D split, {workload} (search resolution ~5%)")
        ax.set_ylim(bottom=0)
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)

    ax = axes[1][0]
    same = result["same_accelerators"]
    keys = list(same)
    ratios = [same[k]["disaggregated"] / same[k]["colocated"] if same[k]["colocated"] else 0.0 for k in keys]
    bars = ax.bar(
        range(len(keys)),
        ratios,
        0.6,
        color=["tab:green" if r > 1.05 else "tab:grey" if r >= 0.95 else "tab:orange" for r in ratios],
    )
    for bar, k in zip(bars, keys):
        ax.annotate(
            f"{same[k]['disaggregated']:.0f} vs {same[k]['colocated']:.0f} req/s\n"
            f"TTFT<={same[k]['slo']['ttft_ms'] / 1000:g}s TPOT<={same[k]['slo']['tpot_ms']:g}ms",
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=8,
        )
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(keys)), [f"{k}\nbest P:D {same[k]['best_split']}" for k in keys], fontsize=8)
    ax.set_ylabel("goodput, disaggregated / colocated")
    ax.set_ylim(0, max(ratios + [1.0]) * 1.25)
    ax.set_title("(a) same 8 x H100: disaggregated (best P:D) vs colocated")
    ax.grid(alpha=0.3, axis="y")

    ax = axes[1][1]
    workloads = list(result["equal_cost"])
    labels = [r["label"] for r in result["equal_cost"][workloads[0]]]
    width = 0.8 / len(workloads)
    for i, workload in enumerate(workloads):
        rows = result["equal_cost"][workload]
        tight = SLOS[workload][0].name
        best_homo = max(r[f"requests_per_usd_{tight}"] for r in rows if r["homogeneous"]) or 1.0
        ax.bar(
            [j + (i - (len(workloads) - 1) / 2) * width for j in range(len(rows))],
            [r[f"requests_per_usd_{tight}"] / best_homo for r in rows],
            width,
            label=f"{workload}, {tight} TPOT",
        )
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("goodput per $/h, relative to the best homogeneous")
    ax.set_title(f"(b) equal cost (~${result['budget_per_hour']:.2f}/h)")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")
    fig.suptitle(
        f"Prefill/decode disaggregation in the simulator, {MODEL}; goodput = highest Poisson rate "
        f"with >= {ATTAINMENT:.0%} of requests meeting both targets"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer requests and search steps (a smoke run)")
    ap.add_argument("--out", type=Path, default=OUT)
    ap.add_argument("--replot", action="store_true", help="redraw the plot and tables from --out's JSON")
    args = ap.parse_args()
    if args.replot:
        result = json.loads(args.out.read_text())
        plot(result, args.out.with_suffix(".png"))
        report(result, print)
        return 0
    t0 = time.monotonic()

    def say(*a):
        print(*a, f"[{time.monotonic() - t0:5.0f} s]" if a and a[0].startswith("\n") else "", flush=True)

    # windows of arrivals: about 10x the TTFT target, so an overload of 10-20% breaks it
    quick = args.quick
    b = Bench(
        {
            "azure_code": workload("azure_code", 8 if quick else 16, 100 if quick else 300),
            "long_prompt": workload("long_prompt", 15 if quick else 30, 60 if quick else 200),
        },
        1 if quick else 3,
        say,
    )
    budget = Case("", "h100:8").cost_per_hour
    sweep = ratio_sweep(b)
    result = {
        "model": MODEL,
        "attainment_target": ATTAINMENT,
        "profile": PROFILE,
        "slos": {
            w: [{"name": s.name, "ttft_ms": s.ttft_ms, "tpot_ms": s.tpot_ms} for s in slos] for w, slos in SLOS.items()
        },
        "workloads": {
            w.name: {
                "window_s": w.window_s,
                "min_requests": w.min_requests,
                "mean_prompt": w.mean_prompt,
                "mean_output": w.mean_output,
            }
            for w in b.workloads.values()
        },
        "budget_per_hour": budget,
        "ratio_sweep": sweep,
        "same_accelerators": same_accelerators(sweep),
        "equal_cost": equal_cost(b, sweep, budget),
        "quick": args.quick,
    }
    result["wall_s"] = time.monotonic() - t0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    plot(result, args.out.with_suffix(".png"))
    say(f"\nwrote {args.out} and {args.out.with_suffix('.png')} in {result['wall_s']:.0f} s")
    report(result, say)
    return 0


def report(result: dict, say) -> None:
    """The tables docs/disaggregation.md shows."""
    say("\n(a) same 8 x H100, goodput req/s: workload/SLO | colocated | disaggregated (best P:D)")
    for k, v in result["same_accelerators"].items():
        say(f"  {k:<20} {v['colocated']:8.2f} {v['disaggregated']:8.2f} ({v['best_split']})")
    for workload, rows in result["equal_cost"].items():
        say(f"\n(b) {workload}: config | cluster | $/h | goodput tight, loose | requests per $ tight, loose")
        for r in rows:
            say(
                f"  {r['label']:<16} {r['cluster']:<34} {r['cost_per_hour']:6.2f} {r['goodput_tight']:7.2f} "
                f"{r['goodput_loose']:7.2f} {r['requests_per_usd_tight']:8.0f} {r['requests_per_usd_loose']:8.0f}"
            )
    for workload, rows in result["ratio_sweep"].items():
        say(f"\n(c) {workload}: P:D | goodput tight, loose")
        for r in rows:
            say(
                f"  {r['prefill']}:{r['decode']} {r['goodput']['tight']['goodput']:8.2f} "
                f"{r['goodput']['loose']['goodput']:8.2f}"
            )


if __name__ == "__main__":
    sys.exit(main())
