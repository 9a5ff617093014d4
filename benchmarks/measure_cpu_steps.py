"""Time real vLLM engine steps on this machine's CPU, for calibrating the `cpu` row.

Starts one vLLM engine in this process (VLLM_ENABLE_V1_MULTIPROCESSING=0) with
the engine arguments a Tessera CPU worker uses (tessera/engine_model/catalog/vendors.yaml:
enforce_eager, block_size 32, prefix caching, max_num_seqs 64,
max_num_batched_tokens 4096, 2 GiB of KV cache) on SmolLM2-135M-Instruct in
float32, pinned to one core, and drives it step by step with token-id prompts.

What is timed is the EngineCore's own step (schedule + execute model + sample
+ update_from_output), not LLMEngine.step(), which adds detokenization. Each
step's batch is read from the SchedulerOutput that step produced: per scheduled
request, the tokens scheduled now and the tokens already computed (prefix-cache
hits or earlier chunks). A request whose prompt is already computed is a decode
with that many tokens of context.

Experiments (labels in the CSV):
  prefill        one prompt of N tokens (16..4096), nothing cached
  prefill_multi  k prompts of N tokens prefilled in one step
  cached         a prompt whose first K tokens were prefilled before (prefix cache hit)
                 (cached_base: the step that prefilled those K tokens)
  buildup_<ctx>  64 (32 at ctx 1024) prompts of ctx tokens added at once: chunked prefill
                 steps, then prefill chunks mixed with the first decodes
  decode         B in 64..1 sequences decoding at contexts ~128, ~512, ~1024
                 (B <= 32 at ~1024: 64 x 1024 tokens do not fit the 2 GiB KV cache)
  mixed          B (32, 8, 1) decodes plus one new prompt of P (64, 512) tokens in the same step

Writes benchmarks/results/cpu_engine_steps.csv, one row per measured step:
label, rep, seconds, prefill ([[new, cached], ...] JSON), decode ([context, ...] JSON),
tokens, preempted.

    taskset -c 1 .venv/bin/python benchmarks/measure_cpu_steps.py [--reps 3] [--quick]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
CSV_PATH = RESULTS / "cpu_engine_steps.csv"
FIELDS = ("label", "rep", "seconds", "prefill", "decode", "tokens", "preempted")


@dataclass
class Step:
    label: str
    rep: int
    seconds: float
    prefill: list[list[int]]
    decode: list[int]
    preempted: int

    def row(self) -> dict:
        return {
            "label": self.label,
            "rep": self.rep,
            "seconds": f"{self.seconds:.6f}",
            "prefill": json.dumps(self.prefill),
            "decode": json.dumps(self.decode),
            "tokens": sum(n for n, _ in self.prefill) + len(self.decode),
            "preempted": self.preempted,
        }


class StepRecorder:
    """Wraps one EngineCore: times step_fn and keeps the batch the scheduler built for it."""

    def __init__(self, core) -> None:
        self.core = core
        self.label: str | None = None
        self.rep = 0
        self.steps: list[Step] = []
        self.cached_tokens: dict[str, int] = {}
        self._batch: tuple[list[list[int]], list[int], int] | None = None
        if getattr(core, "batch_queue", None) is not None:
            raise RuntimeError("the engine uses a batch queue (async scheduling): steps would overlap")
        scheduler = core.scheduler
        schedule, step_fn = scheduler.schedule, core.step_fn

        def timed_schedule(*args, **kwargs):
            out = schedule(*args, **kwargs)
            self._batch = self._composition(scheduler, out)
            return out

        def timed_step_fn():
            self._batch = None
            t0 = time.perf_counter()
            result = step_fn()
            seconds = time.perf_counter() - t0
            if self._batch is not None and self.label is not None:
                prefill, decode, preempted = self._batch
                if prefill or decode:
                    self.steps.append(Step(self.label, self.rep, seconds, prefill, decode, preempted))
            return result

        scheduler.schedule = timed_schedule
        core.step_fn = timed_step_fn

    def _composition(self, scheduler, out) -> tuple[list[list[int]], list[int], int]:
        computed = {r.req_id: r.num_computed_tokens for r in out.scheduled_new_reqs}
        for req_id in computed:  # prefix-cache hits, as vLLM's own prefill statistics count them
            stats = getattr(scheduler.requests[req_id], "prefill_stats", None)
            if stats is not None:
                self.cached_tokens[req_id] = int(stats.num_cached_tokens)
        cached = out.scheduled_cached_reqs
        computed.update(zip(cached.req_ids, cached.num_computed_tokens))
        prefill, decode = [], []
        for req_id, n in out.num_scheduled_tokens.items():
            req = scheduler.requests[req_id]
            done = computed[req_id]
            if done >= req.num_prompt_tokens:
                assert n == 1, f"{req_id}: {n} tokens scheduled for a decode"
                decode.append(int(done))
            else:
                prefill.append([int(n), int(done)])
        return prefill, decode, len(out.preempted_req_ids or ())


class Driver:
    def __init__(self, llm, recorder: StepRecorder, seed: int) -> None:
        from vllm import SamplingParams

        self.engine = llm.llm_engine
        self.rec = recorder
        self.rng = random.Random(seed)
        self.vocab = llm.llm_engine.model_config.get_vocab_size()
        self.count = 0
        self.SamplingParams = SamplingParams
        self.internal: dict[str, str] = {}

    def prompt(self, n: int) -> list[int]:
        return [self.rng.randrange(100, self.vocab - 100) for _ in range(n)]

    def add(self, tokens: list[int], max_tokens: int) -> str:
        self.count += 1
        rid = f"r{self.count}"
        params = self.SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=0.0)
        self.internal[rid] = self.engine.add_request(rid, {"prompt_token_ids": tokens}, params)
        return rid

    def step(self, label: str | None, rep: int = 0) -> None:
        self.rec.label, self.rec.rep = label, rep
        self.engine.step()
        self.rec.label = None

    def drain(self, label: str | None = None, rep: int = 0) -> None:
        while self.engine.has_unfinished_requests():
            self.step(label, rep)

    def abort(self, rids: list[str]) -> None:
        if rids:
            self.engine.abort_request(rids)


def progress(msg: str, t_start: float) -> None:
    print(f"[{time.monotonic() - t_start:6.0f}s] {msg}", flush=True)


def run(args: argparse.Namespace) -> list[Step]:
    os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    os.environ.setdefault("VLLM_CPU_OMP_THREADS_BIND", str(args.core))
    os.environ["HF_HUB_OFFLINE"] = "1"
    from tessera.engine_model.catalog.vendors import vendor_settings
    from tessera.runtime.models.registry import resolve

    settings = vendor_settings("cpu")
    for k, v in settings.env.items():
        os.environ.setdefault(k, str(v))
    spec = resolve("smollm2")
    engine_args = dict(settings.engine_args)
    engine_args.update(
        model=spec.path, tokenizer=spec.path, dtype=spec.dtype_by_vendor["cpu"], async_scheduling=False, seed=0
    )
    t_start = time.monotonic()
    progress(
        f"starting vLLM in-process: {engine_args}, KV {os.environ['VLLM_CPU_KVCACHE_SPACE']} GiB, "
        f"threads bound to {os.environ['VLLM_CPU_OMP_THREADS_BIND']}",
        t_start,
    )
    from vllm import LLM

    llm = LLM(**engine_args)
    core = llm.llm_engine.engine_core.engine_core
    blocks = llm.llm_engine.vllm_config.cache_config.num_gpu_blocks
    block_size = llm.llm_engine.vllm_config.cache_config.block_size
    progress(f"engine up; KV cache {blocks} blocks x {block_size} = {blocks * block_size} tokens", t_start)
    rec = StepRecorder(core)
    d = Driver(llm, rec, args.seed)
    reps = args.reps
    quick = args.quick

    # warm-up (not recorded): every shape class once
    for n in (16, 200, 1000, 4096):
        d.add(d.prompt(n), 4)
        d.drain(None)
    progress("warm-up done", t_start)

    # 1. one prompt of N tokens, nothing cached
    sizes = (16, 64, 256) if quick else (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
    for rep in range(reps):
        for n in d.rng.sample(sizes, len(sizes)):
            d.add(d.prompt(n), 1)
            d.drain("prefill", rep)
        progress(f"prefill rep {rep + 1}/{reps}", t_start)

    # 2. several prompts in one step
    multi = ((4, 64),) if quick else ((2, 64), (4, 128), (8, 32), (2, 512), (4, 256), (16, 64), (3, 1024), (8, 512))
    for rep in range(reps):
        for k, n in multi:
            for _ in range(k):
                d.add(d.prompt(n), 1)
            d.drain("prefill_multi", rep)
        progress(f"prefill_multi rep {rep + 1}/{reps}", t_start)

    # 3. cached prefix: K tokens prefilled before, then the same K plus M new tokens
    combos = (
        ((256, 64),)
        if quick
        else ((256, 64), (512, 512), (1024, 32), (1024, 256), (2048, 128), (2048, 1024), (3072, 512), (4096, 64))
    )
    for rep in range(reps):
        for k, m in combos:
            base = d.prompt(k)
            d.add(base, 1)
            d.drain("cached_base", rep)
            rid = d.add(base + d.prompt(m), 1)
            n_before = len(rec.steps)
            d.drain("cached", rep)
            got = rec.steps[n_before].prefill
            cached = rec.cached_tokens.get(d.internal[rid], -1)
            if got != [[m, k]] or cached != k:
                print(f"  warning: cached K={k} M={m}: scheduler saw {got}, num_cached_tokens={cached}", flush=True)
        progress(f"cached rep {rep + 1}/{reps}", t_start)

    # 4. decode at ~128, ~512, ~1024 tokens of context, with mixed steps along the way
    decode_steps = 2 if quick else args.decode_steps
    levels = ((128, 8),) if quick else ((128, 64), (512, 64), (1024, 32))
    for ctx, bmax in levels:
        rids = [d.add(d.prompt(ctx), 100_000) for _ in range(bmax)]
        # prefill all of them: chunked prefill, then chunks mixed with the first decodes
        while any(
            rec_req is None or rec_req.num_computed_tokens < ctx
            for rec_req in (core.scheduler.requests.get(d.internal[r]) for r in rids)
        ):
            d.step(f"buildup_{ctx}")
        progress(f"context {ctx}: {bmax} sequences prefilled", t_start)
        b = bmax
        while b >= 1:
            for rep in range(decode_steps):
                d.step("decode", rep)
            # a new prompt joins b decodes (not at b = 64: max_num_seqs = 64 leaves it no room)
            for p in (64, 512) if b in (min(bmax, 32), 8, 1) else ():
                if quick and p > 64:
                    continue
                d.add(d.prompt(p), 1)
                d.step("mixed", 0)
            d.abort(rids[b // 2 : b] if b > 1 else rids[:1])
            b //= 2
        d.drain(None)
        progress(f"context {ctx}: decode B={bmax}..1 done", t_start)

    llm.llm_engine.engine_core.shutdown()
    return rec.steps


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--core", type=int, default=1, help="core the engine is pinned to (default 1)")
    ap.add_argument("--reps", type=int, default=3, help="repetitions of the prefill/cached experiments")
    ap.add_argument("--decode-steps", type=int, default=5, help="decode steps per batch size")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="a small smoke run (does not overwrite the CSV)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    os.sched_setaffinity(0, {args.core})
    t0 = time.monotonic()
    steps = run(args)
    out = args.out or (RESULTS / "cpu_engine_steps_quick.csv" if args.quick else CSV_PATH)
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        for s in steps:
            w.writerow(s.row())
    by_label: dict[str, int] = {}
    for s in steps:
        by_label[s.label] = by_label.get(s.label, 0) + 1
    print(f"{len(steps)} steps ({by_label}) in {time.monotonic() - t0:.0f} s; wrote {out}")


if __name__ == "__main__":
    main()
