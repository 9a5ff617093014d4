"""What ``tessera up`` checks before it starts anything: GPUs for the workers, the model, the engine args.

A mistake found here costs the user a second and one clear line; found by a worker, it costs a
minute of engine start and a traceback in a log file nobody opened. The GPU plan is plain data
in, plain data out (:func:`plan_gpus`); the other checks look at the file system only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from tessera.runtime.models.registry import ALIASES, BUILTIN

# What one vLLM worker takes of a GPU by default (vLLM's gpu_memory_utilization default), and the
# most that workers sharing one GPU may take together.
VLLM_DEFAULT_GPU_SHARE = 0.9
MAX_SHARED_GPU_FRACTION = 0.9


class PreflightError(ValueError):
    """A reason not to start: the message is what the user reads."""


@dataclass(frozen=True)
class GpuPlan:
    """How the workers share the GPUs: ``gpu_memory_utilization`` to give each (None: leave vLLM's)."""

    workers_per_gpu: int
    gpu_memory_utilization: float | None
    note: str


def plan_gpus(gpus: int, workers: int, tp: int, gpu_memory_utilization: float | None) -> GpuPlan:
    """Fit ``workers`` workers of ``tp`` GPUs each on ``gpus`` GPUs, sharing GPUs by memory if need be.

    Workers that outnumber the GPUs share them (the local actuator gives each worker the least used
    GPUs), each with its slice of memory: ``gpu_memory_utilization`` is split when the user did not set
    it, refused when the user's value cannot fit. A worker wider than the machine (tp > GPUs) cannot
    run at all.
    """
    if tp > gpus:
        raise PreflightError(
            f"tensor parallel size {tp} needs {tp} GPUs per worker; this machine has {gpus} GPU{'s' * (gpus != 1)}"
        )
    per_gpu = -(-workers * tp // gpus)  # ceil: the busiest GPU's share of workers
    if per_gpu <= 1:
        return GpuPlan(1, gpu_memory_utilization, f"{workers} worker(s) x {tp} GPU(s) on {gpus} GPU(s)")
    fits = round(MAX_SHARED_GPU_FRACTION / per_gpu, 2)
    if gpu_memory_utilization is None:
        return GpuPlan(
            per_gpu,
            fits,
            f"{workers} workers x {tp} GPU(s) on {gpus} GPU(s): {per_gpu} workers per GPU, "
            f"gpu-memory-utilization {fits} each",
        )
    if gpu_memory_utilization * per_gpu > MAX_SHARED_GPU_FRACTION + 1e-9:
        raise PreflightError(
            f"{workers} workers x {tp} GPU(s) on {gpus} GPU{'s' * (gpus != 1)} put {per_gpu} workers on a GPU: "
            f"--gpu-memory-utilization {gpu_memory_utilization} each would need "
            f"{gpu_memory_utilization * per_gpu:.2f} of its memory; use at most {fits}, or fewer --workers"
        )
    return GpuPlan(per_gpu, gpu_memory_utilization, f"{per_gpu} workers per GPU, {gpu_memory_utilization} each")


def check_model(model: str) -> None:
    """Refuse a model that names a local folder which is not there or holds no model.

    A built-in name and a hub id (``org/name``, loaded by the engine) pass: neither can be checked
    here without the network.
    """
    if ALIASES.get(model, model) in BUILTIN:
        return
    path = Path(model).expanduser()
    looks_local = model.startswith(("/", "./", "../", "~")) or path.exists() or model.count("/") > 1
    if not looks_local:
        return
    if not path.exists():
        raise PreflightError(f"model folder {model} does not exist")
    if not path.is_dir():
        raise PreflightError(f"model {model} is a file; expected a model folder (config.json, weights, tokenizer)")
    if not (path / "config.json").is_file():
        raise PreflightError(f"model folder {model} has no config.json")


def check_engine_args(keys: list[str], known: frozenset[str], source: str) -> None:
    """Refuse the engine-argument keys no engine takes, by name."""
    unknown = sorted({k for k in keys if k.replace("-", "_") not in known})
    if unknown:
        raise PreflightError(
            f"unknown engine argument{'s' * (len(unknown) > 1)} {', '.join(unknown)} (the names are vLLM's EngineArgs "
            f"fields, from {source})"
        )
