"""Chaos with a checker: a seeded fault schedule against a live cluster, and a checker over the recorded history.

In the spirit of Jepsen: the run is a history of client operations (every
streamed request, each token it received, how it ended) and a history of
faults; the checker then decides, from the history alone, whether anything was
lost, duplicated or left hanging.

The cluster is real processes: etcd, two schedulers, two autoscalers (one
leads; they keep a group of simulated workers timed as Llama-3-8B on H100s)
and a router. A load of streaming completions arrives as a Poisson process
(10 req/s by default) while a fault strikes every 5-15 s, drawn from a seeded
schedule that cycles through every kind:

- ``kill_worker``     SIGKILL a worker's process group (a machine dies);
- ``freeze_worker``   SIGSTOP a worker for 5-12 s, then SIGCONT (a VM pause, a long GC);
- ``hang_engine``     the worker's engine stops producing tokens while its gRPC server stays up,
                      for 8-15 s (the sim engine's SIGUSR1 switch);
- ``kill_scheduler``  SIGKILL a scheduler; a supervisor restarts it 3 s later;
- ``kill_leader``     SIGKILL the leading autoscaler; it is restarted 3 s later (as a follower);
- ``restart_etcd``    kill etcd and start it again 2 s later on its data;
- ``wipe_etcd``       the same with its data directory deleted (every lease and record lost).

The checker passes when:

- every stream ended with ``[DONE]`` or an OpenAI-shaped error (none just stopped or hung);
- every completed request carries exactly ``max_tokens`` tokens and exactly the text an
  unfaulted request gets (the simulated engine continues its text after a resume, as a real
  model does, so a duplicated or skipped token shows as a different text);
- at least 99% of the requests that start within 10 s after each fault succeed;
- at the end the registered workers are the desired set, all healthy, and no worker process
  runs outside it (no orphan).

It prints the faults injected, the requests, the lost ones and the worst recovery time,
and saves ``benchmarks/results/chaos.json`` and ``chaos.png``.

    python benchmarks/chaos.py                 # 5 minutes, 10 req/s, seed 1
    python benchmarks/chaos.py --duration-s 60 --seed 7 --out /tmp/chaos
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc
import httpx
import psutil
from bench_cluster import ROOT, run_in_workdir
from sim_fleet import SimFleet

WORKERS = 4
TOKEN_COUNTS = (32, 64, 128)
WINDOW_S = 10.0  # "within 10 s of each fault"
SLOW_TTFT_S = 2.0  # a request this slow to its first token counts as disturbed for the recovery time
FAULT_KINDS = (
    "kill_worker",
    "freeze_worker",
    "hang_engine",
    "kill_scheduler",
    "kill_leader",
    "restart_etcd",
    "wipe_etcd",
)


# -- the cluster --------------------------------------------------------------------------------


def chaos_fleet(work: Path, silence_s: float) -> SimFleet:
    """etcd, 2 schedulers, 2 autoscalers keeping WORKERS simulated H100s, and a router."""
    return SimFleet(
        work,
        schedulers=2,
        autoscalers=2,
        workers=WORKERS,
        accelerator="h100",
        # A hung engine is declared stalled after 3 s without a token (the default, 60 s, is
        # sized for real prefills): its streams' heartbeats stop and routers resume them.
        engine_args={"stall_timeout_s": 3},
        router_args=["--stream-silence-s", str(silence_s)],
    )


# -- the history --------------------------------------------------------------------------------


@dataclass
class Op:
    """One client request as the client saw it."""

    id: int
    max_tokens: int
    start: float
    end: float = 0.0
    ttft: float | None = None
    status: int = 0
    tokens: int = 0  # completion_tokens in the final usage chunk
    chunks: int = 0
    done: bool = False  # the stream ended with data: [DONE]
    error: str = ""  # an OpenAI-shaped error, in the status or in the stream
    text: str = ""
    outcome: str = ""  # ok | error | lost | wrong (set by the checker)


@dataclass
class Fault:
    kind: str
    at: float
    target: str
    ended: float = 0.0  # when the fault was lifted (restart, SIGCONT, thaw)
    fleet_restored: float | None = None  # when the desired workers were registered and healthy again


async def stream_one(client: httpx.AsyncClient, model: str, op: Op, timeout_s: float) -> None:
    body = {
        "model": model,
        "prompt": f"chaos request {op.id}: tell me a long story",
        "max_tokens": op.max_tokens,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    parts: list[str] = []
    try:
        async with asyncio.timeout(timeout_s):
            async with client.stream("POST", "/v1/completions", json=body) as resp:
                op.status = resp.status_code
                if resp.status_code != 200:
                    op.error = (await resp.aread()).decode(errors="replace")[:300]
                    return
                async for line in resp.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line[6:]
                    if data == "[DONE]":
                        op.done = True
                        break
                    event = json.loads(data)
                    if "error" in event:
                        op.error = json.dumps(event["error"])[:300]
                        continue
                    for choice in event.get("choices", []):
                        if choice.get("text"):
                            if op.ttft is None:
                                op.ttft = time.time() - op.start
                            parts.append(choice["text"])
                            op.chunks += 1
                    if event.get("usage"):
                        op.tokens = event["usage"]["completion_tokens"]
    except TimeoutError:
        op.error = op.error or "client timeout"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        op.error = op.error or f"{type(exc).__name__}: {exc}"
    finally:
        op.end = time.time()
        op.text = "".join(parts)


# -- faults ---------------------------------------------------------------------------------------


class Injector:
    """Carries out the fault schedule; every fault ends by itself (restart, SIGCONT, thaw)."""

    def __init__(self, cluster: SimFleet, rng: random.Random) -> None:
        self.c = cluster
        self.rng = rng
        self.busy: set[int] = set()  # workers frozen or hung right now: left alone by other faults
        self.background: set[asyncio.Task] = set()

    def _later(self, delay: float, action, fault: Fault) -> None:
        async def run() -> None:
            await asyncio.sleep(delay)
            await asyncio.to_thread(action)
            fault.ended = time.time()

        task = asyncio.create_task(run())
        self.background.add(task)
        task.add_done_callback(self.background.discard)

    def _victim(self) -> tuple[str, psutil.Process] | None:
        candidates = [(wid, p) for wid, p in self.c.worker_processes().items() if p.pid not in self.busy]
        return self.rng.choice(sorted(candidates, key=lambda x: x[0])) if candidates else None

    async def inject(self, kind: str) -> Fault:
        now = time.time()
        if kind in ("kill_worker", "freeze_worker", "hang_engine"):
            victim = self._victim()
            if victim is None:
                return Fault(kind, now, "(no worker to strike)", ended=now)
            wid, proc = victim
            fault = Fault(kind, now, wid)
            if kind == "kill_worker":
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(os.getpgid(proc.pid), signal.SIGKILL)
                fault.ended = now
            else:
                sig_on, sig_off = (
                    (signal.SIGSTOP, signal.SIGCONT) if kind == "freeze_worker" else (signal.SIGUSR1, signal.SIGUSR1)
                )
                pid = proc.pid
                self.busy.add(pid)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig_on)

                def lift(pid: int = pid, sig: int = sig_off) -> None:
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, sig)
                    self.busy.discard(pid)

                hold = self.rng.uniform(5, 12) if kind == "freeze_worker" else self.rng.uniform(8, 15)
                self._later(hold, lift, fault)
            return fault
        if kind == "kill_scheduler":
            svc = self.rng.choice(self.c.schedulers)
            svc.kill()
            fault = Fault(kind, now, svc.name)
            self._later(3.0, svc.start, fault)
            return fault
        if kind == "kill_leader":
            try:
                svc = await self.c.leader()
            except (TimeoutError, grpc.aio.AioRpcError, OSError):
                svc = None
            if svc is None:
                return Fault(kind, now, "(no leader right now)", ended=now)
            svc.kill()
            fault = Fault(kind, now, svc.name)
            self._later(3.0, svc.start, fault)
            return fault
        # etcd, with or without its data
        etcd = self.c.etcd
        await asyncio.to_thread(etcd.kill)
        if kind == "wipe_etcd":
            shutil.rmtree(etcd.data_dir, ignore_errors=True)
        fault = Fault(kind, now, "etcd")
        self._later(2.0, etcd.start, fault)
        return fault

    async def settle(self) -> None:
        await asyncio.gather(*self.background, return_exceptions=True)


def fault_schedule(rng: random.Random, duration_s: float, warmup_s: float) -> list[tuple[float, str]]:
    """(seconds from the start of the load, kind): every 5-15 s, cycling through every kind in a shuffled order."""
    out: list[tuple[float, str]] = []
    t = warmup_s
    kinds: list[str] = []
    while True:
        t += rng.uniform(5, 15)
        if t > duration_s - WINDOW_S:
            return out
        if not kinds:
            kinds = list(FAULT_KINDS)
            rng.shuffle(kinds)
        out.append((t, kinds.pop()))


# -- the checker ----------------------------------------------------------------------------------


def check(ops: list[Op], faults: list[Fault], reference: dict[int, str], end_state: dict[str, Any]) -> dict[str, Any]:
    """Decide from the history alone; sets each op's outcome."""
    for op in ops:
        if op.done and not op.error:
            exact = op.tokens == op.max_tokens and op.text == reference[op.max_tokens]
            op.outcome = "ok" if exact else "wrong"
        elif op.error and (op.done or op.status != 200):
            op.outcome = "error"  # ended cleanly with an error the client can act on
        else:
            op.outcome = "lost"  # the stream stopped or hung without [DONE] or an error

    windows = []
    for i, f in enumerate(faults):
        in_window = [op for op in ops if f.at <= op.start < f.at + WINDOW_S]
        ok = sum(op.outcome == "ok" for op in in_window)
        nxt = faults[i + 1].at if i + 1 < len(faults) else float("inf")
        disturbed = [
            op
            for op in ops
            if f.at - 60 <= op.start < nxt
            and op.end >= f.at
            and (op.outcome != "ok" or op.ttft is None or op.ttft > SLOW_TTFT_S)
        ]
        recovery = max((op.end - f.at for op in disturbed), default=0.0)
        windows.append(
            {
                "kind": f.kind,
                "target": f.target,
                "at_s": f.at,
                "requests": len(in_window),
                "ok": ok,
                "success": ok / len(in_window) if in_window else 1.0,
                "recovery_s": round(recovery, 2),
                "fleet_restored_s": None if f.fleet_restored is None else round(f.fleet_restored - f.at, 2),
            }
        )
    by = {k: sum(op.outcome == k for op in ops) for k in ("ok", "error", "lost", "wrong")}
    ok_ttfts = sorted(op.ttft for op in ops if op.outcome == "ok" and op.ttft is not None)
    verdicts = {
        "every stream ended with [DONE] or an error": by["lost"] == 0,
        "every completed request has exactly its tokens": by["wrong"] == 0,
        "at least 99% success within 10 s of each fault": all(w["success"] >= 0.99 for w in windows),
        "the registered workers are the desired set": end_state["registered_healthy"] == end_state["desired"],
        "no orphan worker process": not end_state["orphans"],
    }
    return {
        "requests": len(ops),
        **by,
        "faults": len(faults),
        "fault_kinds": sorted({f.kind for f in faults}),
        "worst_recovery_s": max((w["recovery_s"] for w in windows), default=0.0),
        "worst_fleet_restored_s": max((w["fleet_restored_s"] or 0.0 for w in windows), default=0.0),
        "min_window_success": min((w["success"] for w in windows), default=1.0),
        "ttft_p50_s": round(statistics.median(ok_ttfts), 3) if ok_ttfts else None,
        "ttft_p99_s": round(ok_ttfts[int(0.99 * (len(ok_ttfts) - 1))], 3) if ok_ttfts else None,
        "windows": windows,
        "end_state": end_state,
        "verdicts": verdicts,
        "passed": all(verdicts.values()),
    }


