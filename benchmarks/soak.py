"""Soak: a long run at half the fleet's capacity, watching every process for leaks.

Leaks show only over time: memory that a dropped connection never gives back,
a task per disconnected stream, a file descriptor per refused body, a metric
series per request id. This benchmark runs a simulated cluster (etcd, a
scheduler, an autoscaler keeping two simulated H100 workers, a router) at 50%
of its measured capacity for 30 minutes, with 1% of the clients disconnecting
mid-stream and 1% sending an invalid body, and samples every service every
15 s: resident memory and open file descriptors (the Prometheus process
collector), asyncio tasks (``tessera_event_loop_tasks``) and the number of
metric series it exports.

Pass, after a warm-up (the first fifth of the run, at least 2 minutes): every
process's memory grows under 1 MB/min (least-squares slope over the samples
taken under load), and its file descriptors, tasks and series stay flat (the
fitted growth over the run within max(3, 10%) of their mean, plus two standard
errors of that fit: counts of things in flight jitter with the load). Tasks and file
descriptors also come back, once the load has stopped, to at most what they
were idle before it (plus max(3, 10%)): a leaked stream keeps its task. No 5xx;
every invalid body gets a 4xx.

    python benchmarks/soak.py                      # 30 minutes
    python benchmarks/soak.py --duration-s 600     # the 10-minute version
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from pathlib import Path
from typing import Any

import httpx
from bench_cluster import ROOT, run_in_workdir, save_results
from overload import PROMPT, Shot, closed_loop, fire
from sim_fleet import SimFleet

SAMPLE_S = 15.0
INVALID_BODIES = (
    b'{"model": "MODEL", "prompt": "hi", "max_tokens": -1}',
    b'{"model": "MODEL", "prompt": "hi", "temperature": NaN}',
    b'{"model": "MODEL", "prompt": "hi"',
    b'{"model": "no-such-model", "prompt": "hi"}',
    b'{"model": "MODEL", "messages": [{"role": "user", "content": "hi"}]}',  # chat body on /v1/completions
    b"\xff\xfe not json",
)


def parse_metrics(text: str) -> dict[str, float]:
    """The samples we watch from one /metrics page, and how many series it has."""
    out: dict[str, float] = {"series": 0.0}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        out["series"] += 1
        series, _, value = line.rpartition(" ")
        name = series.partition("{")[0]  # a worker's samples carry constant labels (worker, accelerator, ...)
        if name in ("process_resident_memory_bytes", "process_open_fds", "tessera_event_loop_tasks"):
            out[name] = float(value)
    return out


async def scrape(client: httpx.AsyncClient, targets: dict[str, str]) -> dict[str, dict[str, float]]:
    out = {}
    for name, url in targets.items():
        try:
            m = parse_metrics((await client.get(url, timeout=10)).text)
        except httpx.HTTPError:
            continue
        out[name] = {
            "rss_mb": m.get("process_resident_memory_bytes", 0.0) / 2**20,
            "fds": m.get("process_open_fds", 0.0),
            "tasks": m.get("tessera_event_loop_tasks", 0.0),
            "series": m["series"],
        }
    return out


async def targets_of(fleet: SimFleet) -> dict[str, str]:
    """Every service's /metrics URL, from the etcd registry (the router serves its own on its API port)."""
    st = await fleet.status()
    out = {"router": fleet.base_url + "/metrics"}
    for s in st["services"]:
        if s["kind"] != "router" and s.get("metrics_address"):
            out[s["kind"]] = f"http://{s['metrics_address']}/metrics"
    for i, w in enumerate(sorted(st["workers"], key=lambda w: w["id"])):
        if w["metrics_address"]:
            out[f"worker-{i + 1}"] = f"http://{w['metrics_address']}/metrics"
    return out


def slope_per_min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope, in units per minute."""
    return fit(points)[0]


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least-squares slope per minute and its standard error (0 with too few points to say)."""
    n = len(points)
    if n < 2:
        return 0.0, 0.0
    mx = sum(t for t, _ in points) / n
    my = sum(v for _, v in points) / n
    den = sum((t - mx) ** 2 for t, _ in points)
    if not den:
        return 0.0, 0.0
    slope = sum((t - mx) * (v - my) for t, v in points) / den
    if n < 3:
        return 60 * slope, 0.0
    residual = sum((v - my - slope * (t - mx)) ** 2 for t, v in points)
    return 60 * slope, 60 * (residual / (n - 2) / den) ** 0.5


