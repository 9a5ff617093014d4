"""What the planning loop sees each interval, and what it answers, as plain records and JSON.

The live autoscaler builds an `Observation` from the routers' metrics and the workers registered
in etcd; the simulator builds one from its request records and instances. Everything the loop
decides from is in it, so a recorded sequence of observations (JSON lines, `to_json`) replays
through any driver of the loop to the same decisions: the parity test does exactly that.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from tessera.planning.fleet import InstanceType
from tessera.planning.forecast import IntervalStats


@dataclass(frozen=True)
class TypeObservation:
    """One instance type over the interval: instances ready and still starting, the requests whose
    work it did (`served`: prompts on a prefill type, answers on a decode type, both on a mixed
    one), and the latency percentiles it delivered at the policy's percentiles (None: not
    measured), each with the number of samples behind it."""

    ready: int = 0
    starting: int = 0
    served: int = 0
    ttft_s: float | None = None
    ttft_samples: int = 0
    tpot_s: float | None = None
    tpot_samples: int = 0


@dataclass(frozen=True)
class Observation:
    """One planning interval: when it ended, the requests that arrived in it and their shape, the
    highest arrival rate over the policy's peak window inside it (None: not measured), the
    requests held at the end because no instance could take them, and the fleet per type."""

    now_s: float
    arrivals: IntervalStats
    peak_rps: float | None = None
    held: int = 0
    fleet: Mapping[InstanceType, TypeObservation] = field(default_factory=dict)

    @property
    def interval_s(self) -> float:
        return self.arrivals.duration_s


def parse_label(label: str) -> InstanceType:
    """The inverse of InstanceType.label: `a100-80gb-sxm-tp2:decode` -> InstanceType(a100-80gb-sxm, 2, decode)."""
    name, _, role = label.partition(":")
    base, sep, tp = name.rpartition("-tp")
    if sep and tp.isdigit():
        return InstanceType(base, int(tp), role or "mixed")
    return InstanceType(name, 1, role or "mixed")


def _number(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else value


def observation_to_json(obs: Observation) -> dict[str, Any]:
    a = obs.arrivals
    return {
        "now_s": obs.now_s,
        "arrivals": {
            "duration_s": a.duration_s,
            "requests": a.requests,
            "input_mean": a.input_mean,
            "input_p90": a.input_p90,
            "output_mean": a.output_mean,
            "prefix_reuse": a.prefix_reuse,
            "input_p99": a.input_p99,
            "output_p90": a.output_p90,
        },
        "peak_rps": _number(obs.peak_rps),
        "held": obs.held,
        "fleet": {
            t.label: {
                "ready": o.ready,
                "starting": o.starting,
                "served": o.served,
                "ttft_s": _number(o.ttft_s),
                "ttft_samples": o.ttft_samples,
                "tpot_s": _number(o.tpot_s),
                "tpot_samples": o.tpot_samples,
            }
            for t, o in sorted(obs.fleet.items())
        },
    }


def observation_from_json(doc: Mapping[str, Any]) -> Observation:
    a = doc["arrivals"]
    return Observation(
        float(doc["now_s"]),
        IntervalStats(
            float(a["duration_s"]),
            int(a["requests"]),
            a.get("input_mean"),
            a.get("input_p90"),
            a.get("output_mean"),
            a.get("prefix_reuse"),
            a.get("input_p99"),
            a.get("output_p90"),
        ),
        doc.get("peak_rps"),
        int(doc.get("held", 0)),
        {parse_label(label): TypeObservation(**o) for label, o in doc.get("fleet", {}).items()},
    )
