"""The desired worker set: groups of identical workers, from flags or a YAML file.

YAML form::

    groups:
      - name: smollm2
        model: smollm2
        replicas: 2
        role: mixed            # mixed | prefill | decode
        engine: vllm           # vllm | sim (a simulated catalog accelerator, no weights)
        accelerator: auto      # sim: h100, mi300x, cpu, ...
        engine_args: {max_model_len: 4096}   # sim also takes sim_arch: llama3-8b
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


class DesiredStateError(ValueError):
    """The desired-state file or flags are malformed."""


@dataclass(frozen=True)
class WorkerGroup:
    name: str
    model: str
    replicas: int = 1
    role: str = "mixed"
    engine: str = "vllm"
    accelerator: str = "auto"
    engine_args: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not NAME.match(self.name):
            raise DesiredStateError(f"group name {self.name!r}: use lowercase letters, digits and dashes")
        if self.replicas < 0:
            raise DesiredStateError(f"group {self.name}: replicas must be >= 0")
        if self.role not in ("mixed", "prefill", "decode"):
            raise DesiredStateError(f"group {self.name}: role must be mixed, prefill or decode")
        if self.engine not in ("vllm", "sim"):
            raise DesiredStateError(f"group {self.name}: engine must be vllm or sim")
        if self.engine == "sim" and self.accelerator == "auto":
            raise DesiredStateError(f"group {self.name}: a sim group names the catalog accelerator it simulates")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WorkerGroup:
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise DesiredStateError(f"unknown group field(s): {', '.join(sorted(unknown))}")
        try:
            return cls(**{**data, "engine_args": dict(data.get("engine_args") or {})})
        except TypeError as exc:
            raise DesiredStateError(str(exc)) from None


def group_name_for(model: str) -> str:
    """A valid group name derived from a model name or path."""
    base = Path(model).name.lower()
    return re.sub(r"[^a-z0-9]+", "-", base).strip("-")[:40] or "workers"


def load_desired(path: str) -> list[WorkerGroup]:
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise DesiredStateError(f"{path}: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("groups"), list):
        raise DesiredStateError(f"{path}: expected a mapping with a 'groups' list")
    groups = [WorkerGroup.from_dict(g) for g in data["groups"]]
    names = [g.name for g in groups]
    if len(set(names)) != len(names):
        raise DesiredStateError(f"{path}: group names must be unique")
    return groups
