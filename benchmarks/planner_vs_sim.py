"""Does an instance sized by the planner's capacity model meet the SLOs in the simulator?

For a few instance types of Llama-3.1-8B, the capacity model gives the largest
per-instance rate meeting TTFT p90 <= 500 ms and TPOT p90 <= 50 ms. This replays
Poisson traffic of that shape (lognormal prompts, mean 1024, p90 2048; 256 output
tokens) at fractions of that rate through `tessera sim`'s engine model on one
instance (mixed) or a 1:1 prefill/decode pair, and reports the measured percentiles.

    taskset -c 0 .venv/bin/python benchmarks/planner_vs_sim.py    # ~1-2 min, writes results/planner_vs_sim.json
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

from tessera.engine_model.build import build_instances, resolve_arch
from tessera.engine_model.instance import InstanceSpec, find_accelerator
from tessera.placement.pipeline import load_profile
from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import planned_engines
from tessera.planning.fleet import InstanceType
from tessera.planning.load import LoadMix
from tessera.planning.planner import handoff_seconds
from tessera.planning.slo_policy import LatencyTarget, SloPolicy, SloTargets
from tessera.sim.report import summarize_sim
from tessera.sim.simulator import Simulator
from tessera.sim.workloads import SimRequest

MODEL = "llama3-8b"
TARGETS = SloTargets(LatencyTarget(90, 500), LatencyTarget(90, 50))
LOAD = LoadMix(1.0, input_mean=1024, input_p90=2048, output_mean=256)
DURATION_S = 240.0
FRACTIONS = (0.5, 0.8, 0.9, 1.0, 1.1)


def workload(rate: float, seed: int) -> list[SimRequest]:
    rng = random.Random(seed)
    sigma = LOAD.input_sigma()
    mu = math.log(LOAD.input_mean) - sigma * sigma / 2
    t, out = 0.0, []
    while t < DURATION_S:
        t += rng.expovariate(rate)
        prompt = max(1, min(16000, int(rng.lognormvariate(mu, sigma))))
        out.append(SimRequest(f"r{len(out)}", t, prompt, int(LOAD.output_mean)))
    return out


def simulate(specs: list[InstanceSpec], profile: str, rate: float) -> dict[str, float]:
    arch = resolve_arch(MODEL)
    sim = Simulator(arch, MODEL, build_instances(arch, specs), load_profile(profile, seed=0))
    summary = summarize_sim(sim.run(workload(rate, seed=1)), {"ttft": (90, 500), "tpot": (90, 50)}, details=False)
    return {k: round(summary[k], 1) for k in ("p90_ttft_ms", "p90_tpot_ms")} | {"slo_met": summary["slo_met"]}


def main() -> None:
    accels = ("h100-sxm", "a100-80gb-sxm")
    model = CapacityModel(planned_engines(MODEL, [(a, 1) for a in accels]))
    policy = SloPolicy(MODEL, TARGETS, ())
    rows = []
    for accel in accels:
        spec = find_accelerator(accel)
        mixed = model.capacity(InstanceType(accel), LOAD, TARGETS)
        dec = InstanceType(accel, 1, "decode")
        decode = model.capacity(dec, LOAD, TARGETS)
        handoff = handoff_seconds(policy, LOAD, model, InstanceType(accel, 1, "prefill"), {dec: decode})
        prefill = model.capacity(InstanceType(accel, 1, "prefill"), LOAD, TARGETS, handoff_s=handoff)
        pair = min(prefill.rate_rps, decode.rate_rps)
        for label, cap, specs, profile in (
            ("mixed", mixed.rate_rps, [InstanceSpec(spec)], "round_robin"),
            ("1P:1D", pair, [InstanceSpec(spec, 1, "prefill"), InstanceSpec(spec, 1, "decode")], "tessera_disagg"),
        ):
            for f in FRACTIONS:
                got = simulate(specs, profile, cap * f)
                rows.append(
                    {
                        "accelerator": accel,
                        "fleet": label,
                        "capacity_rps": round(cap, 2),
                        "fraction": f,
                        "rate_rps": round(cap * f, 2),
                        **got,
                    }
                )
                print(rows[-1], flush=True)
    out = Path(__file__).parent / "results" / "planner_vs_sim.json"
    out.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
