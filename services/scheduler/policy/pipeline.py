"""A placement profile: filters, weighted scorers and a picker, built from YAML."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from services.scheduler.policy.filters import FILTERS, Filter
from services.scheduler.policy.pickers import PICKERS
from services.scheduler.policy.scorers import SCORERS, Scorer
from services.scheduler.policy.snapshot import Decision, RequestInfo, WorkerSnapshot

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


class ProfileError(ValueError):
    """A profile names an unknown filter, scorer or picker, or is malformed."""


@dataclass
class Pipeline:
    name: str
    filters: list[tuple[str, Filter]]
    scorers: list[tuple[str, Scorer, float]]
    picker: Any
    source: dict[str, Any] = field(default_factory=dict)

    def place(self, req: RequestInfo, workers: list[WorkerSnapshot]) -> Decision:
        candidates = workers
        for name, flt in self.filters:
            candidates = flt(req, candidates)
            if not candidates:
                return Decision(worker=None, candidates=0, reason=f"no worker passed the {name} filter")
        totals = [0.0] * len(candidates)
        for _, scorer, weight in self.scorers:
            for i, s in enumerate(scorer(req, candidates)):
                totals[i] += weight * s
        chosen = self.picker(candidates, totals)
        return Decision(
            worker=chosen,
            candidates=len(candidates),
            scores={w.id: t for w, t in zip(candidates, totals)},
        )


def build_pipeline(spec: dict[str, Any], seed: int | None = None) -> Pipeline:
    """Build from a parsed profile; unknown names raise ProfileError naming what exists."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ProfileError("a profile is a mapping with at least a name")
    filters = []
    for name in spec.get("filters", []):
        if name not in FILTERS:
            raise ProfileError(f"unknown filter {name!r}; known: {', '.join(FILTERS)}")
        filters.append((name, FILTERS[name]))
    scorers = []
    for item in spec.get("scorers", []):
        name, weight = (item, 1.0) if isinstance(item, str) else (item.get("name"), float(item.get("weight", 1.0)))
        if name not in SCORERS:
            raise ProfileError(f"unknown scorer {name!r}; known: {', '.join(SCORERS)}")
        scorers.append((name, SCORERS[name], weight))
    picker_spec = spec.get("picker", "max_score")
    picker_name = picker_spec if isinstance(picker_spec, str) else picker_spec.get("name", "max_score")
    if picker_name not in PICKERS:
        raise ProfileError(f"unknown picker {picker_name!r}; known: {', '.join(PICKERS)}")
    return Pipeline(spec["name"], filters, scorers, PICKERS[picker_name](seed), spec)


def load_profile(name_or_path: str, seed: int | None = None) -> Pipeline:
    """A built-in profile by name (profiles/<name>.yaml) or a YAML file path."""
    path = Path(name_or_path)
    if not path.is_file():
        path = PROFILES_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in PROFILES_DIR.glob("*.yaml")))
        raise ProfileError(f"no placement profile {name_or_path!r}; built-in: {known}")
    try:
        spec = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ProfileError(f"{path}: {exc}") from None
    return build_pipeline(spec, seed)
