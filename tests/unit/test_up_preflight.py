"""`tessera up`'s preflight (GPU plan, model folder, engine-argument names) and its --config file."""

from __future__ import annotations

import argparse

import pytest

from tessera.cli.config_file import ConfigFileError, config_defaults
from tessera.cli.engine_arg_names import FALLBACK, fields_of_class
from tessera.cli.preflight import PreflightError, check_engine_args, check_model, plan_gpus


def test_workers_that_fit_the_gpus_keep_vllms_memory_share():
    plan = plan_gpus(gpus=8, workers=4, tp=2, gpu_memory_utilization=None)
    assert plan.workers_per_gpu == 1 and plan.gpu_memory_utilization is None


def test_workers_sharing_a_gpu_split_its_memory():
    assert plan_gpus(gpus=1, workers=2, tp=1, gpu_memory_utilization=None).gpu_memory_utilization == 0.45
    assert plan_gpus(gpus=2, workers=3, tp=1, gpu_memory_utilization=None).gpu_memory_utilization == 0.45  # 2 on one
    assert plan_gpus(gpus=1, workers=2, tp=1, gpu_memory_utilization=0.4).gpu_memory_utilization == 0.4


def test_a_users_share_that_cannot_fit_is_refused_with_the_gpu_count():
    with pytest.raises(PreflightError, match=r"on 1 GPU put 2 workers on a GPU.*use at most 0\.45"):
        plan_gpus(gpus=1, workers=2, tp=1, gpu_memory_utilization=0.9)
    with pytest.raises(PreflightError, match="needs 4 GPUs per worker; this machine has 2 GPUs"):
        plan_gpus(gpus=2, workers=1, tp=4, gpu_memory_utilization=None)


def test_model_folders_are_checked_and_names_pass(tmp_path):
    check_model("tiny")
    check_model("HuggingFaceTB/SmolLM2-135M-Instruct")  # a hub id: the engine fetches it
    with pytest.raises(PreflightError, match="does not exist"):
        check_model(str(tmp_path / "missing"))
    with pytest.raises(PreflightError, match="has no config.json"):
        check_model(str(tmp_path))
    (tmp_path / "config.json").write_text("{}")
    check_model(str(tmp_path))


def test_engine_argument_names_come_from_the_engine_args_dataclass():
    source = "class Other:\n    x: int = 1\n\nclass EngineArgs:\n    model: str = ''\n    max_num_seqs: int = 1\n"
    assert fields_of_class(source, "EngineArgs") == {"model", "max_num_seqs"}
    check_engine_args(["max-num-seqs", "block_size"], FALLBACK, "a list")
    with pytest.raises(PreflightError, match="unknown engine arguments blok_size, max_num_seqz"):
        check_engine_args(["max_num_seqz", "blok_size", "block_size"], FALLBACK, "a list")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser()
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--engine", choices=["vllm", "sim"], default="vllm")
    p.add_argument("--tls", action="store_true")
    p.add_argument("--engine-arg", action="append", default=[])
    p.add_argument("--config")
    return p


def test_config_file_sets_defaults_the_command_line_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("workers: '3'\nengine: sim\ntls: true\nengine_arg: max_num_seqs=2\n")
    p = _parser()
    p.set_defaults(**config_defaults(p, str(path)))
    args = p.parse_args(["--workers", "5", "--engine-arg", "block_size=32"])
    assert (args.workers, args.engine, args.tls) == (5, "sim", True)
    assert args.engine_arg == ["max_num_seqs=2", "block_size=32"]


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("wrokers: 2\n", "unknown key 'wrokers'"),
        ("engine: tpu\n", "'tpu' is not one of vllm, sim"),
        ("tls: yes-please\n", "expected true or false"),
        ("workers: many\n", "invalid literal"),
        ("- workers\n", "expected a mapping"),
    ],
)
def test_config_file_mistakes_are_refused_by_name(tmp_path, text, error):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigFileError, match=error):
        config_defaults(_parser(), str(path))
