"""``tessera sim``: replay a workload through the placement policy and engine models in virtual time."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from tessera.cli.calibration_file import step_time_scale_text
from tessera.cli.plotting import plots_unavailable

DEFAULT_TRACES = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "traces"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from tessera.sim import workloads as wl

    w = p.add_argument_group("workload")
    w.add_argument(
        "--workload",
        default=str(DEFAULT_TRACES / "azure2023_code.csv"),
        help="a trace file (*.csv: Azure LLM trace, *.jsonl: Mooncake) or shared-prefix | multi-turn | diurnal",
    )
    w.add_argument("--rate-scale", type=float, default=1.0, help="x requests over the same timeline (thins or replays)")
    w.add_argument("--time-scale", type=float, default=1.0, help="stretch the timeline (0.5: twice as fast)")
    w.add_argument("--max-requests", type=int, default=None, help="only the first N requests of the workload")
    w.add_argument("--duration", type=float, default=None, help="only requests arriving in the first N seconds")
    w.add_argument(
        "--rate", type=float, default=10.0, help="synthetic: arrivals per second (sessions/s for multi-turn)"
    )
    w.add_argument(
        "--mean-rate",
        type=float,
        default=4.0,
        help="diurnal: the day's mean arrivals per second (azure2024-code: the peak hour 2.24x it, the trough 0.23x)",
    )
    w.add_argument(
        "--envelope",
        choices=wl.ENVELOPES,
        default="azure2024-code",
        help="diurnal: the day's shape: the Azure 2024 code service's measured weekday (UTC), a sinusoid, or flat",
    )
    w.add_argument(
        "--peak-to-trough", type=float, default=wl.DIURNAL_PEAK_TO_TROUGH, help="diurnal, sinusoid: peak over trough"
    )
    w.add_argument(
        "--day-duration", type=float, default=86400.0, help="diurnal: seconds of the day to generate, from midnight"
    )
    w.add_argument(
        "--day-length",
        type=float,
        default=wl.DAY_S,
        help="diurnal: the envelope's day in seconds (21600: the day's shape four times as fast)",
    )
    w.add_argument(
        "--mix",
        default=str(DEFAULT_TRACES / "azure2023_code.csv"),
        help="diurnal: the Azure trace whose prompt and answer lengths the requests are drawn from",
    )
    w.add_argument("--groups", type=int, default=32, help="shared-prefix: groups")
    w.add_argument("--prompts-per-group", type=int, default=32, help="shared-prefix: prompts per group")
    w.add_argument("--prefix-len", type=int, default=2048, help="shared-prefix: system prompt tokens")
    w.add_argument("--question-len", type=int, default=256, help="shared-prefix: tokens after the prefix")
    w.add_argument("--output-len", type=int, default=256, help="synthetic: tokens to generate per request")
    w.add_argument("--sessions", type=int, default=64, help="multi-turn: sessions")
    w.add_argument("--turns", type=int, default=5, help="multi-turn: turns per session")
    w.add_argument("--system-len", type=int, default=512, help="multi-turn: system prompt tokens")
    w.add_argument("--user-len", type=int, default=128, help="multi-turn: tokens of each user turn")
    w.add_argument(
        "--think-time", type=float, default=5.0, help="multi-turn: seconds between an answer and the next turn"
    )
    c = p.add_argument_group("cluster")
    c.add_argument("--cluster", default="h100:8", help="KIND[xTP]:DEVICES[:ROLE],... e.g. h100:32,a100:32")
    c.add_argument("--model", default="llama3-8b", help="architecture name or a model folder with config.json")
    c.add_argument("--dtype-bytes", type=int, default=None, help="weights/KV bytes per element (default: the model's)")
    c.add_argument("--max-model-len", type=int, default=None, help="context length (default: the model's)")
    c.add_argument(
        "--step-time-scale",
        default="",
        metavar="prefill=X,decode=Y|FILE",
        help="run steps X (prefill) and Y (decode) times the performance model's time: the correction live "
        "workers learnt of their machine (tessera status shows it), or the file tessera calibrate wrote",
    )
    c.add_argument(
        "--policy",
        default="tessera",
        help="placement profile name or YAML file; several, comma-separated, run side by side",
    )
    o = p.add_argument_group("output")
    o.add_argument("--slo", default="ttft_p90=2000,tpot_p90=100", help="e.g. ttft_p90=500,tpot_p90=50 (ms)")
    o.add_argument("--out", default=None, help="JSON result file (the plot goes next to it as .png)")
    o.add_argument("--no-plot", action="store_true", help="no PNG (plots need matplotlib: the plot extra)")
    o.add_argument("--no-details", action="store_true", help="leave per-request lists out of the JSON")
    o.add_argument("--seed", type=int, default=0, help="random seed of the workload and the simulation")
    o.add_argument("--quiet", action="store_true", help="print only the summary")
    from tessera.cli import sim_autoscaling

    sim_autoscaling.add_arguments(p)


def load_workload(args: argparse.Namespace):
    from tessera.sim import workloads as wl

    name = args.workload
    if name == "shared-prefix":
        reqs = wl.shared_prefix(
            args.groups,
            args.prompts_per_group,
            args.prefix_len,
            args.question_len,
            args.output_len,
            args.rate,
            args.seed,
        )
    elif name == "multi-turn":
        reqs = wl.multi_turn(
            args.sessions,
            args.turns,
            args.system_len,
            args.user_len,
            args.output_len,
            args.think_time,
            args.rate,
            args.seed,
        )
    elif name == "diurnal":
        reqs = wl.diurnal(
            wl.azure_csv(args.mix),
            args.mean_rate,
            args.day_duration,
            envelope=args.envelope,
            peak_to_trough=args.peak_to_trough,
            seed=args.seed,
            day_s=args.day_length,
        )
    elif name.endswith(".csv"):
        reqs = wl.azure_csv(name)
    elif name.endswith(".jsonl"):
        reqs = wl.mooncake_jsonl(name)
    else:
        raise wl.WorkloadError(
            f"unknown workload {name!r}: a .csv (Azure) or .jsonl (Mooncake) file, shared-prefix, multi-turn or diurnal"
        )
    reqs = wl.rescale(reqs, args.rate_scale, args.time_scale, args.seed)
    return wl.limit(reqs, args.max_requests, args.duration)


def run_main(args: argparse.Namespace) -> int:
    from tessera.engine_model.build import build_instances, resolve_arch
    from tessera.engine_model.instance import ClusterSpecError, parse_cluster
    from tessera.engine_model.perf.step_scale import StepScale, scaled
    from tessera.placement.pipeline import ProfileError, load_profile
    from tessera.sim.report import SloError, parse_slo
    from tessera.sim.workloads import WorkloadError

    if args.autoscaler:
        from tessera.cli import sim_autoscaling

        return sim_autoscaling.run_main(args, load_workload)
    policies = [p.strip() for p in args.policy.split(",") if p.strip()]
    try:
        arch = resolve_arch(args.model, args.dtype_bytes)
        specs = parse_cluster(args.cluster, arch)
        step_scale = StepScale.parse(step_time_scale_text(args.step_time_scale))
        slo = parse_slo(args.slo)
        for policy in policies:
            load_profile(policy)  # every name is checked before anything runs
        workload = load_workload(args)
    except (ValueError, ClusterSpecError, SloError, ProfileError, WorkloadError) as exc:
        print(f"tessera sim: {exc}", file=sys.stderr)
        return 2
    if not policies:
        print("tessera sim: --policy names no profile", file=sys.stderr)
        return 2
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    summaries = {}
    for policy in policies:
        # fresh instances per policy: each starts from empty caches and idle engines
        instances = [(s, c, scaled(t, step_scale)) for s, c, t in build_instances(arch, specs, args.max_model_len)]
        summaries[policy] = _simulate(
            args,
            arch,
            specs,
            instances,
            load_profile(policy, seed=args.seed),
            workload,
            slo,
            say,
            out=_out_path(args.out, policy, len(policies)),
        )
    if len(policies) > 1:
        _compare(summaries, say)
        if args.out:
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps({p: _headline(s) for p, s in summaries.items()}, indent=1))
            say(f"wrote {out} (side by side; one JSON per policy beside it)")
    return 0


def _out_path(out: str | None, policy: str, count: int) -> Path | None:
    """One policy: --out itself; several: --out with the policy's name before the suffix."""
    if not out:
        return None
    path = Path(out)
    return path if count == 1 else path.with_name(f"{path.stem}-{policy}{path.suffix or '.json'}")