def tolerance(mean: float) -> float:
    """How far a count that should stay flat may drift: max(3, 10%)."""
    return max(3.0, 0.1 * mean)


def judge(samples: list[dict[str, Any]], warmup_s: float) -> dict[str, Any]:
    """Per process and quantity: first, last, mean and slope under load after warm-up, and whether it passes."""
    after = [s for s in samples if s["t"] >= warmup_s and s.get("phase", "load") == "load"]
    idle = {s["phase"]: s["procs"] for s in samples if s.get("phase", "load") != "load"}
    span_min = (after[-1]["t"] - after[0]["t"]) / 60 if len(after) > 1 else 0.0
    out: dict[str, Any] = {}
    for proc in sorted({p for s in after for p in s["procs"]}):
        row: dict[str, Any] = {}
        for key in ("rss_mb", "fds", "tasks", "series"):
            pts = [(s["t"], s["procs"][proc][key]) for s in after if proc in s["procs"]]
            if not pts:
                continue
            slope, stderr = fit(pts)
            mean = sum(v for _, v in pts) / len(pts)
            row[key] = {
                "first": pts[0][1],
                "last": pts[-1][1],
                "mean": round(mean, 2),
                "slope_per_min": round(slope, 3),
                "slope_stderr": round(stderr, 3),
            }
            if key == "rss_mb":
                row[key]["ok"] = slope < 1.0
            else:
                row[key]["ok"] = abs(slope * span_min) <= tolerance(mean) + 2 * stderr * span_min
            before, later = (idle.get(p, {}).get(proc, {}).get(key) for p in ("idle-before", "idle-after"))
            if key in ("fds", "tasks") and before is not None and later is not None:
                row[key]["idle_before"], row[key]["idle_after"] = before, later
                row[key]["ok"] = row[key]["ok"] and later <= before + tolerance(before)
        out[proc] = row
    return out


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    fleet = SimFleet(work, workers=2, accelerator="h100", engine_args={"max_num_seqs": 16})
    fleet.start()
    rng = random.Random(args.seed)
    samples: list[dict[str, Any]] = []
    statuses: dict[str, int] = {}
    invalid_statuses: dict[str, int] = {}
    disconnects = 0
    try:
        model = await fleet.wait_ready()
        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=fleet.base_url, timeout=120, limits=limits) as client:
            capacity = await closed_loop(client, model, 64, 20)
            rate = 0.5 * capacity
            targets = await targets_of(fleet)
            print(
                f"[soak] capacity {capacity:.1f} req/s; running at {rate:.1f} req/s for {args.duration_s:.0f} s; "
                f"watching {', '.join(targets)}",
                flush=True,
            )
            await asyncio.sleep(5)  # the capacity run's streams wind down
            t0 = time.time()
            samples.append({"t": 0.0, "phase": "idle-before", "procs": await scrape(client, targets)})
            tasks: set[asyncio.Task] = set()

            async def normal() -> None:
                shot = Shot("soak", time.time())
                await fire(client, model, shot)
                statuses[str(shot.status)] = statuses.get(str(shot.status), 0) + 1

            async def disconnect() -> None:
                nonlocal disconnects
                disconnects += 1
                body = {"model": model, "prompt": PROMPT, "max_tokens": 64, "stream": True, "ignore_eos": True}
                try:
                    async with client.stream("POST", "/v1/completions", json=body) as resp:
                        async for _ in resp.aiter_lines():
                            break  # the client goes away after the first line
                except httpx.HTTPError:
                    pass

            async def invalid() -> None:
                body = rng.choice(INVALID_BODIES).replace(b"MODEL", model.encode())
                resp = await client.post("/v1/completions", content=body, headers={"content-type": "application/json"})
                invalid_statuses[str(resp.status_code)] = invalid_statuses.get(str(resp.status_code), 0) + 1

            async def sampler() -> None:
                while True:
                    samples.append({"t": time.time() - t0, "phase": "load", "procs": await scrape(client, targets)})
                    s = samples[-1]["procs"]
                    print(
                        f"[soak] {samples[-1]['t']:6.0f}s / {args.duration_s:.0f}s  "
                        + "  ".join(
                            f"{p}: {v['rss_mb']:.0f}MB {v['fds']:.0f}fd {v['tasks']:.0f}t" for p, v in s.items()
                        ),
                        flush=True,
                    )
                    await asyncio.sleep(SAMPLE_S)

            sampling = asyncio.create_task(sampler())
            next_at = time.monotonic()
            end = next_at + args.duration_s
            while next_at < end:
                await asyncio.sleep(max(0.0, next_at - time.monotonic()))
                draw = rng.random()
                kind = disconnect if draw < 0.01 else invalid if draw < 0.02 else normal
                task = asyncio.create_task(kind())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                next_at += rng.expovariate(rate)
            sampling.cancel()
            await asyncio.gather(*tasks)
            await asyncio.sleep(5)
            samples.append({"t": time.time() - t0, "phase": "idle-after", "procs": await scrape(client, targets)})
    finally:
        await asyncio.to_thread(fleet.teardown)
    warmup = max(120.0, args.duration_s / 5)
    verdict = judge(samples, warmup)
    result: dict[str, Any] = {
        "duration_s": args.duration_s,
        "rate_req_s": round(rate, 2),
        "capacity_req_s": round(capacity, 2),
        "warmup_s": warmup,
        "statuses": statuses,
        "invalid_statuses": invalid_statuses,
        "disconnects": disconnects,
        "processes": verdict,
        "samples": samples,
    }
    checks = {
        "no 5xx": not any(k.startswith("5") or k == "0" for k in (*statuses, *invalid_statuses)),
        "every invalid body gets a 4xx": all(k.startswith("4") for k in invalid_statuses),
    }
    for proc, row in verdict.items():
        for key, v in row.items():
            checks[f"{proc} {key} {'grows under 1 MB/min' if key == 'rss_mb' else 'flat'}"] = v["ok"]
    result["verdicts"] = checks
    result["passed"] = all(checks.values())
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(12, 7), sharex=True)
    for ax, key, label in zip(
        axes.flat,
        ("rss_mb", "fds", "tasks", "series"),
        ("resident memory (MB)", "open fds", "asyncio tasks", "metric series"),
    ):
        for proc in sorted({p for s in result["samples"] for p in s["procs"]}):
            pts = [(s["t"] / 60, s["procs"][proc][key]) for s in result["samples"] if proc in s["procs"]]
            ax.plot(*zip(*pts), label=proc, lw=1)
        ax.axvline(result["warmup_s"] / 60, color="grey", ls=":", lw=0.8)
        ax.set_ylabel(label)
    axes[1][0].set_xlabel("minutes")
    axes[1][1].set_xlabel("minutes")
    axes[0][0].legend(fontsize=7)
    fig.suptitle(
        f"soak: {result['duration_s'] / 60:.0f} min at {result['rate_req_s']} req/s (50% of capacity), "
        "1% disconnects, 1% invalid bodies"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def print_summary(result: dict[str, Any]) -> None:
    header = ("process", "RSS MB/min", "fds first→last", "tasks first→last", "series first→last")
    print(f"\n{header[0]:<12} {header[1]:>11} {header[2]:>15} {header[3]:>17} {header[4]:>18}")
    for proc, row in result["processes"].items():
        print(
            f"{proc:<12} {row['rss_mb']['slope_per_min']:>11.3f} "
            f"{row['fds']['first']:>7.0f}→{row['fds']['last']:<7.0f} "
            f"{row['tasks']['first']:>8.0f}→{row['tasks']['last']:<8.0f} "
            f"{row['series']['first']:>8.0f}→{row['series']['last']:<8.0f}"
        )
    print(
        f"statuses {result['statuses']}; invalid bodies {result['invalid_statuses']}; "
        f"disconnects {result['disconnects']}"
    )
    failed = [k for k, ok in result["verdicts"].items() if not ok]
    print("PASS: every check" if not failed else "FAIL: " + "; ".join(failed))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration-s", type=float, default=1800.0)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    args = p.parse_args()
    result = run_in_workdir("tessera-soak-", lambda work: run(args, work))
    save_results(result, str(args.out / "soak"), plot, print_summary, indent=1)
    raise SystemExit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
