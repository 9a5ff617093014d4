"""Assemble simulated instances from the catalog, the vendor table and the calibration file.

The one place the simulator's pure parts meet files: the CLI (`tessera sim`)
and the sim worker both call these, so they build identical engines.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from tessera.engine_model.batching import EngineConfig
from tessera.engine_model.catalog.vendors import vendor_settings
from tessera.engine_model.instance import InstanceSpec, engine_config, parallelism, step_timer
from tessera.engine_model.perf.efficiency import efficiency_for, efficiency_table, read_calibration_file
from tessera.engine_model.perf.model_arch import ModelArch, arch_named
from tessera.engine_model.perf.step_timer import StepTimer
from tessera.engine_model.startup import StartupTimes, startup_times


def resolve_arch(name_or_folder: str, dtype_bytes: int | None = None) -> ModelArch:
    """A known architecture name (llama3-8b, ...) or a model folder holding a HuggingFace config.json."""
    path = Path(name_or_folder).expanduser()
    if (path / "config.json").is_file():
        return ModelArch.from_hf_config(
            json.loads((path / "config.json").read_text()), name=path.name, dtype_bytes=dtype_bytes
        )
    arch = arch_named(name_or_folder)
    return replace(arch, dtype_bytes=dtype_bytes) if dtype_bytes else arch


def worker_step_timer(model_path: str, accelerator: str, tensor_parallel: int) -> StepTimer:
    """The performance model of one live worker: its model folder on its catalog accelerator, with the
    calibrated factors (CPU workers serve in float32). Raises ValueError, OSError or KeyError where the
    architecture or the accelerator is unknown; the scheduler and the worker each say so their way."""
    from tessera.engine_model.catalog import accelerators

    accel = accelerators.find(accelerator)
    arch = resolve_arch(model_path, 4 if accel.vendor == "cpu" else None)
    table = efficiency_table(read_calibration_file())
    return step_timer(arch, InstanceSpec(accel, tensor_parallel), efficiency_for(accel.name, table))


def context_length(model_folder: str) -> int | None:
    """The context a model was trained for (config.json's max_position_embeddings), as vLLM defaults to."""
    path = Path(model_folder) / "config.json"
    if not path.is_file():
        return None
    cfg = json.loads(path.read_text())
    value = (cfg.get("text_config") or cfg).get("max_position_embeddings")
    return int(value) if value else None


def build_instances(
    arch: ModelArch,
    specs: list[InstanceSpec],
    max_model_len: int | None = None,
    env: Mapping[str, str] | None = None,
    engine_args: Mapping[str, object] | None = None,
) -> list[tuple[InstanceSpec, EngineConfig, StepTimer]]:
    """Engine limits and a step timer per instance; instances of one kind share the timer's cache.

    `env` overrides the vendor table's engine environment (a worker passes its own, as
    a real vLLM worker would read VLLM_CPU_KVCACHE_SPACE from it); `engine_args` override
    its engine arguments (max_num_seqs, max_num_batched_tokens, block_size, ...), as
    --engine-arg does for vLLM."""
    table = efficiency_table(read_calibration_file())
    built: dict[str, tuple[EngineConfig, StepTimer]] = {}
    out = []
    for spec in specs:
        if spec.label not in built:
            vendor = vendor_settings(spec.accelerator.vendor)
            vendor_env = {**vendor.env, **{k: v for k, v in (env or {}).items() if k in vendor.env}}
            cfg = engine_config(arch, spec, {**vendor.engine_args, **(engine_args or {})}, vendor_env, max_model_len)
            built[spec.label] = (cfg, step_timer(arch, spec, efficiency_for(spec.accelerator.name, table)))
        out.append((spec, *built[spec.label]))
    return out


def instance_startup(arch: ModelArch, spec: InstanceSpec) -> StartupTimes:
    """Cold-start and wake-up times of one instance: its weights over the catalog's load and host
    links, plus its vendor's engine warm-up (vendors.yaml warmup_s)."""
    warmup = vendor_settings(spec.accelerator.vendor).warmup_s
    return startup_times(arch, spec.accelerator, parallelism(arch, spec), warmup)
