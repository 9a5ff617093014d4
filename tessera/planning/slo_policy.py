"""A model's SLO policy: latency targets, the accelerators on offer, and the planner's knobs.

One YAML document per model, kept in etcd under /tessera/v1/config/ and hot-reloaded
(the service's job); this module only turns text into a frozen record and back, so a
bad edit is refused with the key it is about rather than half-applied::

    model: llama3-8b
    targets:
      ttft: {percentile: 90, ms: 500}      # time to first token, p90 <= 500 ms
      tpot: {percentile: 90, ms: 50}       # time per output token
    inventory:                             # catalog name or prefix: devices free for this model
      h100: {free: 16}                     # cost_per_hour defaults to the catalog's price
      a100: {free: 8, cost_per_hour: 1.50}
      cpu: {free: 2, step_time_scale: {prefill: 1.05, decode: 0.93}}   # this machine, as calibrated
      l40s: 4                              # shorthand for {free: 4}
    roles: [mixed, prefill, decode]        # prefill and decode come together (a P/D pool)
    tp: [1, 2]                             # tensor-parallel degrees to consider
    dp: [1, 8, 16]                         # MoE only: data-parallel attention ranks (EP over dp x tp devices)
    cp: [1, 4]                             # prefill context-parallel ranks (prefill instances only)
    sleep_mode: false                      # keep one sleeping instance per planned type warm (billed)
    instances: {min: 0, max: 32}
    headroom: 0.1                          # plan for forecast * (1 + headroom)
    interval_s: 30                         # planning interval
    scale_to_zero_idle_s: 600              # no request for this long and min is 0: run nothing
    hysteresis: {scale_down_stable_intervals: 10, scale_down_cooldown_s: 300, max_scale_down_fraction: 0.5,
                 swap_min_saving: 0.15}  # swap to a cheaper type (make before break) for >= 15% less
    forecast: {alpha: 0.5, beta: 0.3, burst_window: 2, length_alpha: 0.3, horizon: 1, peak_window_s: 10,
               burst_headroom: 1.5}     # a burst beyond Poisson noise is planned at 1.5x its peak
    corrections: {alpha: 0.3, minimum: 0.5, maximum: 3, max_step_ratio: 2, min_samples: 20}
    deployment:                            # how the live autoscaler launches instances (optional)
      served_model: Llama-3.1-8B           # the name clients ask for (default: model)
      worker_model: meta-llama/Llama-3.1-8B-Instruct   # what workers load (default: model)
      engine: vllm                         # vllm | sim (simulated accelerators, for trials)
      engine_args: {max_model_len: 8192}   # per worker (sim: sim_arch too)

`free` counts devices this model may hold, its own running instances included.
`model` is what the capacity model reads: a known architecture (llama3-8b, ...) or
a folder with a config.json. `step_time_scale` is how much slower (>1) or faster this
machine's steps run than the performance model says, as `tessera calibrate` measures it or live
workers learn it (`tessera status`): the planner prices that accelerator's instances at that speed.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

import yaml

from tessera.engine_model.catalog import accelerators
from tessera.engine_model.perf.step_scale import PLAUSIBLE, StepScale
from tessera.planning.chunking import CHUNK_ARG
from tessera.planning.corrections import CorrectionParams
from tessera.planning.fleet import ROLES, InstanceType
from tessera.planning.forecast import ForecastParams
from tessera.planning.hysteresis import HysteresisParams


class SloPolicyError(ValueError):
    """A policy document that cannot be used; the message names the key."""


@dataclass(frozen=True)
class LatencyTarget:
    """`percentile` of a latency must stay within `ms` milliseconds."""

    percentile: float
    ms: float

    @property
    def seconds(self) -> float:
        return self.ms / 1e3


@dataclass(frozen=True)
class SloTargets:
    ttft: LatencyTarget
    tpot: LatencyTarget


@dataclass(frozen=True)
class InventoryItem:
    """Devices of one catalog accelerator (canonical name) free for this model, and their price per device-hour."""

    accelerator: str
    free: int
    cost_per_hour: float
    step_time_scale: StepScale = StepScale()  # this machine's steps against the model (tessera calibrate)


@dataclass(frozen=True)
class Deployment:
    """How the live autoscaler turns a plan's instance types into worker groups."""

    served_model: str = ""  # "": the policy's model
    worker_model: str = ""  # "": the policy's model
    engine: str = "vllm"
    engine_args: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class SloPolicy:
    model: str
    targets: SloTargets
    inventory: tuple[InventoryItem, ...]
    roles: tuple[str, ...] = ROLES
    tp: tuple[int, ...] = (1,)
    dp: tuple[int, ...] = (1,)
    cp: tuple[int, ...] = (1,)
    sleep_mode: bool = False
    min_instances: int = 0
    max_instances: int = 64
    headroom: float = 0.1
    interval_s: float = 30.0
    scale_to_zero_idle_s: float = 600.0
    hysteresis: HysteresisParams = field(default_factory=HysteresisParams)
    forecast: ForecastParams = field(default_factory=ForecastParams)
    corrections: CorrectionParams = field(default_factory=CorrectionParams)
    deployment: Deployment = field(default_factory=Deployment)

    @property
    def served_model(self) -> str:
        return self.deployment.served_model or self.model

    @property
    def worker_model(self) -> str:
        return self.deployment.worker_model or self.model

    def __post_init__(self) -> None:
        if ("prefill" in self.roles) != ("decode" in self.roles):
            raise SloPolicyError(
                "roles: prefill and decode go together (a prefill instance hands its requests to a decode instance)"
            )
        if self.min_instances > self.max_instances:
            raise SloPolicyError(f"instances.min ({self.min_instances}) exceeds instances.max ({self.max_instances})")
        kinds = [item.accelerator for item in self.inventory]
        if len(set(kinds)) != len(kinds):
            raise SloPolicyError(f"inventory: an accelerator is listed twice ({', '.join(kinds)})")

    def instance_types(self) -> list[InstanceType]:
        """Every (accelerator, tp, dp, cp, role) the planner may choose, before asking which ones fit
        (DP shapes of a dense model have no engine and drop out there); CP only for prefill."""
        return [
            InstanceType(item.accelerator, tp, role, dp, cp)
            for item in self.inventory
            for tp in self.tp
            for dp in self.dp
            for cp in self.cp
            for role in self.roles
            if tp * dp * cp <= item.free and (cp == 1 or (role == "prefill" and dp == 1))
        ]

    def free_devices(self) -> dict[str, int]:
        return {item.accelerator: item.free for item in self.inventory}

    def step_time_scales(self) -> dict[str, StepScale]:
        """Accelerator -> how its steps run against the performance model (only those not as modelled)."""
        return {i.accelerator: i.step_time_scale for i in self.inventory if i.step_time_scale != StepScale()}

    def cost_per_device_hour(self, accelerator: str) -> float:
        return next(item.cost_per_hour for item in self.inventory if item.accelerator == accelerator)

    def fleet_cost_per_hour(self, counts: Mapping[InstanceType, int]) -> float:
        """What a fleet costs an hour at the inventory's prices."""
        return sum(n * t.devices * self.cost_per_device_hour(t.accelerator) for t, n in counts.items())

    def to_dict(self) -> dict[str, Any]:
        """The canonical document: catalog names resolved, every default written out."""
        return {
            "model": self.model,
            "targets": {
                name: {"percentile": _plain(t.percentile), "ms": _plain(t.ms)}
                for name, t in (("ttft", self.targets.ttft), ("tpot", self.targets.tpot))
            },
            "inventory": {i.accelerator: _inventory_row(i) for i in self.inventory},
            "roles": list(self.roles),
            "tp": list(self.tp),
            "dp": list(self.dp),
            "cp": list(self.cp),
            "sleep_mode": self.sleep_mode,
            "instances": {"min": self.min_instances, "max": self.max_instances},
            "headroom": _plain(self.headroom),
            "interval_s": _plain(self.interval_s),
            "scale_to_zero_idle_s": _plain(self.scale_to_zero_idle_s),
            "hysteresis": {k: _plain(v) for k, v in asdict(self.hysteresis).items()},
            "forecast": {k: _plain(v) for k, v in asdict(self.forecast).items()},
            "corrections": {k: _plain(v) for k, v in asdict(self.corrections).items()},
            "deployment": {k: v for k, v in asdict(self.deployment).items() if v or k == "engine"},
        }

    def to_yaml(self) -> str:
        """YAML that parse_slo_policy reads back to an equal policy."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False, default_flow_style=None)


def _plain(x: float) -> float | int:
    return int(x) if float(x).is_integer() else x


# ---- parsing ----------------------------------------------------------------------------------

_TOP = (
    "model",
    "targets",
    "inventory",
    "roles",
    "tp",
    "dp",
    "cp",
    "sleep_mode",
    "instances",
    "headroom",
    "interval_s",
    "scale_to_zero_idle_s",
    "hysteresis",
    "forecast",
    "corrections",
    "deployment",
)
# (low, high, low is open, integer) per knob of the nested sections
_KNOBS: dict[str, tuple[float, float, bool, bool]] = {
    "scale_down_stable_intervals": (1, 1000, False, True),
    "scale_down_cooldown_s": (0, 86400, False, False),
    "max_scale_down_fraction": (0, 1, True, False),
    "swap_min_saving": (0, 1, False, False),
    "alpha": (0, 1, True, False),
    "beta": (0, 1, False, False),
    "burst_window": (1, 1000, False, True),
    "length_alpha": (0, 1, True, False),
    "horizon": (0, 100, False, False),
    "minimum": (0, 1, True, False),
    "maximum": (1, 100, False, False),
    "max_step_ratio": (1, 100, False, False),
    "min_samples": (0, 1e6, False, True),
    "peak_window_s": (0, 86400, False, False),
    "burst_headroom": (1, 100, False, False),
}


def _mapping(value: Any, path: str, known: tuple[str, ...], required: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise SloPolicyError(f"{path}: expected a mapping, got {type(value).__name__}")
    for key in value:
        if key not in known:
            raise SloPolicyError(f"{_join(path, key)}: unknown key; known: {', '.join(known)}")
    for key in required:
        if key not in value:
            raise SloPolicyError(f"{_join(path, key)}: missing")
    return value


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)


def _number(
    value: Any, path: str, low: float, high: float, low_open: bool = False, integer: bool = False
) -> float | int:
    kind = "a whole number" if integer else "a number"
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not math.isfinite(value)  # NaN passes every comparison below
        or (integer and not float(value).is_integer())
    ):
        raise SloPolicyError(f"{path}: expected {kind}, got {value!r}")
    too_low = value <= low if low_open else value < low
    if too_low or value > high:
        bracket = "(" if low_open else "["
        raise SloPolicyError(f"{path}: {value!r} is outside {bracket}{low:g}, {high:g}]")
    return int(value) if integer else float(value)


def _target(value: Any, path: str) -> LatencyTarget:
    data = _mapping(value, path, ("percentile", "ms"), ("percentile", "ms"))
    return LatencyTarget(
        _number(data["percentile"], f"{path}.percentile", 0, 99.99, low_open=True),
        _number(data["ms"], f"{path}.ms", 0, 3.6e6, low_open=True),
    )


def _inventory(value: Any) -> tuple[InventoryItem, ...]:
    if not isinstance(value, dict) or not value:
        raise SloPolicyError("inventory: expected a non-empty mapping of accelerator -> {free, cost_per_hour}")
    items = []
    for name, row in value.items():
        path = f"inventory.{name}"
        try:
            accel = accelerators.find(str(name))
        except ValueError as exc:
            raise SloPolicyError(f"{path}: {exc}") from None
        row = {"free": row} if not isinstance(row, dict) else row
        data = _mapping(row, path, ("free", "cost_per_hour", "step_time_scale"), ("free",))
        cost = data.get("cost_per_hour", accel.cost_per_hour_usd)
        scale = data.get("step_time_scale")
        items.append(
            InventoryItem(
                accel.name,
                int(_number(data["free"], f"{path}.free", 0, 1e6, integer=True)),
                _number(cost, f"{path}.cost_per_hour", 0, 1e4),
                StepScale() if scale is None else _step_time_scale(scale, f"{path}.step_time_scale"),
            )
        )
    return tuple(items)


def _inventory_row(item: InventoryItem) -> dict[str, Any]:
    row: dict[str, Any] = {"free": item.free, "cost_per_hour": _plain(item.cost_per_hour)}
    if item.step_time_scale != StepScale():
        row["step_time_scale"] = {
            "prefill": _plain(item.step_time_scale.prefill),
            "decode": _plain(item.step_time_scale.decode),
        }
    return row


def _step_time_scale(value: Any, path: str) -> StepScale:
    data = _mapping(value, path, ("prefill", "decode"))
    low, high = PLAUSIBLE
    return StepScale(**{k: _number(v, f"{path}.{k}", low, high) for k, v in data.items()})


def _list(value: Any, path: str) -> list[Any]:
    if not isinstance(value, list) or not value:
        raise SloPolicyError(f"{path}: expected a non-empty list, got {value!r}")
    return value


def _roles(value: Any) -> tuple[str, ...]:
    roles = _list(value, "roles")
    for role in roles:
        if role not in ROLES:
            raise SloPolicyError(f"roles: {role!r} is not a role; roles: {', '.join(ROLES)}")
    return tuple(r for r in ROLES if r in roles)


def _knobs(value: Any, path: str, cls: type) -> Any:
    names = tuple(f.name for f in fields(cls))
    data = _mapping(value or {}, path, names)
    return cls(**{k: _number(v, f"{path}.{k}", *_KNOBS[k]) for k, v in data.items()})


class _UniqueKeys(yaml.SafeLoader):
    """A YAML loader that refuses a key given twice (plain YAML keeps the last one, silently)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                raise SloPolicyError(f"{key}: given twice (line {key_node.start_mark.line + 1})")
            seen.add(key)
        return super().construct_mapping(node, deep)


