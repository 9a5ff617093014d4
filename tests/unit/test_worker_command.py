"""The worker flags of a group's shape: what the local and the Kubernetes actuators both launch."""

from __future__ import annotations

from services.autoscaler.desired import WorkerGroup
from services.autoscaler.worker_command import shape_flags, tensor_parallel
from services.worker.main import add_arguments


def test_the_worker_parses_the_flags_back_to_the_groups_shape():
    import argparse

    group = WorkerGroup(
        name="g",
        model="meta-llama/Llama-3.1-8B-Instruct",
        role="prefill",
        accelerator="h100-sxm",
        engine_args={
            "tensor_parallel_size": 2,
            "expert_parallel": True,
            "data_parallel_size": 1,
            "max_model_len": 8192,
            "compilation_config": {"level": 3},
        },
    )
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(shape_flags(group))
    assert (args.role, args.engine, args.accelerator) == ("prefill", "vllm", "h100-sxm")
    assert args.tensor_parallel_size == 2 and args.expert_parallel and args.data_parallel_size == 1
    assert args.max_model_len == 8192  # a worker flag: the simulated engine reads it too
    assert args.engine_arg == ["compilation_config={level: 3}"]
    assert tensor_parallel(group) == 2


def test_a_false_switch_is_left_out_and_auto_names_no_accelerator():
    group = WorkerGroup(name="g", model="tiny", engine_args={"expert_parallel": False})
    assert shape_flags(group) == ["--role", "mixed", "--engine", "vllm"]
    assert tensor_parallel(group) == 1
