"""Whether one engine can hand its KV cache to another: the rule prefill/decode pairs form by.

A decode worker that pulls a prompt's KV from a prefill worker reads raw blocks: every byte must
mean to it what it meant to the writer. Two failures follow when it does not. vLLM's NIXL
handshake refuses the pair (a hash of version, model, dtype, KV-cache dtype, attention backend and
transfer mode differs, or a block-size, layout or TP check fails): the decode worker recomputes
the prompt, and the disaggregation cost a transfer and a prefill for nothing. Worse, the handshake
hashes the KV-cache dtype by its configured name only, so "fp8" on an NVIDIA GPU (stored as
float8_e4m3fn) and "fp8" on an MI300 (float8_e4m3fnuz, the same bits with another exponent bias
and no negative zero) pass it, and the decode worker misreads every value. So workers publish
their KV format resolved (tessera.v1.KVCompatibility), and the scheduler pairs only workers that
`compatible()` accepts, before any handshake.
"""

from __future__ import annotations

from dataclasses import dataclass

# vLLM's NIXL connectors read between different block sizes and tensor-parallel degrees
# (vllm/distributed/kv_transfer/kv_connector/utils.py: tp_ratio, block_size_ratio); others do not.
HETEROGENEOUS_CONNECTORS = ("NixlConnector", "NixlPullConnector", "NixlPushConnector")
# vLLM's KV layouts whose per-block [heads, tokens, channels] are contiguous
# (vllm/v1/kv_cache_layout.py, is_block_contiguous): the ones NIXL can split by heads.
BLOCK_CONTIGUOUS_LAYOUTS = ("LBHNC", "BLHNC")
# Configured names that do not say which fp8 format the bytes are in.
UNRESOLVED_DTYPES = ("", "auto", "fp8", "fp8_e4m3", "fp8_e5m2", "fp8_inc", "fp8_ds_mla")


@dataclass(frozen=True)
class KVCompat:
    """A worker's KV-cache format and transfer setup (the KVCompatibility of its registration)."""

    engine: str
    engine_version: str
    model: str
    dtype: str
    kv_cache_dtype: str
    block_size: int
    kv_layout: str
    attention_backend: str
    tensor_parallel: int
    kv_connector: str
    num_kv_heads: int = 0  # 0: unknown


def incompatibility(prefill: KVCompat | None, decode: KVCompat | None) -> str:
    """Why `decode` cannot pull KV that `prefill` wrote; "" when it can. See `compatible`."""
    if prefill is None or decode is None:
        return "a worker published no KV-compatibility descriptor"
    for field in ("engine", "engine_version", "model", "dtype", "attention_backend", "kv_connector", "kv_layout"):
        a, b = getattr(prefill, field), getattr(decode, field)
        if a != b:
            return f"{field} differs: {a!r} vs {b!r}"
    if not prefill.kv_connector:
        return "no KV connector"
    for side in (prefill, decode):
        if side.kv_cache_dtype in UNRESOLVED_DTYPES:
            return f"KV-cache dtype {side.kv_cache_dtype!r} does not say its format"
    if prefill.kv_cache_dtype != decode.kv_cache_dtype:
        return f"KV-cache dtype differs: {prefill.kv_cache_dtype!r} vs {decode.kv_cache_dtype!r}"
    heterogeneous = prefill.kv_connector in HETEROGENEOUS_CONNECTORS
    p_bs, d_bs = prefill.block_size, decode.block_size
    if p_bs != d_bs and not (heterogeneous and p_bs > 0 and d_bs % p_bs == 0):
        return f"block size {p_bs} (prefill) vs {d_bs} (decode)"
    p_tp, d_tp = prefill.tensor_parallel or 1, decode.tensor_parallel or 1
    if p_tp != d_tp:
        why = f"tensor parallel {p_tp} (prefill) vs {d_tp} (decode)"
        if not heterogeneous or max(p_tp, d_tp) % min(p_tp, d_tp):
            return why
        if decode.kv_layout not in BLOCK_CONTIGUOUS_LAYOUTS:
            return f"{why} with KV layout {decode.kv_layout or 'unknown'} (heads not contiguous in a block)"
        if p_tp > d_tp and not (prefill.num_kv_heads and p_tp <= prefill.num_kv_heads):
            return f"{why}: more prefill ranks than KV heads ({prefill.num_kv_heads or 'unknown'})"
    return ""


