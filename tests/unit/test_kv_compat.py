"""Which engines may hand KV to each other (tessera/placement/kv_compat.py), and the descriptors workers publish."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from services.scheduler.view import kv_compat_of
from services.worker.kv_descriptor import failed_kv_pulls, sim_descriptor, vllm_descriptor
from tessera.placement.kv_compat import KVCompat, compatible, fp8_e4m3_format, incompatibility, resolve_kv_cache_dtype
from tessera.v1 import common_pb2 as pb

BASE = KVCompat(
    "vllm", "0.32.0", "/models/llama", "bfloat16", "bfloat16", 16, "LBNHC", "FLASH_ATTN", 1, "NixlConnector", 8
)


def with_(**kw) -> KVCompat:
    return dataclasses.replace(BASE, **kw)


def test_identical_engines_pair():
    assert compatible(BASE, with_()) and incompatibility(BASE, with_()) == ""


def test_fp8_e4m3fn_and_e4m3fnuz_are_never_paired_either_way():
    nvidia = with_(kv_cache_dtype="float8_e4m3fn")
    mi300 = with_(kv_cache_dtype="float8_e4m3fnuz")
    assert not compatible(nvidia, mi300) and not compatible(mi300, nvidia)
    assert "float8_e4m3fnuz" in incompatibility(nvidia, mi300)
    assert compatible(nvidia, with_(kv_cache_dtype="float8_e4m3fn"))


def test_a_bare_fp8_name_is_never_paired_even_with_itself():
    # vLLM's own handshake hashes "fp8" and would let these through: the format is not known
    assert not compatible(with_(kv_cache_dtype="fp8"), with_(kv_cache_dtype="fp8"))


def test_float32_and_bfloat16_are_never_paired():
    f32 = with_(dtype="float32", kv_cache_dtype="float32")
    assert not compatible(f32, BASE) and not compatible(BASE, f32)
    assert "dtype" in incompatibility(f32, BASE)


@pytest.mark.parametrize(
    "field,value",
    [
        ("engine", "sim"),
        ("engine_version", "0.31.0"),
        ("model", "/models/other"),
        ("attention_backend", "TRITON_ATTN"),
        ("kv_connector", "NixlPushConnector"),
        ("kv_layout", "LBHNC"),
    ],
)
def test_what_vllms_handshake_hashes_must_be_equal(field, value):
    assert not compatible(BASE, with_(**{field: value})) and not compatible(with_(**{field: value}), BASE)


def test_no_descriptor_or_no_connector_never_pairs():
    assert not compatible(None, BASE) and not compatible(BASE, None) and not compatible(None, None)
    assert not compatible(with_(kv_connector=""), with_(kv_connector=""))


def test_nixl_reads_a_smaller_prefill_block_size_but_not_a_larger_one():
    assert compatible(with_(block_size=16), with_(block_size=32))
    assert not compatible(with_(block_size=32), with_(block_size=16))
    other = dict(kv_connector="ExampleConnector")
    assert not compatible(with_(block_size=16, **other), with_(block_size=32, **other))


def test_heterogeneous_tp_needs_nixl_a_head_contiguous_layout_and_enough_kv_heads():
    hnd = dict(kv_layout="LBHNC")
    assert compatible(with_(tensor_parallel=1, **hnd), with_(tensor_parallel=4, **hnd))
    assert compatible(with_(tensor_parallel=4, **hnd), with_(tensor_parallel=2, **hnd))  # 4 ranks <= 8 KV heads
    assert not compatible(with_(tensor_parallel=1), with_(tensor_parallel=2))  # LBNHC: heads interleaved
    assert not compatible(with_(tensor_parallel=2, **hnd), with_(tensor_parallel=3, **hnd))
    few_heads = dict(num_kv_heads=2, **hnd)
    assert not compatible(with_(tensor_parallel=4, **few_heads), with_(tensor_parallel=1, **few_heads))
    unknown = dict(num_kv_heads=0, **hnd)
    assert not compatible(with_(tensor_parallel=2, **unknown), with_(tensor_parallel=1, **unknown))


def test_fp8_resolves_to_the_accelerators_own_format():
    assert fp8_e4m3_format("nvidia", "h100-sxm") == "float8_e4m3fn"
    assert fp8_e4m3_format("amd", "mi300x") == "float8_e4m3fnuz"
    assert fp8_e4m3_format("amd", "mi355x") == "float8_e4m3fn"  # gfx950 stores OCP fp8
    assert resolve_kv_cache_dtype("fp8", "bfloat16", "float8_e4m3fnuz") == "float8_e4m3fnuz"
    assert resolve_kv_cache_dtype("auto", "bfloat16", "float8_e4m3fn") == "bfloat16"
    assert resolve_kv_cache_dtype("fp8_e5m2", "bfloat16", "float8_e4m3fnuz") == "float8_e5m2"


def sim(accelerator: str, vendor: str, dtype_bytes: int = 2, **engine_args) -> pb.KVCompatibility:
    return sim_descriptor("/m", "1.0", dtype_bytes, vendor, accelerator, 16, 1, "NixlConnector", 8, engine_args)


def test_sim_workers_publish_what_separates_them():
    # what the scheduler reads back from the registration, not the message itself
    h100 = kv_compat_of(pb.WorkerIdentity(kv_compat=sim("h100-sxm", "nvidia", kv_cache_dtype="fp8")))
    mi300 = kv_compat_of(pb.WorkerIdentity(kv_compat=sim("mi300x", "amd", kv_cache_dtype="fp8")))
    assert h100 is not None and h100.kv_cache_dtype == "float8_e4m3fn" and h100.block_size == 16
    assert mi300 is not None and mi300.kv_cache_dtype == "float8_e4m3fnuz"
    assert not compatible(mi300, h100) and compatible(h100, h100)
    cpu = kv_compat_of(pb.WorkerIdentity(kv_compat=sim("cpu", "cpu", dtype_bytes=4)))
    bf16 = kv_compat_of(pb.WorkerIdentity(kv_compat=sim("h100-sxm", "nvidia")))
    assert cpu is not None and cpu.dtype == "float32" and not compatible(cpu, bf16)
    assert kv_compat_of(pb.WorkerIdentity()) is None  # an older worker: never paired


def vllm_config(cache_dtype: str = "auto", backend=None, layout=None):
    return SimpleNamespace(
        model_config=SimpleNamespace(model="/models/llama", dtype="torch.bfloat16", get_total_num_kv_heads=lambda: 8),
        cache_config=SimpleNamespace(cache_dtype=cache_dtype, block_size=16, kv_cache_layout=layout),
        attention_config=SimpleNamespace(backend=backend),
        parallel_config=SimpleNamespace(tensor_parallel_size=2),
        kv_transfer_config=SimpleNamespace(kv_connector="NixlConnector"),
    )


def test_vllm_descriptor_comes_from_its_config_with_the_platforms_fp8_format():
    cuda = vllm_descriptor(vllm_config("fp8"), "0.32.0", "torch.float8_e4m3fn", "cuda")
    rocm = vllm_descriptor(vllm_config("fp8"), "0.32.0", "torch.float8_e4m3fnuz", "rocm")
    assert cuda is not None and rocm is not None
    assert (cuda.dtype, cuda.kv_cache_dtype, cuda.tensor_parallel, cuda.num_kv_heads) == (
        "bfloat16",
        "float8_e4m3fn",
        2,
        8,
    )
    assert rocm.kv_cache_dtype == "float8_e4m3fnuz" and cuda.attention_backend == "auto@cuda"
    pinned = vllm_descriptor(
        vllm_config(backend=SimpleNamespace(name="TRITON_ATTN"), layout="HND"), "0.32.0", "float8_e4m3fn", "cuda"
    )
    assert pinned is not None and pinned.attention_backend == "TRITON_ATTN" and pinned.kv_layout == "LBHNC"
    assert vllm_descriptor(SimpleNamespace(), "0.32.0", "float8_e4m3fn", "cuda") is None  # unreadable: unpaired


def test_failed_pulls_are_read_from_nixl_stats_nested_or_not():
    assert (
        failed_kv_pulls({"num_failed_handshakes": [1, 1], "num_failed_transfers": [1], "bytes_transferred": [9]}) == 3
    )
    assert failed_kv_pulls({"NixlConnector": {"num_failed_handshakes": [1]}}) == 1
    assert failed_kv_pulls(None) == 0