def parse_slo_policy(text: str) -> SloPolicy:
    """The policy in `text` (YAML), or SloPolicyError naming the first bad key."""
    try:
        data = yaml.load(text, Loader=_UniqueKeys)
    except yaml.YAMLError as exc:
        raise SloPolicyError(f"not YAML: {exc}") from None
    data = _mapping(data, "", _TOP, ("model", "targets", "inventory"))
    if not isinstance(data["model"], str) or not data["model"]:
        raise SloPolicyError(f"model: expected a model name, got {data['model']!r}")
    targets = _mapping(data["targets"], "targets", ("ttft", "tpot"), ("ttft", "tpot"))
    instances = _mapping(data.get("instances") or {}, "instances", ("min", "max"))
    defaults = SloPolicy(data["model"], SloTargets(LatencyTarget(90, 1), LatencyTarget(90, 1)), ())
    tps = tuple(sorted({int(_number(t, "tp", 1, 64, integer=True)) for t in _list(data.get("tp", [1]), "tp")}))
    dps = tuple(sorted({int(_number(d, "dp", 1, 256, integer=True)) for d in _list(data.get("dp", [1]), "dp")}))
    cps = tuple(sorted({int(_number(c, "cp", 1, 64, integer=True)) for c in _list(data.get("cp", [1]), "cp")}))
    sleep = data.get("sleep_mode", False)
    if not isinstance(sleep, bool):
        raise SloPolicyError(f"sleep_mode: expected true or false, got {sleep!r}")
    return SloPolicy(
        model=data["model"],
        targets=SloTargets(_target(targets["ttft"], "targets.ttft"), _target(targets["tpot"], "targets.tpot")),
        inventory=_inventory(data["inventory"]),
        roles=_roles(data.get("roles", list(ROLES))),
        tp=tps,
        dp=dps,
        cp=cps,
        sleep_mode=sleep,
        min_instances=int(_number(instances.get("min", defaults.min_instances), "instances.min", 0, 1e5, integer=True)),
        max_instances=int(_number(instances.get("max", defaults.max_instances), "instances.max", 1, 1e5, integer=True)),
        headroom=_number(data.get("headroom", defaults.headroom), "headroom", 0, 10),
        interval_s=_number(data.get("interval_s", defaults.interval_s), "interval_s", 0, 86400, low_open=True),
        scale_to_zero_idle_s=_number(
            data.get("scale_to_zero_idle_s", defaults.scale_to_zero_idle_s), "scale_to_zero_idle_s", 0, 1e7
        ),
        hysteresis=_knobs(data.get("hysteresis"), "hysteresis", HysteresisParams),
        forecast=_knobs(data.get("forecast"), "forecast", ForecastParams),
        corrections=_knobs(data.get("corrections"), "corrections", CorrectionParams),
        deployment=_deployment(data.get("deployment") or {}),
    )


def _deployment(value: Any) -> Deployment:
    data = _mapping(value, "deployment", ("served_model", "worker_model", "engine", "engine_args"))
    for key in ("served_model", "worker_model"):
        if key in data and (not isinstance(data[key], str) or not data[key]):
            raise SloPolicyError(f"deployment.{key}: expected a name, got {data[key]!r}")
    engine = data.get("engine", "vllm")
    if engine not in ("vllm", "sim"):
        raise SloPolicyError(f"deployment.engine: vllm or sim, not {engine!r}")
    args = data.get("engine_args") or {}
    if not isinstance(args, dict):
        raise SloPolicyError("deployment.engine_args: expected a mapping of vLLM engine arguments")
    if CHUNK_ARG in args:  # the planner prices engines with it (planning/engines.py)
        _number(args[CHUNK_ARG], f"deployment.engine_args.{CHUNK_ARG}", 1, 1e7, integer=True)
    return Deployment(data.get("served_model", ""), data.get("worker_model", ""), engine, dict(args))
