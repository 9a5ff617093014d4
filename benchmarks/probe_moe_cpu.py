"""Which MoE launch shapes vLLM's CPU build serves: plain, expert-parallel, data-parallel, both.

Why a probe and not a test: DP on CPU starts one engine-core process (and one
worker process) per rank, minutes on a small machine; this prints what works,
with the exact error text for what does not, so the worker and its tests use
only the shapes that work. Each mode runs in its own child process (a failed
engine start must not poison the next one). The checks are services.worker.moe_check's,
the same the GPU check runs.

    export VLLM_CPU_OMP_THREADS_BIND="1|1"     # one core list per DP rank (cpu_threads_bind)
    taskset -c 1 .venv/bin/python benchmarks/probe_moe_cpu.py            # all modes
    .venv/bin/python benchmarks/probe_moe_cpu.py --mode dp2-ep --without-cpu-collectives

Output: one line per mode: start seconds, decode tokens/s, the greedy tokens,
and for DP which rank each pinned request ran on; --json for JSON lines.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import traceback
from pathlib import Path
from typing import Any

from tessera.engine_model.catalog.expert_parallel import expert_parallel_engine_args

MODES: dict[str, dict[str, Any]] = {
    "plain": {"dp_size": 1, "ep": False},
    "ep": {"dp_size": 1, "ep": True},
    "dp2": {"dp_size": 2, "ep": False},
    "dp2-ep": {"dp_size": 2, "ep": True},
}
PROMPT = "What is the capital of France?"
MAX_TOKENS = 32


def engine_args(model_path: str, mode: str, with_collectives: bool = True) -> dict[str, Any]:
    """The args a Tessera CPU worker would pass (vendor table + EP/DP shape), sized for the tiny model."""
    from tessera.engine_model.catalog.vendors import vendor_settings

    shape = MODES[mode]
    args: dict[str, Any] = dict(vendor_settings("cpu").engine_args)
    args.update(
        model=model_path,
        tokenizer=model_path,
        dtype="float32",
        max_model_len=512,
        max_num_seqs=8,
        max_num_batched_tokens=512,
    )
    args.update(expert_parallel_engine_args("cpu", shape["dp_size"], shape["ep"]))
    if not with_collectives:
        args.pop("worker_extension_cls", None)  # reproduce vLLM's own failure
    return args


def run_child(model_path: str, mode: str, with_collectives: bool) -> None:
    """The child: serve one mode and print one JSON line (the error text if it failed)."""
    from tokenizers import Tokenizer

    from services.worker.moe_check import serve_and_check

    args = engine_args(model_path, mode, with_collectives)
    ids = Tokenizer.from_file(str(Path(model_path) / "tokenizer.json")).encode(PROMPT).ids
    try:
        result = asyncio.run(serve_and_check(args, ids, MAX_TOKENS))
    except BaseException as exc:  # noqa: BLE001 - the probe reports every failure
        result = {
            "ok": False,
            "engine_args": args,
            "error": f"{type(exc).__name__}: {exc}",
            "traceback": traceback.format_exc()[-3000:],
        }
    result["mode"] = mode
    print("PROBE-RESULT " + json.dumps(result), flush=True)


def run_parent(model_path: str, modes: list[str], timeout_s: float, as_json: bool, with_collectives: bool) -> int:
    env = dict(os.environ)
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
    results = []
    for mode in modes:
        cmd = [sys.executable, __file__, "--child", mode, "--model-path", model_path]
        if not with_collectives:
            cmd.append("--without-cpu-collectives")
        try:
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
            line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("PROBE-RESULT ")), None)
            result = (
                json.loads(line.removeprefix("PROBE-RESULT "))
                if line
                else {"mode": mode, "ok": False, "error": f"exit {proc.returncode}", "stderr_tail": proc.stderr[-3000:]}
            )
            if not result.get("ok"):
                result["engine_errors"] = _engine_errors(proc.stdout + proc.stderr)  # vLLM logs to stdout
        except subprocess.TimeoutExpired as exc:
            tail = "".join(x.decode() if isinstance(x, bytes) else (x or "") for x in (exc.stdout, exc.stderr))
            result = {
                "mode": mode,
                "ok": False,
                "error": f"timed out after {timeout_s:.0f}s",
                "engine_errors": _engine_errors(tail),
            }
        results.append(result)
        if as_json:
            print(json.dumps(result), flush=True)
        else:
            brief = {k: v for k, v in result.items() if k not in ("traceback", "stderr_tail", "engine_args")}
            print(f"{mode:7s} {'OK  ' if result.get('ok') else 'FAIL'} {json.dumps(brief)}", flush=True)
    return 0 if all(r.get("ok") for r in results) else 1


def _engine_errors(stderr: str) -> list[str]:
    """The lines that name a root cause in vLLM's multi-process logs (the rest is traceback noise)."""
    keys = ("Error:", "NotImplementedError", "died unexpectedly", "AssertionError")
    noise = ("object is not callable",)  # AsyncLLM.__del__ at interpreter exit
    out = []
    for line in stderr.splitlines():
        if any(k in line for k in keys) and not any(n in line for n in noise) and "PROBE-RESULT" not in line:
            text = line.split("] ", 1)[-1].strip()
            if text not in out:
                out.append(text)
    return out[:8]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mode", action="append", choices=list(MODES), help="repeatable; default: all")
    p.add_argument("--model-path", default=None, help="default: the tiny-moe recipe, prepared on first use")
    p.add_argument("--timeout", type=float, default=600.0, help="seconds per mode")
    p.add_argument("--json", action="store_true")
    p.add_argument(
        "--without-cpu-collectives",
        action="store_true",
        help="drop Tessera's CPU collectives hook (shows vLLM's own DP MoE failures on CPU)",
    )
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    a = p.parse_args()
    model_path = a.model_path
    if model_path is None:
        from tessera.runtime.models.prepare import ensure_model
        from tessera.runtime.models.registry import resolve

        model_path = ensure_model(resolve("tiny-moe"))
    if a.child:
        run_child(model_path, a.child, not a.without_cpu_collectives)
        return 0
    return run_parent(model_path, a.mode or list(MODES), a.timeout, a.json, not a.without_cpu_collectives)


if __name__ == "__main__":
    sys.exit(main())
