"""Measure this machine's one-core peaks for the catalog's `cpu` row.

A Tessera CPU worker is pinned to one core (VLLM_CPU_OMP_THREADS_BIND), so the
catalog's `cpu` row describes ONE core. This script measures, on one thread
pinned to one core (core 1 by default; core 0 belongs to other work):

- dense GEMM throughput, fp32 and bf16: torch.matmul of large square matrices
  (2*n^3 FLOPs per product), and the same product through vLLM's oneDNN matmul
  (the kernel the vLLM CPU engine runs, weights prepacked), median over
  repetitions. The catalog takes the faster of the two: on this AMD core
  torch.matmul's fp32 path reaches ~90% of what oneDNN does, and the engine's
  GEMMs would otherwise exceed "peak";
- memory bandwidth: a copy of a 1 GiB tensor (bytes read + bytes written) and a
  sum over it (bytes read), far larger than the 32 MiB L3.

It prints the figures and writes benchmarks/results/cpu_peaks.json. The catalog
takes the median of the repetitions (sustained, not best-case) figures.

Second, unless --no-engine-gemm: the GEMM kernel the vLLM CPU engine itself runs
for float32 linears (vLLM's oneDNN matmul with prepacked weights,
vllm._custom_ops.onednn_mm) on SmolLM2-135M's projection shapes, for M = 1..4096
rows. Small-M calls cycle through enough distinct weight copies (>= 64 MiB, twice
the L3) that weights stream from memory as they do in a step. Written to
benchmarks/results/cpu_gemm_sweep.csv (shape, M, seconds per call);
benchmarks/calibrate_cpu.py fits the GEMM efficiency curve to it, since whole
engine steps cannot separate small-M GEMM time from the per-step overhead.

    taskset -c 1 .venv/bin/python benchmarks/measure_cpu_peaks.py [--core 1]
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"


def _timed(fn, reps: int) -> list[float]:
    fn()  # warm-up: first-touch page faults, oneDNN primitive creation
    out = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def gemm_flops(torch, dtype, n: int, reps: int, onednn: bool = False) -> dict[str, float]:
    a = torch.randn(n, n).to(dtype)
    b = torch.randn(n, n).to(dtype)
    if onednn:
        from vllm import _custom_ops as ops

        handler = ops.create_onednn_mm(b, 32)
        times = _timed(lambda: ops.onednn_mm(handler, a, None), reps)
    else:
        c = torch.empty(n, n, dtype=dtype)
        times = _timed(lambda: torch.matmul(a, b, out=c), reps)
    flops = 2.0 * n**3
    return {
        "n": n,
        "reps": reps,
        "median_flops": flops / statistics.median(times),
        "best_flops": flops / min(times),
        "median_s": statistics.median(times),
    }


def bandwidth(torch, nbytes: int, reps: int) -> dict[str, dict[str, float]]:
    src = torch.ones(nbytes // 4, dtype=torch.float32)
    dst = torch.empty_like(src)
    copy = _timed(lambda: dst.copy_(src), reps)  # reads nbytes, writes nbytes
    total = _timed(lambda: src.sum(), reps)  # reads nbytes
    return {
        "copy": {
            "bytes": 2 * nbytes,
            "median_bytes_s": 2 * nbytes / statistics.median(copy),
            "best_bytes_s": 2 * nbytes / min(copy),
        },
        "sum": {
            "bytes": nbytes,
            "median_bytes_s": nbytes / statistics.median(total),
            "best_bytes_s": nbytes / min(total),
        },
    }


# SmolLM2-135M's linears as (name, N, K): y[M, N] = x[M, K] @ W[K, N]
SMOLLM2_GEMMS = (
    ("qkv_proj", 960, 576),
    ("o_proj", 576, 576),
    ("mlp_up_gate", 3072, 576),
    ("mlp_down", 576, 1536),
    ("lm_head", 49152, 576),
)
SWEEP_ROWS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def engine_gemm_sweep(torch, reps: int, rows: tuple[int, ...] = SWEEP_ROWS) -> list[dict]:
    """Seconds per call of vLLM's CPU fp32 GEMM (oneDNN, prepacked) per shape and row count."""
    from vllm import _custom_ops as ops

    if not ops._supports_onednn:
        raise RuntimeError("this vLLM build has no oneDNN matmul")
    out = []
    for name, n, k in SMOLLM2_GEMMS:
        weight_bytes = 4 * n * k
        copies = max(1, -(-(64 << 20) // weight_bytes))
        weights = [torch.randn(k, n) for _ in range(copies)]
        handlers = [ops.create_onednn_mm(w, 32) for w in weights]
        for m in rows:
            if name == "lm_head" and m > 64:
                break  # logits rows are one per sequence: at most max_num_seqs (64) in a step
            x = torch.randn(m, k)
            # enough calls that weights stream from memory at small M, few at large M (compute-bound)
            calls = copies if m <= 64 else min(copies, 4)
            hs = handlers[:calls]

            def run(hs=hs, x=x):
                for h in hs:
                    ops.onednn_mm(h, x, None)

            times = _timed(run, reps)
            seconds = statistics.median(times) / calls
            out.append({"gemm": name, "m": m, "n": n, "k": k, "seconds": seconds, "calls": calls})
            print(
                f"  {name:<12} M={m:5d}: {seconds * 1e6:10.1f} us  "
                f"{2.0 * m * n * k / seconds / 1e9:6.1f} GFLOP/s  {weight_bytes / seconds / 1e9:6.2f} GB/s weights",
                flush=True,
            )
        del weights, handlers
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--core", type=int, default=1, help="core to pin to (default 1)")
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--gemm-n", type=int, default=4096)
    ap.add_argument("--bw-mib", type=int, default=1024)
    ap.add_argument(
        "--no-engine-gemm", action="store_true", help="torch only: skip vLLM's oneDNN kernel (peak and sweep)"
    )
    args = ap.parse_args()

    os.sched_setaffinity(0, {args.core})
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import torch

    torch.set_num_threads(1)
    print(f"pinned to core {args.core}; torch {torch.__version__}, threads {torch.get_num_threads()}", flush=True)

    gemms = {}
    for dtype, tdtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        for kernel in ("torch.matmul",) if args.no_engine_gemm else ("torch.matmul", "onednn_mm"):
            r = gemm_flops(torch, tdtype, args.gemm_n, args.reps, onednn=kernel == "onednn_mm")
            gemms.setdefault(dtype, {})[kernel] = r
            print(
                f"{dtype} GEMM n={args.gemm_n} {kernel:<12}: median {r['median_flops'] / 1e9:.1f} GFLOP/s, "
                f"best {r['best_flops'] / 1e9:.1f}",
                flush=True,
            )
    fp32_kernel, fp32 = max(gemms["fp32"].items(), key=lambda kv: kv[1]["median_flops"])
    bf16_kernel, bf16 = max(gemms["bf16"].items(), key=lambda kv: kv[1]["median_flops"])
    bw = bandwidth(torch, args.bw_mib << 20, args.reps)
    print(
        f"copy {args.bw_mib} MiB: median {bw['copy']['median_bytes_s'] / 1e9:.1f} GB/s (read+write), "
        f"best {bw['copy']['best_bytes_s'] / 1e9:.1f}",
        flush=True,
    )
    print(
        f"sum  {args.bw_mib} MiB: median {bw['sum']['median_bytes_s'] / 1e9:.1f} GB/s (read), "
        f"best {bw['sum']['best_bytes_s'] / 1e9:.1f}",
        flush=True,
    )

    cpu_model = next(
        (line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
        platform.processor(),
    )
    out = {
        "script": "benchmarks/measure_cpu_peaks.py",
        "measured_at": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "cpu": cpu_model,
        "core": args.core,
        "threads": 1,
        "torch": torch.__version__,
        "gemm": gemms,
        "bandwidth": bw,
        "catalog": {  # what the `cpu` catalog row takes: medians, one core, the faster GEMM kernel
            "fp32_tflops": round(fp32["median_flops"] / 1e12, 4),
            "bf16_tflops": round(bf16["median_flops"] / 1e12, 4),
            "memory_bw_tb_s": round(bw["copy"]["median_bytes_s"] / 1e12, 4),
            "fp32_kernel": fp32_kernel,
            "bf16_kernel": bf16_kernel,
        },
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "cpu_peaks.json"
    path.write_text(json.dumps(out, indent=2) + "\n")
    print(f"catalog figures: {out['catalog']}\nwrote {path.relative_to(ROOT)}", flush=True)

    if not args.no_engine_gemm:
        os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(args.core))
        print("vLLM's fp32 GEMM kernel (oneDNN, prepacked) on SmolLM2-135M shapes:", flush=True)
        sweep = engine_gemm_sweep(torch, max(3, args.reps // 2))
        sweep_path = RESULTS / "cpu_gemm_sweep.csv"
        with open(sweep_path, "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=("gemm", "m", "n", "k", "seconds", "calls"))
            w.writeheader()
            w.writerows(sweep)
        print(f"wrote {sweep_path.relative_to(ROOT)}")


if __name__ == "__main__":
    sys.exit(main())
