"""The KV-compatibility descriptor a worker publishes in its registration (tessera.v1.KVCompatibility).

The scheduler pairs a prefill worker with a decode worker only when the decode side can read the
prefill side's KV blocks (tessera/placement/kv_compat.py says which fields must match and why).
Each engine fills the descriptor from its own configuration: vLLM from its resolved VllmConfig,
the sim engine from the catalog accelerator and its engine arguments, with the fp8 format
resolved in both (float8_e4m3fn on NVIDIA, float8_e4m3fnuz on MI300), never a bare "fp8".
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from tessera.placement.kv_compat import DTYPE_NAMES, fp8_e4m3_format, resolve_kv_cache_dtype
from tessera.v1 import common_pb2 as pb

log = logging.getLogger("tessera.worker")

# vLLM's legacy layout names (VLLM_KV_CACHE_LAYOUT) and the layouts they stand for (vllm/v1/kv_cache_layout.py).
LEGACY_LAYOUTS = {"NHD": "LBNHC", "HND": "LBHNC"}


def _dtype_name(value: Any) -> str:
    return str(value).removeprefix("torch.")


def sim_descriptor(
    model_path: str,
    engine_version: str,
    dtype_bytes: int,
    vendor: str,
    accelerator: str,
    block_size: int,
    tensor_parallel: int,
    kv_connector: str,
    num_kv_heads: int,
    engine_args: Mapping[str, Any],
) -> pb.KVCompatibility:
    """The sim engine's descriptor: its weights' dtype (what the performance model times), and the
    KV-cache dtype it is given as vLLM would be (--engine-arg kv_cache_dtype=fp8), in the format the
    accelerator it stands for stores."""
    dtype = _dtype_name(engine_args.get("dtype") or DTYPE_NAMES.get(dtype_bytes, "bfloat16"))
    kv = resolve_kv_cache_dtype(
        str(engine_args.get("kv_cache_dtype") or "auto"), dtype, fp8_e4m3_format(vendor, accelerator)
    )
    return pb.KVCompatibility(
        engine="sim",
        engine_version=engine_version,
        model=model_path,
        dtype=dtype,
        kv_cache_dtype=kv,
        block_size=block_size,
        kv_layout=str(engine_args.get("kv_cache_layout") or "LBHNC"),
        attention_backend="sim",
        tensor_parallel=tensor_parallel,
        kv_connector=kv_connector,
        num_kv_heads=num_kv_heads,
    )


def vllm_descriptor(config: Any, vllm_version: str, platform_fp8: str, device_type: str) -> pb.KVCompatibility | None:
    """From a started engine's VllmConfig (read with getattr: a field vLLM renames leaves it unset).

    platform_fp8 is vLLM's current_platform.fp8_dtype() (the format "fp8" means here), device_type
    its platform ("cuda", "rocm", "cpu"): an attention backend left to vLLM is the platform's
    default, so it is published as "auto@<platform>" and matches only the same platform's default.
    None, logged once, when the configuration cannot be read: the worker is then never paired.
    """
    try:
        model_config, cache_config = config.model_config, config.cache_config
        dtype = _dtype_name(model_config.dtype)
        backend = getattr(getattr(config, "attention_config", None), "backend", None)
        layout = getattr(cache_config, "kv_cache_layout", None) or os.environ.get("VLLM_KV_CACHE_LAYOUT") or ""
        transfer = getattr(config, "kv_transfer_config", None)
        return pb.KVCompatibility(
            engine="vllm",
            engine_version=vllm_version,
            model=str(model_config.model),
            dtype=dtype,
            kv_cache_dtype=resolve_kv_cache_dtype(str(cache_config.cache_dtype), dtype, _dtype_name(platform_fp8)),
            block_size=int(cache_config.block_size),
            kv_layout=LEGACY_LAYOUTS.get(layout, layout),
            attention_backend=getattr(backend, "name", None) or f"auto@{device_type}",
            tensor_parallel=int(config.parallel_config.tensor_parallel_size),
            kv_connector=str(getattr(transfer, "kv_connector", None) or ""),
            num_kv_heads=int(model_config.get_total_num_kv_heads()),
        )
    except (AttributeError, TypeError, ValueError) as exc:
        log.warning("no KV-compatibility descriptor (this worker will not be paired): %s", exc)
        return None


def failed_kv_pulls(connector_stats: Any) -> int:
    """KV pulls a step's connector stats say failed (vLLM's NIXL: failed handshakes and transfers,
    lists of one entry per failure; a MultiConnector nests them per connector)."""
    if not isinstance(connector_stats, Mapping):
        return 0
    total = 0
    for key, value in connector_stats.items():
        if key in ("num_failed_handshakes", "num_failed_transfers") and isinstance(value, list):
            total += len(value)
        elif isinstance(value, Mapping):
            total += failed_kv_pulls(value)
    return total