HEADLINE = (
    "p50_ttft_ms",
    "p90_ttft_ms",
    "p99_ttft_ms",
    "p50_tpot_ms",
    "p90_tpot_ms",
    "request_throughput",
    "request_goodput",
    "prefix_cache_hit_rate",
    "slo_attainment",
    "cost_usd",
    "completed",
    "failed",
)


def _headline(summary: dict) -> dict:
    return {k: summary.get(k) for k in HEADLINE}


def _compare(summaries: dict[str, dict], say) -> None:
    say(
        f"\n{'policy':<14}{'TTFT p50':>10}{'p90':>9}{'TPOT p50':>10}{'p90':>8}{'req/s':>8}{'goodput':>9}"
        f"{'hit':>8}{'SLO':>8}"
    )
    for policy, s in summaries.items():
        good = s.get("request_goodput")
        slo = s.get("slo_attainment")
        say(
            f"{policy:<14}{s['p50_ttft_ms']:>10.0f}{s['p90_ttft_ms']:>9.0f}{s['p50_tpot_ms']:>10.1f}"
            f"{s['p90_tpot_ms']:>8.1f}{s['request_throughput']:>8.2f}{(good or 0):>9.2f}"
            f"{s['prefix_cache_hit_rate']:>8.1%}{(slo or 0):>8.1%}"
        )


