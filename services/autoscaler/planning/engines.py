"""Engine models for the capacity model, from the files: catalog, vendor table, calibration, config.json.

The one place the planner meets files. It builds each (accelerator, tp) engine the
way the simulator and the scheduler's speed estimate do (tessera.sim.build), so the
planner, `tessera sim` and placement agree on how fast an instance is. CPU
instances serve in float32, as CPU workers do.
"""

from __future__ import annotations

from collections.abc import Iterable

from tessera.catalog import accelerators
from tessera.sim.build import build_instances, resolve_arch
from tessera.sim.instance import ClusterSpecError, InstanceSpec
from services.autoscaler.planning.capacity import EngineModel
from services.autoscaler.planning.slo_policy import SloPolicy


def engine_models(model: str, pairs: Iterable[tuple[str, int]]) -> dict[tuple[str, int], EngineModel]:
    """EngineModel per (catalog accelerator name, tp); pairs the model does not fit on are left out."""
    out: dict[tuple[str, int], EngineModel] = {}
    for name, tp in sorted(set(pairs)):
        accel = accelerators.find(name)
        arch = resolve_arch(model, 4 if accel.vendor == "cpu" else None)
        try:
            [(_, cfg, timer)] = build_instances(arch, [InstanceSpec(accel, tp)])
        except ClusterSpecError:
            continue
        out[(accel.name, tp)] = EngineModel(accel, tp, arch, timer, cfg.num_blocks * cfg.block_size,
                                            cfg.max_num_seqs, cfg.max_num_batched_tokens)
    return out


def engines_for(policy: SloPolicy) -> dict[tuple[str, int], EngineModel]:
    """The engine models every instance type of `policy` needs."""
    return engine_models(policy.model, {(t.accelerator, t.tp) for t in policy.instance_types()})
