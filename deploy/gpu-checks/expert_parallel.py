"""GPU check: serve a MoE model with expert + data parallelism the way a Tessera worker would, and verify it.

Run by expert_parallel.sh on a box with 1-8 NVIDIA or AMD GPUs and vLLM
installed. For each role asked for (mixed, prefill, decode: each picks the
vendor's all-to-all backend from tessera/engine_model/catalog/vendors.yaml) it starts one
AsyncLLM with DP = the GPU count and EP on, then (services.worker.moe_check):
sends a request pinned to each DP rank with ``data_parallel_rank`` and checks
it ran there, that every rank decodes the same greedy tokens, and that an
out-of-range rank is refused. A role whose backend needs a package that is
not installed (DeepEP, MoRI) is reported SKIP, not FAIL.

Prints one PASS/FAIL/SKIP line per role and a JSON line with the details;
exits non-zero if anything failed.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import os
import sys
import traceback
from typing import Any

from tessera.engine_model.catalog.expert_parallel import expert_parallel_engine_args, expert_parallel_env
from tessera.engine_model.catalog.vendors import vendor_settings

PROMPT = "What is the capital of France?"
GENERIC_BACKEND = "allgather_reducescatter"  # NCCL/RCCL only: runs wherever vLLM does
MIN_AGREE = 8  # greedy tokens every rank must share in bfloat16 (a broken all-to-all diverges at once)


def plan(
    vendor: str, gpus: int, dp: int | None, roles: list[str], model: str, max_model_len: int
) -> list[dict[str, Any]]:
    """One engine launch per role: its args, its env, or why it is skipped. Pure, so --dry-run shows it."""
    settings = vendor_settings(vendor)
    if settings.expert_parallel is None:
        raise SystemExit(f"vendor {vendor!r} runs no expert-parallel MoE instances")
    dp_size = dp or max(1, min(gpus, 8))
    launches = []
    for role in roles:
        args: dict[str, Any] = dict(settings.engine_args)
        args.update(
            model=model,
            tokenizer=model,
            max_model_len=max_model_len,
            max_num_seqs=16,
            enable_prefix_caching=False,
            dtype="bfloat16",
        )  # the EP kernels' dtype; tiny-moe is saved in float32
        args.update(expert_parallel_engine_args(vendor, dp_size, ep=True, role=role))
        missing = (
            []
            if args["all2all_backend"] == GENERIC_BACKEND
            else [pkg for pkg in settings.expert_parallel.requires if importlib.util.find_spec(pkg) is None]
        )
        launches.append(
            {
                "role": role,
                "dp_size": dp_size,
                "engine_args": args,
                "env": {**settings.env, **expert_parallel_env(vendor, dp_size, ep=True)},
                "skip": f"{args['all2all_backend']} needs {', '.join(missing)}" if missing else None,
            }
        )
    return launches


def detect() -> tuple[str, int, str]:
    """Vendor, GPU count and device name, as the Tessera worker detects them."""
    from tessera.runtime.devices import detect_accelerator, detect_vendor

    vendor = detect_vendor()
    if vendor not in ("nvidia", "amd"):
        raise SystemExit(f"no NVIDIA or AMD GPU here (detected {vendor!r}); set TESSERA_VENDOR to override")
    accelerator, count = detect_accelerator(vendor)
    return vendor, count, accelerator


def resolve_model(model: str) -> str:
    """A built-in recipe (tiny-moe) is prepared locally; anything else is a folder or hub id for vLLM."""
    from tessera.runtime.models.registry import resolve

    spec = resolve(model)
    if spec.recipe:
        from tessera.runtime.models.prepare import ensure_model

        return ensure_model(spec)
    return spec.path


def prompt_ids(model_path: str) -> list[int]:
    from transformers import AutoTokenizer

    return list(AutoTokenizer.from_pretrained(model_path).encode(PROMPT, add_special_tokens=False))


def run_launch(launch: dict[str, Any], ids: list[int], max_tokens: int) -> dict[str, Any]:
    from services.worker.moe_check import serve_and_check

    for key, value in launch["env"].items():
        os.environ.setdefault(key, value)
    try:
        return asyncio.run(serve_and_check(launch["engine_args"], ids, max_tokens, min_agree=MIN_AGREE))
    except BaseException as exc:  # noqa: BLE001 - a check reports every failure
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()[-4000:]}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--model",
        default="tiny-moe",
        help="tiny-moe (random weights, built here, offline) | a folder | a hub id, e.g. Qwen/Qwen3-30B-A3B",
    )
    p.add_argument("--dp", type=int, default=None, help="DP ranks (default: the GPU count, at most 8)")
    p.add_argument(
        "--role",
        action="append",
        choices=["mixed", "prefill", "decode"],
        help="repeatable (default: all three; each picks the vendor's all2all backend)",
    )
    p.add_argument("--max-model-len", type=int, default=2048)
    p.add_argument("--max-tokens", type=int, default=32)
    p.add_argument("--vendor", default=None, help="skip detection (for --dry-run off a GPU box)")
    p.add_argument("--gpus", type=int, default=None, help="with --vendor: the GPU count to plan for")
    p.add_argument("--dry-run", action="store_true", help="print the launches and exit")
    a = p.parse_args()
    roles = a.role or ["mixed", "prefill", "decode"]
    if a.vendor:
        vendor, gpus, device = a.vendor, a.gpus or 1, "(not detected)"
    else:
        vendor, gpus, device = detect()
    model = a.model if a.dry_run else resolve_model(a.model)
    launches = plan(vendor, gpus, a.dp, roles, model, a.max_model_len)
    print(f"expert-parallel check: {vendor} x{gpus} ({device}), model {a.model}", flush=True)
    if a.dry_run:
        for launch in launches:
            print(json.dumps(launch, default=str))
        return 0
    ids = prompt_ids(model)
    failed = False
    for launch in launches:
        tag = f"{launch['role']:7s} dp={launch['dp_size']} ep=on {launch['engine_args']['all2all_backend']}"
        if launch["skip"]:
            print(f"SKIP {tag}: {launch['skip']}", flush=True)
            continue
        result = run_launch(launch, ids, a.max_tokens)
        failed |= not result.get("ok")
        why = result.get("error") or "; ".join(result.get("failures", []))
        print(
            f"{'PASS' if result.get('ok') else 'FAIL'} {tag}"
            + (
                f" start {result.get('start_s')}s, {result.get('decode_tokens_per_s')} tok/s"
                if result.get("ok")
                else f": {why}"
            ),
            flush=True,
        )
        print(json.dumps({"role": launch["role"], **result}, default=str), flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
