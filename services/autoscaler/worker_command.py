"""The worker flags that carry a group's shape: one rule for every actuator that starts workers.

The local actuator appends them to a process's argv, the Kubernetes actuator to a Deployment's
container args; both must launch the same worker for the same group, so the rule lives here.
"""

from __future__ import annotations

import yaml

from services.autoscaler.desired import WorkerGroup

# Group engine_args that are worker flags: the worker needs them too (its identity, its simulator).
WORKER_FLAGS = {
    "tensor_parallel_size": "--tensor-parallel-size",
    "sim_arch": "--sim-arch",
    "sim_step_time_scale": "--sim-step-time-scale",
    "served_model_name": "--served-model-name",
    "max_model_len": "--max-model-len",  # the simulated engine reads only the flag
    "kv_connector": "--kv-connector",
    "data_parallel_size": "--data-parallel-size",
    "expert_parallel": "--expert-parallel",
    "stall_timeout_s": "--stall-timeout-s",  # how long a hung engine keeps its streams (see worker --help)
}


def engine_value(value: object) -> str:
    """A YAML scalar or flow collection, as ``--engine-arg KEY=VALUE`` reads it back."""
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()


def shape_flags(group: WorkerGroup) -> list[str]:
    """Role, engine, accelerator and engine arguments of ``group`` as ``tessera worker`` flags."""
    flags = ["--role", group.role, "--engine", group.engine]
    if group.accelerator != "auto":
        flags += ["--accelerator", group.accelerator]
    for key, value in group.engine_args.items():
        if key in WORKER_FLAGS and isinstance(value, bool):  # a switch: present or not
            flags += [WORKER_FLAGS[key]] if value else []
        elif key in WORKER_FLAGS:  # settings the worker itself reads, not only its engine
            flags += [WORKER_FLAGS[key], str(value)]
        else:
            flags += ["--engine-arg", f"{key}={engine_value(value)}"]
    return flags


def tensor_parallel(group: WorkerGroup) -> int:
    """Devices one instance of ``group`` spans (its ``tensor_parallel_size``; 1 without one)."""
    return int(group.engine_args.get("tensor_parallel_size", 1))
