"""Does the `sim` engine configured as `cpu` behave like a real vLLM CPU worker, once it has learnt the machine?

The same workload (Poisson arrivals, random prompts, fixed seed) goes through
the real router: first to a real vLLM worker serving SmolLM2-135M in float32 on
one core, then to a sim worker (`tessera up --engine sim --accelerators cpu:1`)
timed by the calibrated performance model, as it is and corrected by what the
real worker learnt of this machine's step times while it served (the
measured/predicted prefill and decode multiples it reports to the scheduler,
read from `tessera status`). Medians of TTFT and TPOT of the corrected sim must
agree with vLLM's within 15%. The discrete-event simulator replays the same
request lengths and arrival times in virtual time, with and without the correction.

    .venv/bin/python benchmarks/sim_fidelity.py [--prompts 150] [--rate 0.6] [--calibrate 60]

--calibrate 60 first runs `tessera calibrate` for a minute on the same core, and adds the sim
engine and the simulator with its correction: a machine's speed known before it serves.

Writes benchmarks/results/sim_fidelity.json and .png (CDFs side by side).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from tessera.cli.calibration_file import read_calibration
from tessera.runtime.net import free_port

ROOT = Path(__file__).resolve().parent.parent

MODEL = "smollm2"
SERVED = "SmolLM2-135M-Instruct"


def start_up(extra: list[str], log_dir: Path) -> tuple[subprocess.Popen, int]:
    port, grpc_port = free_port(), free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    up_log = log_dir / "up.log"
    with open(up_log, "w") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tessera.cli",
                "up",
                "--model",
                MODEL,
                "--port",
                str(port),
                "--grpc-port",
                str(grpc_port),
                "--log-dir",
                str(log_dir),
                *extra,
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and proc.poll() is None:
        if "Ctrl-C stops everything" in up_log.read_text():
            return proc, port
        time.sleep(1)
    raise SystemExit(f"tessera up did not come up; see {up_log}")


def stop_up(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        proc.wait(90)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)


def bench(port: int, args: argparse.Namespace, result_dir: Path, name: str) -> dict:
    cmd = [
        sys.executable,
        "-m",
        "tessera.cli",
        "bench",
        "--base-url",
        f"http://127.0.0.1:{port}",
        "--model",
        SERVED,
        "--num-prompts",
        str(args.prompts),
        "--random-input-len",
        str(args.input_len),
        "--random-output-len",
        str(args.output_len),
        "--random-range-ratio",
        str(args.range_ratio),
        "--request-rate",
        str(args.rate),
        "--seed",
        str(args.seed),
        "--warmup",
        "3",
        "--ignore-eos",  # every request its full length, as these runs always had (bench used to default to it)
        "--save-result",
        "--save-detailed",  # the per-request lists: the plot and the simulator's replay use them
        "--result-dir",
        str(result_dir),
        "--result-filename",
        f"{name}.json",
    ]
    print(f"[{name}] {args.prompts} requests at {args.rate} req/s ...", flush=True)
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((result_dir / f"{name}.json").read_text())


def learnt_scale(log_dir: Path) -> str:
    """What the real worker learnt of this machine (`tessera status`, the scheduler's view), as
    ``prefill=X,decode=Y``: the correction the sim runs after it apply."""
    endpoint = re.search(r"tessera status --etcd (\S+)", (log_dir / "up.log").read_text()).group(1)
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    (worker,) = json.loads(out.stdout)["workers"]
    return f"prefill={worker['prefill_time_scale'] or 1.0},decode={worker['decode_time_scale'] or 1.0}"


def des_replay(measured: dict, step_time_scale: str = "") -> dict:
    """The discrete-event simulator on the exact lengths and arrival times the real run used."""
    from tessera.engine_model.build import build_instances, context_length, resolve_arch
    from tessera.engine_model.instance import parse_cluster
    from tessera.engine_model.perf.step_scale import StepScale, scaled
    from tessera.placement.pipeline import load_profile
    from tessera.runtime.models.registry import resolve
    from tessera.sim.report import summarize_sim
    from tessera.sim.simulator import Simulator
    from tessera.sim.workloads import SimRequest

    path = resolve(MODEL).path
    arch = resolve_arch(path, 4)
    scale = StepScale.parse(step_time_scale)
    instances = [
        (s, c, scaled(t, scale))
        for s, c, t in build_instances(arch, parse_cluster("cpu:1", arch), context_length(path))
    ]
    t0 = min(measured["start_times"])
    reqs = [
        SimRequest(f"r{i}", s - t0, p, o)
        for i, (s, p, o) in enumerate(zip(measured["start_times"], measured["input_lens"], measured["output_lens"]))
    ]
    result = Simulator(arch, arch.name, instances, load_profile("least_loaded", seed=0), 0).run(reqs)
    return summarize_sim(result)


def tpots(d: dict) -> list[float]:
    out = []
    for ttft, lat, n in zip(d["ttfts"], d["latencies"], d["output_lens"]):
        if n > 1:
            out.append((lat - ttft) / (n - 1) * 1000)
    return out


def plot(runs: dict[str, dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, d in runs.items():
        for ax, values in ((axes[0], [t * 1000 for t in d["ttfts"]]), (axes[1], tpots(d))):
            v = np.sort(values)
            ax.plot(v, np.linspace(0, 1, len(v)), label=name)
    axes[0].set_xlabel("TTFT (ms)")
    axes[1].set_xlabel("TPOT (ms)")
    for ax in axes:
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("SmolLM2-135M fp32 on one CPU core: real vLLM worker vs sim engine ('cpu') vs tessera sim")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prompts", type=int, default=150)
    p.add_argument("--rate", type=float, default=0.6)
    p.add_argument("--input-len", type=int, default=128)
    p.add_argument("--output-len", type=int, default=64)
    p.add_argument("--range-ratio", type=float, default=0.5)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--skip-uncorrected", action="store_true", help="run the sim engine only with the learnt correction")
    p.add_argument(
        "--calibrate",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="first run `tessera calibrate` for this long, and add the sim runs with its correction",
    )
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sim_fidelity"))
    args = p.parse_args()
    out = Path(args.out)
    work = Path(tempfile.mkdtemp(prefix="sim-fidelity-"))
    runs: dict[str, dict] = {}
    sim = ["--engine", "sim", "--accelerators", "cpu:1"]
    calibrated = ""
    if args.calibrate:
        calibration = work / "calibration.yaml"
        cmd = [sys.executable, "-m", "tessera.cli", "calibrate", MODEL, "--duration", str(args.calibrate)]
        subprocess.run([*cmd, "--out", str(calibration), "--log-dir", str(work / "calibrate")], check=True)
        calibrated = read_calibration(calibration)
        print(f"tessera calibrate measured this machine's step times as {calibrated} x the model's", flush=True)
    proc, port = start_up(["--workers", "1"], work / "vllm")
    try:
        runs["vllm"] = bench(port, args, work, "vllm")
        learnt = learnt_scale(work / "vllm")  # what the worker learnt from the requests it served
    finally:
        stop_up(proc)
    print(f"the vLLM worker learnt its step times as {learnt} x the model's", flush=True)
    variants = [("sim", sim), ("sim, learnt", [*sim, "--sim-step-time-scale", learnt])]
    if calibrated:
        variants.append(("sim, calibrated", [*sim, "--sim-step-time-scale", calibrated]))
    for name, extra in variants:
        if args.skip_uncorrected and name == "sim":
            continue
        proc, port = start_up(extra, work / name.replace(", ", "-"))
        try:
            runs[name] = bench(port, args, work, name.replace(", ", "-"))
        finally:
            stop_up(proc)
    runs["tessera-sim (virtual time)"] = des_replay(runs["vllm"])
    runs["tessera-sim, learnt"] = des_replay(runs["vllm"], learnt)
    if calibrated:
        runs["tessera-sim, calibrated"] = des_replay(runs["vllm"], calibrated)
    real = runs["vllm"]
    table = {}
    print(f"\n{'':<28} {'TTFT p50':>9} {'TTFT p90':>9} {'TPOT p50':>9} {'TPOT p90':>9} {'ITL p50':>8}")
    for name, d in runs.items():
        row = {
            k: d[k]
            for k in (
                "median_ttft_ms",
                "p90_ttft_ms",
                "median_tpot_ms",
                "p90_tpot_ms",
                "median_itl_ms",
                "request_throughput",
                "completed",
            )
        }
        row["ttft_error"] = d["median_ttft_ms"] / real["median_ttft_ms"] - 1
        row["tpot_error"] = d["median_tpot_ms"] / real["median_tpot_ms"] - 1
        table[name] = row
        print(
            f"{name:<28} {d['median_ttft_ms']:>9.1f} {d['p90_ttft_ms']:>9.1f} {d['median_tpot_ms']:>9.1f} "
            f"{d['p90_tpot_ms']:>9.1f} {d['median_itl_ms']:>8.1f}   (median TTFT {row['ttft_error']:+.1%}, "
            f"TPOT {row['tpot_error']:+.1%} vs vLLM)"
        )
    ok = all(abs(table[n][k]) <= 0.15 for n in ("sim, learnt",) for k in ("ttft_error", "tpot_error"))
    print(
        f"\nsim engine, with the learnt correction, within 15% of vLLM on median TTFT and TPOT: {'yes' if ok else 'NO'}"
    )
    calibrated_ok = calibrated and all(abs(table["sim, calibrated"][k]) <= 0.15 for k in ("ttft_error", "tpot_error"))
    if calibrated:
        print(f"sim engine, with tessera calibrate's correction, within 15%: {'yes' if calibrated_ok else 'NO'}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "args": vars(args),
                "learnt_step_time_scale": learnt,
                "calibrated_step_time_scale": calibrated,
                "table": table,
                "within_15_percent": ok,
                "calibrated_within_15_percent": bool(calibrated_ok),
            },
            indent=1,
        )
    )
    plot(runs, out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')} (raw runs in {work})")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