def compatible(prefill: KVCompat | None, decode: KVCompat | None) -> bool:
    """Whether `decode` can pull and correctly read KV written by `prefill`. Not symmetric.

    Must be equal, because vLLM's NIXL handshake refuses the pair otherwise (its compatibility
    hash, vllm/.../nixl/metadata.py compute_nixl_compatibility_hash):
      engine and engine_version (vLLM and connector versions), model (vLLM hashes the loaded
      folder or hub id, and with it layers, KV heads and head size), dtype, attention_backend
      (it fixes the block's memory layout), kv_connector (both ends must run the same one; push
      and pull NIXL do not talk) and kv_layout (checked at the handshake).
    Must be equal and resolved, although the handshake does not check it: kv_cache_dtype with its
      fp8 format. The handshake hashes the configured "fp8", so float8_e4m3fn (NVIDIA) and
      float8_e4m3fnuz (MI300) pass it and the decode side misreads every value; a descriptor that
      says only "fp8" is never paired.
    May differ with a NIXL connector only (vLLM's heterogeneous transfers; other connectors copy
    blocks as they are):
      block_size, when the decode side's is a multiple of the prefill side's (the decode side
      reads at the prefill's block granularity);
      tensor_parallel, when one is a multiple of the other and the KV layout keeps each block's
      heads contiguous (LBHNC, BLHNC), so heads split or gather across ranks; with more prefill
      ranks than decode ranks, only while the prefill ranks do not replicate KV heads (no more
      ranks than num_kv_heads, which must be known).
    A worker that published no descriptor (an older worker) is never paired: a refused handshake
    costs a recompute, a silent misread costs the answer.
    """
    return not incompatibility(prefill, decode)


def resolve_kv_cache_dtype(configured: str, dtype: str, fp8_e4m3: str) -> str:
    """The storage format of a KV cache configured as `configured` (vLLM's --kv-cache-dtype).

    "auto" stores KV in the model's dtype; "fp8" and "fp8_e4m3" in the platform's e4m3 format
    (`fp8_e4m3`: "float8_e4m3fn" on NVIDIA and most others, "float8_e4m3fnuz" on MI300, as
    vLLM's current_platform.fp8_dtype() says); "fp8_e5m2" in float8_e5m2 everywhere. Any other
    name is kept as it is.
    """
    name = (configured or "auto").lower()
    if name == "auto":
        return dtype
    if name in ("fp8", "fp8_e4m3"):
        return fp8_e4m3
    if name == "fp8_e5m2":
        return "float8_e5m2"
    return name


# AMD's gfx94x parts (MI300X, MI300A, MI325X) store e4m3 fp8 as float8_e4m3fnuz; MI355X (gfx950),
# NVIDIA and the rest use OCP float8_e4m3fn (vLLM: RocmPlatform.is_fp8_fnuz, "gfx94" in the arch).
FNUZ_ACCELERATORS = ("mi300x", "mi300a", "mi325x")


def fp8_e4m3_format(vendor: str, accelerator: str) -> str:
    """The e4m3 fp8 format a catalog accelerator stores, for engines that cannot ask the device."""
    if vendor == "amd" and any(accelerator.lower().startswith(a) for a in FNUZ_ACCELERATORS):
        return "float8_e4m3fnuz"
    return "float8_e4m3fn"


DTYPE_NAMES = {4: "float32", 2: "bfloat16", 1: "float8_e4m3fn"}  # the performance model's dtype_bytes
