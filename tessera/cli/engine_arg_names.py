"""The engine-argument names a worker accepts: vLLM's ``EngineArgs`` fields, and Tessera's own.

``tessera up`` refuses an unknown ``--engine-arg`` key before it starts anything, instead of a
worker dying on it a minute later. The names come from the installed vLLM's source, read as
text (``ast``), not imported: importing vLLM loads torch, seconds that `up` (a control-plane
launcher) must not spend; without vLLM (a control-plane-only install, the sim engine) a list
of the common ones stands in.
"""

from __future__ import annotations

import ast
import importlib.util
from functools import cache
from pathlib import Path

# Worker settings that are not vLLM EngineArgs fields (services/autoscaler/local_processes.py's
# WORKER_FLAGS, the simulator's architecture).
TESSERA_KEYS = frozenset({"sim_arch", "kv_connector", "data_parallel_size", "expert_parallel"})

# Without vLLM: the EngineArgs fields people set most (vLLM 0.32's names).
FALLBACK = frozenset(
    {
        "model",
        "tokenizer",
        "served_model_name",
        "dtype",
        "seed",
        "max_model_len",
        "tensor_parallel_size",
        "pipeline_parallel_size",
        "data_parallel_size",
        "enable_expert_parallel",
        "gpu_memory_utilization",
        "kv_cache_dtype",
        "block_size",
        "swap_space",
        "cpu_offload_gb",
        "max_num_seqs",
        "max_num_batched_tokens",
        "max_num_partial_prefills",
        "long_prefill_token_threshold",
        "enable_chunked_prefill",
        "enable_prefix_caching",
        "prefix_caching_hash_algo",
        "quantization",
        "enforce_eager",
        "max_seq_len_to_capture",
        "trust_remote_code",
        "revision",
        "tokenizer_mode",
        "load_format",
        "download_dir",
        "disable_log_stats",
        "enable_lora",
        "max_loras",
        "max_lora_rank",
        "speculative_config",
        "kv_transfer_config",
        "kv_events_config",
        "compilation_config",
        "generation_config",
        "override_generation_config",
        "hf_overrides",
        "limit_mm_per_prompt",
        "scheduling_policy",
        "distributed_executor_backend",
        "disable_custom_all_reduce",
        "async_scheduling",
        "max_logprobs",
        "logprobs_mode",
        "reasoning_parser",
        "enable_sleep_mode",
        "calculate_kv_scales",
        "num_gpu_blocks_override",
    }
)


def _vllm_arg_utils() -> Path | None:
    try:
        spec = importlib.util.find_spec("vllm")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "engine" / "arg_utils.py"
    return path if path.is_file() else None


def fields_of_class(source: str, class_name: str) -> frozenset[str]:
    """The annotated attributes of ``class_name`` in ``source``: a dataclass's fields."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and node.name == class_name:
            return frozenset(
                stmt.target.id
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            )
    return frozenset()


@cache
def engine_arg_names() -> tuple[frozenset[str], str]:
    """(the accepted keys, where they came from: the vLLM file or 'a built-in list')."""
    path = _vllm_arg_utils()
    if path is not None:
        try:
            names = fields_of_class(path.read_text(), "EngineArgs")
        except (OSError, SyntaxError, UnicodeDecodeError):
            names = frozenset()
        if names:
            return names | TESSERA_KEYS, str(path)
    return FALLBACK | TESSERA_KEYS, "a built-in list (vLLM is not installed here)"