def _simulate(args, arch, specs, instances, pipeline, workload, slo, say, out: Path | None) -> dict:
    from tessera.sim.report import summarize_sim
    from tessera.sim.simulator import Simulator

    horizon = max((r.arrival_s for r in workload), default=0.0)
    say(
        f"simulating {len(workload)} requests over {horizon:.0f} s on {len(specs)} instances "
        f"({args.cluster}) of {arch.name}, policy {pipeline.name}"
    )
    last = [0.0]

    def progress(t: float, arrived: int) -> None:
        now = time.monotonic()
        if now - last[0] >= 2.0:
            last[0] = now
            say(f"  t={t:8.0f} s of ~{horizon:.0f}  {arrived}/{len(workload)} arrived")

    wall0 = time.monotonic()
    sim = Simulator(
        arch, arch.name, instances, pipeline, sample_interval_s=max(0.1, horizon / 2000), on_progress=progress
    )
    result = sim.run(workload)
    wall = time.monotonic() - wall0
    summary = summarize_sim(result, slo, details=not args.no_details)
    summary.update(
        backend="tessera-sim",
        model_id=arch.name,
        policy=pipeline.name,
        cluster=args.cluster,
        workload=args.workload,
        rate_scale=args.rate_scale,
        time_scale=args.time_scale,
        num_prompts=len(result.records),
        wall_time_s=wall,
        simulator_events=result.events,
    )
    slo_txt = "" if summary["slo_attainment"] is None else f", SLO attainment {summary['slo_attainment']:.1%}"
    say(
        f"done in {wall:.1f} s wall ({result.events} events): {summary['completed']} completed, "
        f"{summary['failed']} failed over {summary['duration']:.0f} s virtual"
    )
    say(
        f"  TTFT p50/p90/p99 {summary['p50_ttft_ms']:.0f}/{summary['p90_ttft_ms']:.0f}/"
        f"{summary['p99_ttft_ms']:.0f} ms, "
        f"TPOT p50/p90 {summary['p50_tpot_ms']:.1f}/{summary['p90_tpot_ms']:.1f} ms, "
        f"{summary['request_throughput']:.2f} req/s, prefix hit {summary['prefix_cache_hit_rate']:.1%}{slo_txt}, "
        f"cost ${summary['cost_usd']:.2f}"
    )
    say("  utilization: " + ", ".join(f"{k} {v:.1%}" for k, v in summary["utilization"].items()))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1))
        say(f"  wrote {out}")
        missing = None if args.no_plot else plots_unavailable()
        if missing:
            say(f"  {missing}")
        elif not args.no_plot:
            from tessera.sim.plots import plot_simulation

            png = plot_simulation(
                result,
                out.with_suffix(".png"),
                f"{args.workload} on {args.cluster}, {arch.name}, policy {pipeline.name}",
                slo,
            )
            say(f"  wrote {png}")
    return summary
