"""Example plans for Llama-3.1-8B: what the planner buys at a few loads, against the best single kind.

Uses deploy/slo-policies/llama3-8b.yaml (TTFT p90 <= 500 ms, TPOT p90 <= 50 ms; h100 16,
a100 16, mi300x 8, l40s 8 free) and a tighter inventory (h100 4, a100 6, l40s 4) where no
single kind suffices. Prompts: mean 1024, p90 2048 tokens; answers 256 tokens.

    taskset -c 0 .venv/bin/python benchmarks/planner_examples.py    # a few seconds; results/planner_examples.json
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import describe
from tessera.planning.load import LoadMix
from tessera.planning.planner import plan, plan_homogeneous
from tessera.planning.slo_policy import InventoryItem, parse_slo_policy

ROOT = Path(__file__).resolve().parents[1]

SHAPE = LoadMix(1.0, input_mean=1024, input_p90=2048, output_mean=256)


def row(policy, rate: float, model: CapacityModel) -> dict:
    t0 = time.perf_counter()
    best = plan(policy, SHAPE.scaled(rate), model)
    took = time.perf_counter() - t0
    single = plan_homogeneous(policy, SHAPE.scaled(rate), model)
    out = {
        "rate_rps": rate,
        "plan": describe(best.counts),
        "cost_per_hour": round(best.cost_per_hour, 2),
        "feasible": best.feasible,
        "binding": best.binding,
        "prefill_decode": best.prefill_decode,
        "plan_ms": round(took * 1e3, 1),
        "homogeneous": describe(single.counts),
        "homogeneous_cost_per_hour": round(single.cost_per_hour, 2),
        "homogeneous_feasible": single.feasible,
    }
    print(
        f"{rate:6.1f} req/s  {'ok ' if best.feasible else 'NO '} ${best.cost_per_hour:7.2f}/h  {out['plan']:<60} "
        f"| single kind {'ok ' if single.feasible else 'NO '} ${single.cost_per_hour:7.2f}/h  {out['homogeneous']}"
    )
    return out


def main() -> None:
    policy = parse_slo_policy((ROOT / "deploy/slo-policies/llama3-8b.yaml").read_text())
    model = CapacityModel(engines_for(policy))
    results = {"catalog_inventory": [row(policy, r, model) for r in (0.5, 5, 20, 60, 150, 400)]}
    tight = replace(
        policy,
        inventory=(
            InventoryItem("h100-sxm", 4, 2.99),
            InventoryItem("a100-80gb-sxm", 6, 1.79),
            InventoryItem("l40s", 4, 1.86),
        ),
    )
    print("tight inventory: h100 4, a100 6, l40s 4")
    results["tight_inventory"] = [row(tight, r, model) for r in (20, 50, 70, 100, 130)]
    (ROOT / "benchmarks/results/planner_examples.json").write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
