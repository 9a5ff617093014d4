"""Replay a live autoscaler's recorded intervals through the simulator's driver of the planning loop.

The autoscaler service, run with `--record-decisions FILE`, appends JSON lines: each SLO policy as
it loads (`{"policy", "yaml"}`) and, per model and interval, the Observation its loop was given and
the decision it made (`{"model", "observation", "decision", ...}`). `replay` feeds the same
observations to the loop `tessera sim --autoscaler tessera` runs (built by
`tessera.sim.autoscalers.build_autoscaler`, from nothing, as the service starts) and returns what it
decides beside what the service decided: the parity test asserts they are equal.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from tessera.planning.capacity import CapacityModel
from tessera.planning.engines import engines_for
from tessera.planning.load import LoadMix
from tessera.planning.observation import observation_from_json
from tessera.planning.slo_policy import parse_slo_policy
from tessera.sim.autoscalers import PlannerLoop, ScalingDecision, build_autoscaler


@dataclass(frozen=True)
class Replayed:
    """One recorded interval: the model, what the service decided, what the simulator's loop decided."""

    model: str
    recorded: dict[str, Any]
    replayed: dict[str, Any]


def as_recorded(d: ScalingDecision) -> dict[str, Any]:
    """A simulator decision in the recording's terms (tessera.planning.loop.decision_to_json)."""
    return {
        "counts": {t.label: n for t, n in sorted(d.counts.items()) if n},
        "reasons": list(d.reasons),
        "forecast_rps": d.forecast_rps,
        "plan": d.plan,
        "corrections": {label: list(f) for label, f in d.factors.items()},
    }


def replay(lines: Iterable[dict[str, Any]]) -> list[Replayed]:
    """Each recorded decision beside the simulator's loop's decision for the same observation."""
    loops: dict[str, PlannerLoop] = {}
    out = []
    for line in lines:
        if "policy" in line:
            policy = parse_slo_policy(line["yaml"])
            scaler = build_autoscaler(
                "tessera", policy, CapacityModel(engines_for(policy)), LoadMix(0.0), warm_start=False
            )
            if not isinstance(scaler, PlannerLoop):
                raise TypeError(f"the simulator's tessera autoscaler is a {type(scaler).__name__}, not a PlannerLoop")
            if line["policy"] in loops:  # a reloaded policy keeps the loop's state, as the service does
                scaler.loop.state = loops[line["policy"]].loop.state
            loops[line["policy"]] = scaler
            continue
        decision = loops[line["model"]].decide_planned(observation_from_json(line["observation"]))
        recorded = {k: v for k, v in line["decision"].items() if k != "changed"}
        out.append(Replayed(line["model"], recorded, as_recorded(decision)))
    return out
