"""Engine models for the capacity model, from the files: catalog, vendor table, calibration, config.json.

The one place the planner meets files. It builds each (accelerator, tp) engine the
way the simulator and the scheduler's speed estimate do (tessera.engine_model.build), so the
planner, `tessera sim` and placement agree on how fast an instance is. CPU
instances serve in float32, as CPU workers do.

Each engine runs with the prefill chunk (max_num_batched_tokens) that keeps one step
within the policy's TPOT target (chunking.prefill_chunk), unless the policy's deployment
sets one; the simulator's fleet and the live worker groups launch with the same value
(launch_args_by_type), so what the planner priced is what runs.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from tessera.engine_model.build import build_instances, instance_startup, resolve_arch
from tessera.engine_model.catalog import accelerators
from tessera.engine_model.catalog.vendors import vendor_settings
from tessera.engine_model.instance import DEFAULT_MAX_NUM_BATCHED_TOKENS, ClusterSpecError, InstanceSpec
from tessera.engine_model.perf.step_scale import StepScale, scaled
from tessera.planning.capacity import PlannedEngine
from tessera.planning.chunking import CHUNK_ARG, prefill_chunk
from tessera.planning.fleet import EngineKey, InstanceType
from tessera.planning.slo_policy import SloPolicy


def planned_engines(
    model: str,
    pairs: Iterable[EngineKey],
    tpot_s: float | None = None,
    chunk: int | None = None,
    step_time_scales: Mapping[str, StepScale] | None = None,
) -> dict[EngineKey, PlannedEngine]:
    """PlannedEngine per engine key ((catalog accelerator name, tp), or (name, tp, dp, cp) for DP/EP
    and CP shapes); shapes the model does not fit on (or DP for a dense model) are left out.
    `step_time_scales`: accelerator -> how its steps run against the model on this site's machines
    (tessera calibrate, or what live workers learnt); its engines are timed so, the chunk included.

    `chunk`: every engine's max_num_batched_tokens (per DP rank); else, with `tpot_s`, the largest
    that keeps a step within it (capped by the vendor default); else the vendor default."""
    out: dict[EngineKey, PlannedEngine] = {}
    for key in sorted(set(pairs)):
        name, tp = key[0], key[1]
        dp, cp = (key[2], key[3]) if len(key) == 4 else (1, 1)
        accel = accelerators.find(name)
        arch = resolve_arch(model, 4 if accel.vendor == "cpu" else None)
        try:
            [(spec, cfg, timer)] = build_instances(arch, [InstanceSpec(accel, tp, dp=dp, cp=cp)])
        except ClusterSpecError:
            continue
        timer = scaled(timer, (step_time_scales or {}).get(accel.name, StepScale()))
        # The budget changes nothing else of the engine (not its timer, KV cache or limits).
        # the budget is per DP rank (each rank schedules its own steps); a lone prompt takes one rank
        default = cfg.max_num_batched_tokens // dp
        per_rank = chunk or (prefill_chunk(timer, default, tpot_s) if tpot_s else default)
        out[(accel.name, tp) if len(key) == 2 else (accel.name, tp, dp, cp)] = PlannedEngine(
            accel,
            tp,
            arch,
            timer,
            cfg.num_blocks * cfg.block_size,
            cfg.max_num_seqs,
            per_rank * dp,
            dp,
            instance_startup(arch, spec),
        )
    return out


def engines_for(policy: SloPolicy) -> dict[EngineKey, PlannedEngine]:
    """The engine models every instance type of `policy` needs, each with its prefill chunk."""
    fixed = policy.deployment.engine_args.get(CHUNK_ARG)
    return planned_engines(
        policy.model,
        {t.engine_key for t in policy.instance_types()},
        policy.targets.tpot.seconds,
        int(fixed) if fixed else None,
        policy.step_time_scales(),
    )


def chunk_args(engine: PlannedEngine) -> dict[str, int]:
    """{max_num_batched_tokens: n} where `engine` was priced with a chunk other than its vendor's
    default (what a worker must be launched with to run as priced), else nothing."""
    vendor = vendor_settings(engine.accelerator.vendor).engine_args
    default = int(vendor.get(CHUNK_ARG, DEFAULT_MAX_NUM_BATCHED_TOKENS))
    per_rank = engine.max_num_batched_tokens // engine.dp
    return {} if per_rank == default else {CHUNK_ARG: per_rank}


def launch_args_by_type(engines: Mapping[EngineKey, PlannedEngine]) -> dict[EngineKey, dict[str, int]]:
    """The engine arguments an instance of each (accelerator, tp) launches with, so that it runs as priced."""
    return {key: chunk_args(e) for key, e in engines.items()}


def shape_args(itype: InstanceType) -> dict[str, object]:
    """The group engine args that make a worker the shape the planner priced: tensor_parallel_size;
    for DP/EP shapes data_parallel_size and expert_parallel (worker flags: the worker adds its
    vendor's all2all backend for its role, catalog.expert_parallel); for CP shapes vLLM's
    prefill_context_parallel_size."""
    args: dict[str, object] = {}
    if itype.tp > 1:
        args["tensor_parallel_size"] = itype.tp
    if itype.dp > 1:
        args.update(data_parallel_size=itype.dp, expert_parallel=True)
    if itype.cp > 1:
        args["prefill_context_parallel_size"] = itype.cp
    return args