# -- the run --------------------------------------------------------------------------------------


async def run(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    rng = random.Random(args.seed)
    cluster = chaos_fleet(work, args.silence_s)
    cluster.start()
    ops: list[Op] = []
    faults: list[Fault] = []
    try:
        served = await cluster.wait_ready()
        print(f"[chaos] cluster up: {WORKERS} simulated workers, 2 schedulers, 2 autoscalers, logs in {work}")

        limits = httpx.Limits(max_connections=1000, max_keepalive_connections=100)
        async with httpx.AsyncClient(base_url=cluster.base_url, timeout=None, limits=limits) as client:
            reference: dict[int, str] = {}
            for n in TOKEN_COUNTS:  # what an unfaulted request returns
                op = Op(-1, n, time.time())
                await stream_one(client, served, op, 60)
                if not op.done or op.error or op.tokens != n:
                    raise SystemExit(f"reference request for {n} tokens failed: {op}")
                reference[n] = op.text

            injector = Injector(cluster, rng)
            schedule = fault_schedule(rng, args.duration_s, args.warmup_s)
            t0 = time.time()
            tasks: set[asyncio.Task] = set()

            async def load() -> None:
                i = 0
                next_at = t0
                while next_at < t0 + args.duration_s:
                    await asyncio.sleep(max(0.0, next_at - time.time()))
                    op = Op(i, rng.choice(TOKEN_COUNTS), time.time())
                    ops.append(op)
                    task = asyncio.create_task(stream_one(client, served, op, args.request_timeout_s))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                    i += 1
                    next_at += rng.expovariate(args.rate)

            async def chaos() -> None:
                for offset, kind in schedule:
                    await asyncio.sleep(max(0.0, t0 + offset - time.time()))
                    fault = await injector.inject(kind)
                    faults.append(fault)
                    print(f"[chaos] {fault.at - t0:6.1f}s  {kind:<15} {fault.target}", flush=True)

            async def watch_fleet() -> None:
                while True:
                    await asyncio.sleep(1)
                    pending = [f for f in faults if f.fleet_restored is None]
                    if pending and await cluster.fleet_ok():
                        now = time.time()
                        for f in pending:
                            if f.ended and now >= f.ended:
                                f.fleet_restored = now

            async def progress() -> None:
                while True:
                    await asyncio.sleep(10)
                    done = [op for op in ops if op.end]
                    good = sum(op.done and not op.error for op in done)
                    print(
                        f"[chaos] {time.time() - t0:6.0f}s / {args.duration_s:.0f}s: {len(ops)} sent, "
                        f"{good} ok, {len(done) - good} not ok, {len(tasks)} in flight, {len(faults)} faults",
                        flush=True,
                    )

            helpers = [asyncio.create_task(watch_fleet()), asyncio.create_task(progress())]
            await asyncio.gather(load(), chaos())
            await injector.settle()
            if tasks:
                await asyncio.wait(tasks, timeout=args.request_timeout_s + 5)
            # The cluster settles: every fault has been lifted; the autoscaler restores the fleet.
            deadline = time.monotonic() + args.settle_s
            while time.monotonic() < deadline and not await cluster.fleet_ok():
                await asyncio.sleep(1)
            await asyncio.sleep(2)
            for h in helpers:
                h.cancel()

        st = await cluster.status()
        registered = {w["id"] for w in st["workers"]}
        processes = cluster.worker_processes()
        end_state = {
            "desired": WORKERS,
            "registered": len(registered),
            "registered_healthy": sum(bool(w["healthy"]) for w in st["workers"]),
            "orphans": sorted(set(processes) - registered),  # running, but not serving anyone
            "missing_processes": sorted(registered - set(processes)),
        }
        for f in faults:
            f.at -= t0
            f.ended = f.ended - t0 if f.ended else 0.0
            f.fleet_restored = None if f.fleet_restored is None else f.fleet_restored - t0
        for op in ops:
            op.start -= t0
            op.end -= t0
        result = check(ops, faults, reference, end_state)
    finally:
        leftovers = await asyncio.to_thread(cluster.teardown)
    result["leftover_processes_after_teardown"] = leftovers
    result["config"] = {
        "seed": args.seed,
        "duration_s": args.duration_s,
        "rate_per_s": args.rate,
        "workers": WORKERS,
        "token_counts": TOKEN_COUNTS,
        "stream_silence_s": args.silence_s,
        "lease_ttl_s": 3,
        "stall_timeout_s": 3,
        "machine": f"{os.cpu_count()} cores",
    }
    result["fault_log"] = [asdict(f) for f in faults]
    result["history"] = [{k: v for k, v in asdict(op).items() if k != "text"} for op in ops]
    return result


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hist = result["history"]
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(11, 6), sharex=True)
    colors = {"ok": "tab:green", "error": "tab:orange", "lost": "tab:red", "wrong": "tab:purple"}
    for outcome, color in colors.items():
        pts = [(h["start"], h["ttft"] if h["ttft"] is not None else 0.0) for h in hist if h["outcome"] == outcome]
        if pts:
            ax1.scatter(*zip(*pts), s=6, color=color, label=f"{outcome} ({len(pts)})")
    ax1.set_ylabel("TTFT (s)")
    ax1.set_yscale("symlog", linthresh=0.1)
    ax1.legend(loc="upper right", fontsize=8)
    for w in result["windows"]:
        for ax in (ax1, ax2):
            ax.axvline(w["at_s"], color="grey", lw=0.6, ls=":")
        ax2.annotate(w["kind"], (w["at_s"], 0.0), rotation=90, fontsize=7, va="bottom")
    ax2.bar([w["at_s"] for w in result["windows"]], [w["recovery_s"] for w in result["windows"]], width=1.5)
    ax2.set_ylabel("recovery (s)")
    ax2.set_xlabel("time (s)")
    fig.suptitle(
        f"chaos: {result['requests']} requests, {result['faults']} faults, "
        f"{result['ok']} ok, {result['error']} errors, {result['lost']} lost, {result['wrong']} wrong"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--duration-s", type=float, default=300.0, help="how long the load runs")
    p.add_argument("--rate", type=float, default=10.0, help="requests per second (Poisson arrivals)")
    p.add_argument("--seed", type=int, default=1, help="seeds the fault schedule and the load")
    p.add_argument("--warmup-s", type=float, default=10.0, help="load without faults before the first one")
    p.add_argument("--settle-s", type=float, default=90.0, help="how long the fleet may take to recover at the end")
    p.add_argument("--silence-s", type=float, default=5.0, help="the router's --stream-silence-s")
    p.add_argument("--request-timeout-s", type=float, default=90.0, help="a request still open this long is lost")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results", help="where chaos.json/.png go")
    p.add_argument("--keep-logs", action="store_true", help="keep the services' logs (printed path)")
    args = p.parse_args()
    result = run_in_workdir("tessera-chaos-", lambda work: run(args, work), keep=args.keep_logs)
    args.out.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(ImportError):
        plot(result, args.out / "chaos.png")
    # The whole history (every request) is the checker's input: kept beside the summary, not in git.
    (args.out / "chaos_history.json").write_text(json.dumps(result.pop("history")))
    (args.out / "chaos.json").write_text(json.dumps(result, indent=1))
    print()
    print(f"{'fault':<15} {'target':<22} {'at':>6} {'reqs':>5} {'ok':>5} {'recovery':>9} {'fleet back':>10}")
    for w in result["windows"]:
        fleet = "-" if w["fleet_restored_s"] is None else f"{w['fleet_restored_s']:.1f}s"
        print(
            f"{w['kind']:<15} {w['target'][:22]:<22} {w['at_s']:6.1f} {w['requests']:5d} {w['ok']:5d} "
            f"{w['recovery_s']:8.1f}s {fleet:>10}"
        )
    print(
        f"\nfaults injected {result['faults']} ({', '.join(result['fault_kinds'])}); requests {result['requests']}: "
        f"{result['ok']} ok, {result['error']} errors, {result['lost']} lost, {result['wrong']} wrong; "
        f"worst recovery {result['worst_recovery_s']:.1f} s, lowest success in a fault window "
        f"{100 * result['min_window_success']:.1f}%"
    )
    for verdict, ok in result["verdicts"].items():
        print(f"  {'PASS' if ok else 'FAIL'}  {verdict}")
    print(f"saved {args.out / 'chaos.json'}")
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
