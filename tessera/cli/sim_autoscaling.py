"""``tessera sim --autoscaler static|hpa|homogeneous|tessera --slo-policy FILE``: a fleet that follows the load.

The SLO policy gives the targets (they are the SLOs attainment is judged against), the
inventory and its prices, and the planner's knobs; the workload flags are `tessera sim`'s.
Several autoscalers, comma-separated, run side by side on the same workload.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tessera.cli.plotting import plots_unavailable

HEADLINE = (
    "autoscaler",
    "slo_attainment",
    "ttft_attainment",
    "tpot_attainment",
    "p99_ttft_ms",
    "p99_tpot_ms",
    "cost_usd",
    "cost_per_hour_mean",
    "completed",
    "failed",
    "queued_at_end",
    "instances_started",
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("autoscaling (docs/autoscaling.md#in-the-simulator)")
    a.add_argument(
        "--autoscaler",
        default=None,
        help="static | hpa | homogeneous | tessera; several, comma-separated, run side by side "
        "(needs --slo-policy; the fleet then comes from the policy's inventory, not --cluster)",
    )
    a.add_argument("--slo-policy", default=None, help="SLO policy YAML (targets, inventory and prices, planner knobs)")
    a.add_argument(
        "--startup-s",
        type=_startup_s,
        default=60.0,
        help="seconds from asking for an instance to its first request (billed from the ask), or 'model': "
        "each type's cold start from its weights, load bandwidth and engine warm-up (tessera.engine_model.startup)",
    )
    a.add_argument("--hpa-target", type=float, default=0.6, help="hpa: target busy fraction per instance")
    a.add_argument("--peak-window", type=float, default=60.0, help="static: the window the peak rate is taken over")
    a.add_argument("--peak-scale", type=float, default=1.0, help="static: provision for this multiple of the peak")
    a.add_argument(
        "--burst-window",
        type=float,
        default=None,
        help="homogeneous, tessera: plan for each interval's peak rate over windows this long "
        "(seconds; 0: its mean rate; default: the policy's forecast.peak_window_s)",
    )


def run_main(args: argparse.Namespace, load_workload: Callable[[argparse.Namespace], list]) -> int:
    from tessera.engine_model.build import resolve_arch
    from tessera.planning.capacity import CapacityModel
    from tessera.planning.engines import engines_for, launch_args_by_type
    from tessera.planning.slo_policy import SloPolicyError, parse_slo_policy
    from tessera.sim import hpa
    from tessera.sim.autoscalers import AUTOSCALERS, build_autoscaler, peak_load
    from tessera.sim.workloads import WorkloadError

    names = [n.strip() for n in args.autoscaler.split(",") if n.strip()]
    unknown = [n for n in names if n not in AUTOSCALERS]
    if not names or unknown:
        print(
            f"tessera sim: --autoscaler {','.join(unknown) or '(empty)'}: expected one or more of "
            f"{', '.join(AUTOSCALERS)}",
            file=sys.stderr,
        )
        return 2
    if not args.slo_policy:
        print("tessera sim: --autoscaler needs --slo-policy FILE (the targets, inventory and prices)", file=sys.stderr)
        return 2
    try:
        policy = parse_slo_policy(Path(args.slo_policy).read_text())
        arch = resolve_arch(policy.model)
        workload = load_workload(args)
    except (OSError, SloPolicyError, ValueError, WorkloadError) as exc:
        print(f"tessera sim: {exc}", file=sys.stderr)
        return 2
    say = (lambda *a: None) if args.quiet else (lambda *a: print(*a, file=sys.stderr, flush=True))
    capacity = CapacityModel(engines_for(policy))
    peak = peak_load(
        [r.arrival_s for r in workload],
        [r.prompt_tokens for r in workload],
        [r.output_tokens for r in workload],
        args.peak_window,
    )
    peak = peak.scaled(peak.rate_rps * args.peak_scale)
    params = hpa.HpaParams(target_utilisation=args.hpa_target)
    summaries: dict[str, dict[str, Any]] = {}
    for name in names:
        try:
            window = policy.forecast.peak_window_s if args.burst_window is None else args.burst_window
            autoscaler = build_autoscaler(name, policy, capacity, peak, params, window)
        except ValueError as exc:
            print(f"tessera sim: {exc}", file=sys.stderr)
            return 2
        summaries[name] = _simulate(
            args,
            name,
            autoscaler,
            policy,
            arch,
            workload,
            say,
            _out_path(args.out, name, len(names)),
            launch_args_by_type(capacity.engines),
        )
    if len(names) > 1:
        _compare(summaries, say)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        if len(names) > 1:
            out.write_text(json.dumps({n: side_by_side(s) for n, s in summaries.items()}, indent=1))
            say(f"wrote {out} (side by side; one JSON per autoscaler beside it)")
        missing = None if args.no_plot else plots_unavailable()
        if missing:
            say(missing)
        elif not args.no_plot:
            from tessera.sim.autoscaling_plots import plot_autoscaling

            png = plot_autoscaling(
                summaries,
                out.with_suffix(".png"),
                f"{args.workload} (rate x{args.rate_scale:g}, time x{args.time_scale:g}), "
                f"{policy.model}, start-up {_startup_label(args.startup_s)}",
            )
            say(f"wrote {png}")
    return 0


def side_by_side(summary: dict[str, Any]) -> dict[str, Any]:
    """The headline figures and the time series of one run."""
    return {
        **{k: summary.get(k) for k in HEADLINE},
        "timeseries": summary["timeseries"],
        "fleet_changes": summary["fleet_changes"],
    }


def _out_path(out: str | None, name: str, count: int) -> Path | None:
    if not out:
        return None
    path = Path(out)
    return path if count == 1 else path.with_name(f"{path.stem}-{name}{path.suffix or '.json'}")


def _simulate(
    args, name, autoscaler, policy, arch, workload, say, out: Path | None, engine_args: dict
) -> dict[str, Any]:
    from tessera.sim.autoscaling import run_autoscaled
    from tessera.sim.autoscaling_report import summarize_autoscaled

    horizon = max((r.arrival_s for r in workload), default=0.0)
    say(
        f"simulating {len(workload)} requests over {horizon:.0f} s of {arch.name}, autoscaler {name}, "
        f"start-up {_startup_label(args.startup_s)}"
    )
    wall0 = time.monotonic()
    run = run_autoscaled(
        workload, policy, autoscaler, arch, startup_s=args.startup_s, seed=args.seed, engine_args=engine_args
    )
    summary = summarize_autoscaled(run, details=not args.no_details)
    summary.update(
        backend="tessera-sim",
        model_id=arch.name,
        workload=args.workload,
        rate_scale=args.rate_scale,
        time_scale=args.time_scale,
        slo_policy=args.slo_policy,
        num_prompts=len(run.result.records),
        wall_time_s=time.monotonic() - wall0,
        simulator_events=run.result.events,
    )
    say(
        f"  {summary['slo_attainment']:.2%} within SLOs (TTFT {summary['ttft_attainment']:.2%}, "
        f"TPOT {summary['tpot_attainment']:.2%}), TTFT p99 {summary['p99_ttft_ms']:.0f} ms, "
        f"TPOT p99 {summary['p99_tpot_ms']:.1f} ms, ${summary['cost_usd']:.2f} "
        f"(${summary['cost_per_hour_mean']:.2f}/h), {summary['instances_started']} instances started, "
        f"{summary['wall_time_s']:.1f} s wall"
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(summary, indent=1))
        say(f"  wrote {out}")
    return summary


def _compare(summaries: dict[str, dict[str, Any]], say) -> None:
    base = summaries.get("static", {}).get("cost_usd")
    say(
        f"\n{'autoscaler':<13}{'in SLO':>8}{'TTFT':>8}{'TPOT':>8}{'TTFT p99':>10}{'TPOT p99':>10}{'cost $':>9}"
        f"{'vs static':>11}"
    )
    for name, s in summaries.items():
        vs = f"{s['cost_usd'] / base - 1:+.0%}" if base else "-"
        say(
            f"{name:<13}{s['slo_attainment']:>8.2%}{s['ttft_attainment']:>8.2%}{s['tpot_attainment']:>8.2%}"
            f"{s['p99_ttft_ms']:>10.0f}{s['p99_tpot_ms']:>10.1f}{s['cost_usd']:>9.2f}{vs:>11}"
        )


def _startup_s(text: str) -> float | None:
    """--startup-s: seconds, or 'model' (None: each instance type's modelled cold start)."""
    if text.strip().lower() == "model":
        return None
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds or 'model', got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError("start-up seconds must be >= 0")
    return value


def _startup_label(value: float | None) -> str:
    return "from the model" if value is None else f"{value:g} s"
