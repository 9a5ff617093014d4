"""Markdown tables of benchmarks/results/routing_policies.json, for the README.

    .venv/bin/python benchmarks/routing_policies_tables.py [--json FILE]

Prints two tables: p90 TTFT of every policy per case (best in bold), and the
full set of figures (p50/p90 TTFT, p90 TPOT, throughput, goodput, prefix hit
rate against the infinite-cache bound) for tessera and the best other policy.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def ttft_table(data: dict) -> list[str]:
    policies = data["policies"]
    rows = [
        "| workload | fleet | load | " + " | ".join(policies) + " | tessera vs best other |",
        "|---|---|---|" + "---|" * len(policies) + "---|",
    ]
    for c in data["cases"]:
        p90 = {p: c["results"][p]["p90_ttft_ms"] for p in policies}
        best = min(round(v) for v in p90.values())
        cells = [f"**{v:.0f}**" if round(v) == best else f"{v:.0f}" for v in p90.values()]
        rows.append(
            f"| {c['workload']} | {c['fleet']} | {c['load']:.0%} | "
            + " | ".join(cells)
            + f" | {c['tessera_p90_ttft_gain']:.2f}x |"
        )
    return rows


def full_table(data: dict) -> list[str]:
    rows = [
        "| workload | fleet | load | policy | TTFT p50 | TTFT p90 | TPOT p90 | req/s | goodput | hit / bound |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in data["cases"]:
        bound = c["infinite_cache_hit_rate"]
        for policy in ("tessera", c["best_other"]):
            r = c["results"][policy]
            share = r["prefix_cache_hit_rate"] / bound if bound else 0.0
            rows.append(
                f"| {c['workload']} | {c['fleet']} | {c['load']:.0%} | {policy} | {r['p50_ttft_ms']:.0f} | "
                f"{r['p90_ttft_ms']:.0f} | {r['p90_tpot_ms']:.1f} | {r['request_throughput']:.2f} | "
                f"{r['request_goodput']:.2f} | {r['prefix_cache_hit_rate']:.1%} / {bound:.1%} ({share:.0%}) |"
            )
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "routing_policies.json"))
    data = json.loads(Path(p.parse_args().json).read_text())
    print("\n".join(ttft_table(data)))
    print()
    print("\n".join(full_table(data)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
