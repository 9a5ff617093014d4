"""The planner's capacity at p99 against the simulator, on the request mix the autoscaling runs use.

benchmarks/planner_vs_sim.py checks the capacity model at p90 on lognormal prompts. The
autoscaling benchmarks plan at p99 (deploy/slo-policies/llama3-8b-p99.yaml: TTFT p99 <= 500 ms,
TPOT p99 <= 50 ms) for the prompt and answer lengths of `azure2023_code.csv`, where the p99
prompt and the prompt-length variance decide the TTFT margin. For one instance of each type this
gives the capacity model's rate, then replays 10 minutes of Poisson arrivals of that mix at
several rates through the simulator (one instance, already warm) and reports the share within
both SLOs and the p99s beside the model's predictions. The simulator's knee is the highest rate
still within 99%.

    taskset -c 0 .venv/bin/python benchmarks/capacity_vs_sim_p99.py   # ~1 min; results/capacity_vs_sim_p99.{json,png}
"""

from __future__ import annotations

import json

from autoscaling import POLICY, RESULTS, TRACE, simulate

from tessera.engine_model.build import resolve_arch
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.fleet import InstanceType
from tessera.planning.slo_policy import parse_slo_policy
from tessera.sim.autoscalers import Static, peak_load
from tessera.sim.workloads import azure_csv, diurnal

TYPES = (InstanceType("mi300x"), InstanceType("mi300x", 2), InstanceType("h100-sxm"))
MULTIPLES = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
SECONDS = 600.0


def main() -> None:
    policy = parse_slo_policy(POLICY.read_text())
    capacity = CapacityModel(engines_for(policy))
    arch = resolve_arch(policy.model)
    mix = azure_csv(TRACE)
    probe = diurnal(mix, 8.0, SECONDS, envelope="flat", seed=2)  # the mix's shape (the rate is set below)
    shape = peak_load([r.arrival_s for r in probe], [r.prompt_tokens for r in probe], [r.output_tokens for r in probe])
    rows = []
    for itype in TYPES:
        cap = capacity.capacity(itype, shape, policy.targets)
        for multiple in MULTIPLES:
            rate = cap.rate_rps * multiple
            work = diurnal(mix, rate, SECONDS, envelope="flat", seed=2)
            scaler = Static({itype: 1}, policy.interval_s)
            scaler.initial = {itype: 1}
            sim = simulate(f"{itype.label} at {rate:.1f} req/s", scaler, policy, arch, work, capacity.engines)
            model = capacity.predict(itype, shape.scaled(rate), policy.targets)
            rows.append(
                {
                    "type": itype.label,
                    "capacity_rps": cap.rate_rps,
                    "binding": cap.binding,
                    "multiple": multiple,
                    "rate_rps": rate,
                    "sim_within_slo": sim["slo_attainment"],
                    "sim_ttft_p99_ms": sim["p99_ttft_ms"],
                    "sim_tpot_p99_ms": sim["p99_tpot_ms"],
                    "model_ttft_p99_ms": model.ttft_s * 1e3,
                    "model_tpot_p99_ms": model.tpot_s * 1e3,
                }
            )
            print(
                f"{itype.label:12s} x{multiple:<4g} {rate:6.2f} req/s: simulator {sim['slo_attainment']:.2%} within, "
                f"TTFT p99 {sim['p99_ttft_ms']:.0f} ms (model {model.ttft_s * 1e3:.0f}), "
                f"TPOT p99 {sim['p99_tpot_ms']:.1f} ms (model {model.tpot_s * 1e3:.1f})",
                flush=True,
            )
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "capacity_vs_sim_p99.json").write_text(json.dumps(rows, indent=1) + "\n")
    plot(rows)


def plot(rows: list[dict]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for label in dict.fromkeys(r["type"] for r in rows):
        mine = [r for r in rows if r["type"] == label]
        ax.plot([r["multiple"] for r in mine], [100 * r["sim_within_slo"] for r in mine], marker="o", label=label)
    ax.axhline(99, color="grey", ls=":")
    ax.axvline(1.0, color="grey", lw=0.5)
    ax.set_xlabel("rate / the capacity model's rate for the type")
    ax.set_ylabel("% within both SLOs (simulator)")
    ax.set_title("One warm instance, azure2023_code mix, Poisson, 10 min; TTFT p99 500 ms, TPOT p99 50 ms", fontsize=9)
    ax.legend()
    fig.tight_layout()
    fig.savefig(RESULTS / "capacity_vs_sim_p99.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
