"""DeepSeek V3 on MI300X and H100 inventories: the shapes the performance model prices, the plans the
planner makes, and how close the model comes to the seed's published figure.

The figure: Moreh's technical report "21K output tokens per second DeepSeek inference on AMD Instinct
MI300X GPUs with expert parallelism" (moreh.io, 2025-11-13) measured a decoding throughput of
more than 21,000 tokens/s on one server of 8 x MI300X running DeepSeek-R1 (DeepSeek V3's shape) with
expert parallelism. The batch and context lengths are not in the part of the report we hold; its
method follows SGLang's 96-H100 study (2,000-token inputs), so decodes here run at a 2,000-token
prompt plus half of a 1,000-token answer.

Three views, all from the same model (tessera/engine_model/perf, catalog/models/deepseek-v3.json):
1. decode throughput per 8-device node by shape and per-rank batch (decode-only steps);
2. that throughput against 21,000 tokens/s: at vLLM's default max_num_seqs (256 per DP rank), and
   the per-rank batch at which the model first reaches it;
3. the planner's plans for a 2,000-in / 1,000-out load under TTFT p90 3 s and TPOT p90 100 ms on
   32 x MI300X, on 32 x H100, and on both, with output tokens/s per node at the planned capacity.

    .venv/bin/python benchmarks/deepseek_plan.py     # ~30 s; results/deepseek_plan.json and .png
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from tessera.engine_model.build import build_instances, instance_startup
from tessera.engine_model.catalog import accelerators
from tessera.engine_model.instance import ClusterSpecError, InstanceSpec, parallelism
from tessera.engine_model.perf.memory import weight_bytes_per_device
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import describe
from tessera.planning.load import LoadMix
from tessera.planning.planner import plan
from tessera.planning.slo_policy import parse_slo_policy

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/results"
PUBLISHED_TOK_S = 21_000  # per 8 x MI300X node, decode, DeepSeek-R1 with EP (Moreh, 2025-11-13)
CONTEXT = 2000 + 500
SHAPES = [  # (accelerator, tp, dp)
    ("mi300x", 8, 1),
    ("mi300x", 1, 8),
    ("mi300x", 1, 16),
    ("h100-sxm", 8, 1),
    ("h100-sxm", 1, 8),
    ("h100-sxm", 8, 2),
    ("h100-sxm", 1, 16),
]
PER_RANK_BATCHES = [8, 16, 32, 64, 128, 192, 256, 384, 512]
POLICY = """
model: deepseek-v3
targets: {ttft: {percentile: 90, ms: 3000}, tpot: {percentile: 90, ms: 100}}
inventory: {%s}
roles: [mixed, prefill, decode]
tp: [1, 8]
dp: [1, 8, 16]
instances: {min: 0, max: 64}
"""
LOAD = LoadMix(1.0, input_mean=2000, input_p90=3000, output_mean=1000)
RATES = [2, 10, 40, 80]


def shape_row(arch: ModelArch, accel_name: str, tp: int, dp: int) -> dict:
    accel = accelerators.get(accel_name)
    spec = InstanceSpec(accel, tp, "decode", dp=dp)
    label = spec.label.removesuffix(":decode")
    row: dict = {"shape": label, "devices": spec.devices, "nodes": spec.devices / accel.devices_per_node}
    row["weights_gb_per_device"] = round(weight_bytes_per_device(arch, parallelism(arch, spec)) / 1e9, 1)
    try:
        [(_, cfg, timer)] = build_instances(arch, [spec])
    except ClusterSpecError as exc:
        row["fits"] = False
        row["why"] = str(exc)
        print(f"{label:<22} does not fit: {row['weights_gb_per_device']} GB of weights per device")
        return row
    start = instance_startup(arch, spec)
    row.update(
        fits=True,
        kv_tokens=cfg.num_blocks * cfg.block_size,
        cold_start_s=round(start.cold_s, 1),
        wake_s=round(start.wake_s, 1),
        decode=[],
    )
    ranks = dp
    for per_rank in PER_RANK_BATCHES:
        batch = per_rank * ranks
        if batch * CONTEXT > row["kv_tokens"]:
            break
        step = timer(decode=[CONTEXT] * batch)
        row["decode"].append(
            {
                "per_rank_batch": per_rank,
                "batch": batch,
                "batch_per_node": round(batch / row["nodes"]),
                "step_ms": round(step * 1e3, 2),
                "tok_s_per_node": round(batch / step / row["nodes"]),
            }
        )
    best = max(row["decode"], key=lambda d: d["tok_s_per_node"]) if row["decode"] else None
    print(
        f"{label:<22} {row['weights_gb_per_device']:6.1f} GB/device, KV {row['kv_tokens']:>9} tokens, "
        f"cold start {row['cold_start_s']:5.1f} s (wake {row['wake_s']:.1f} s), best "
        f"{best['tok_s_per_node'] if best else 0:>6} tok/s per node at {best['per_rank_batch'] if best else 0}/rank"
    )
    return row


def comparison(rows: list[dict]) -> dict:
    """mi300x-dp8 (one node, EP 8) against the published 21,000 tokens/s."""
    dp8 = next(r for r in rows if r["shape"] == "mi300x-dp8")
    at_default = next(d for d in dp8["decode"] if d["per_rank_batch"] == 256)
    reach = next((d for d in dp8["decode"] if d["tok_s_per_node"] >= PUBLISHED_TOK_S), None)
    out = {
        "published_tok_s_per_node": PUBLISHED_TOK_S,
        "model_at_vllm_default_256_per_rank": at_default["tok_s_per_node"],
        "ratio_at_256_per_rank": round(at_default["tok_s_per_node"] / PUBLISHED_TOK_S, 2),
        "step_ms_at_256_per_rank": at_default["step_ms"],
        "per_rank_batch_reaching_published": reach["per_rank_batch"] if reach else None,
    }
    print(
        f"\nmi300x-dp8 (EP 8) decode at 256 sequences per rank: {at_default['tok_s_per_node']} tok/s per node, "
        f"{out['ratio_at_256_per_rank']:.2f}x the published {PUBLISHED_TOK_S}; the model first reaches it at "
        f"{out['per_rank_batch_reaching_published']} sequences per rank"
    )
    return out


def plans() -> list[dict]:
    out = []
    for inventory in ("mi300x: 32", "h100: 32", "mi300x: 32, h100: 32"):
        policy = parse_slo_policy(POLICY % inventory)
        model = CapacityModel(engines_for(policy))
        print(f"\ninventory {inventory}")
        for rate in RATES:
            t0 = time.perf_counter()
            chosen = plan(policy, LOAD.scaled(rate), model)
            took = time.perf_counter() - t0
            entries = [
                {
                    "type": e.itype.label,
                    "count": e.count,
                    "capacity_rps": round(e.capacity_rps, 2),
                    # a prefill instance's capacity is prompts, not output tokens
                    "output_tok_s_per_node_at_capacity": None
                    if e.itype.role == "prefill"
                    else round(e.capacity_rps * LOAD.output_mean / (e.itype.devices / 8)),
                    "binding": e.binding,
                }
                for e in chosen.entries
            ]
            row = {
                "inventory": inventory,
                "rate_rps": rate,
                "feasible": chosen.feasible,
                "plan": describe(chosen.counts),
                "cost_per_hour": round(chosen.cost_per_hour, 2),
                "devices": chosen.devices,
                "entries": entries,
                "plan_s": round(took, 2),
            }
            out.append(row)
            per_node = ", ".join(
                f"{e['type']} {e['output_tok_s_per_node_at_capacity']} tok/s/node"
                for e in entries
                if e["output_tok_s_per_node_at_capacity"] is not None
            )
            print(
                f"  {rate:>3} req/s {'ok' if chosen.feasible else 'NO'} ${chosen.cost_per_hour:7.2f}/h  "
                f"{row['plan']:<40} [{per_node}]"
            )
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for r in rows:
        if r.get("fits") and r["decode"]:
            xs = [d["batch_per_node"] for d in r["decode"]]
            ax.plot(xs, [d["tok_s_per_node"] for d in r["decode"]], marker="o", label=r["shape"])
    ax.axhline(PUBLISHED_TOK_S, color="k", linestyle="--", label="published, 8 x MI300X EP (Moreh)")
    ax.set_xlabel("decoding sequences per 8-device node")
    ax.set_ylabel("output tokens/s per 8-device node")
    ax.set_title(f"DeepSeek V3 decode, context {CONTEXT} tokens: performance model")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    arch = ModelArch.deepseek_v3()
    print(
        f"DeepSeek V3: {arch.param_count() / 1e9:.0f}B parameters, {arch.weight_bytes() / 1e9:.0f} GB (fp8), "
        f"KV {arch.kv_bytes_per_token()} bytes/token (MLA; per-head K/V would be "
        f"{2 * arch.layers * arch.heads * 192 * 2})\n"
    )
    rows = [shape_row(arch, *s) for s in SHAPES]
    result = {"context_tokens": CONTEXT, "shapes": rows, "comparison": comparison(rows), "plans": plans()}
    planned = next(
        e for p in result["plans"] if p["inventory"] == "mi300x: 32" for e in p["entries"] if e["type"] == "mi300x-dp8"
    )
    result["comparison"]["planner_mi300x_dp8_output_tok_s_per_node"] = planned["output_tok_s_per_node_at_capacity"]
    result["comparison"]["planner_ratio"] = round(planned["output_tok_s_per_node_at_capacity"] / PUBLISHED_TOK_S, 2)
    print(
        f"\nthe planner's mi300x-dp8 (mixed: 2,000-token prompts prefilled on the same ranks) at its SLO "
        f"capacity: {planned['output_tok_s_per_node_at_capacity']} output tok/s per node "
        f"({result['comparison']['planner_ratio']:.2f}x the published figure; capped by {planned['binding']})"
    )
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "deepseek_plan.json").write_text(json.dumps(result, indent=1))
    plot(rows, OUT / "deepseek_plan.png")
    print(f"\nwrote {OUT / 'deepseek_plan.json'} and deepseek_plan.png")


if __name__ == "__main__":
    main()
