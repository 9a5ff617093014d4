"""Communication times: tensor-parallel collectives and KV-cache transfers.

Kept apart from the compute roofline because the planner asks about transfers
on their own (is disaggregating prefill from decode worth the KV copy between
these two accelerators?) and because link figures, unlike kernel efficiencies,
come straight from the catalog.
"""

from __future__ import annotations

from tessera.catalog.accelerators import Accelerator
from tessera.perf.model_arch import ModelArch

SCALE_UP = "scale_up"
SCALE_OUT = "scale_out"


def all_reduce_time(nbytes: float, devices: int, link_bytes_s: float, link_efficiency: float,
                    latency_s: float) -> float:
    """Ring all-reduce of `nbytes` per device: 2(n-1)/n of the data crosses each link, plus a fixed cost."""
    if devices <= 1 or nbytes <= 0:
        return 0.0
    return latency_s + 2.0 * (devices - 1) / devices * nbytes / (link_bytes_s * link_efficiency)


def all_to_all_time(nbytes: float, devices: int, link_bytes_s: float, link_efficiency: float,
                    latency_s: float) -> float:
    """All-to-all where each device sends `nbytes` in total, (n-1)/n of it off-device."""
    if devices <= 1 or nbytes <= 0:
        return 0.0
    return latency_s + (devices - 1) / devices * nbytes / (link_bytes_s * link_efficiency)


def kv_transfer_time(arch: ModelArch, tokens: int, src: Accelerator, dst: Accelerator, *,
                     network: str = SCALE_OUT, src_devices: int = 1, dst_devices: int = 1,
                     latency_s: float = 50e-6, link_efficiency: float = 0.8,
                     kv_dtype_bytes: int | None = None) -> float:
    """Seconds to move the KV cache of `tokens` tokens from one instance to another.

    Each device's shard travels over its own link, so min(src_devices, dst_devices)
    links work in parallel, each limited by the slower end. The latency term
    covers connection setup and the first byte (RDMA / NIXL-class transfers).
    """
    if network not in (SCALE_UP, SCALE_OUT):
        raise ValueError(f"network must be {SCALE_UP!r} or {SCALE_OUT!r}, not {network!r}")
    if tokens <= 0:
        return 0.0
    total = float(arch.kv_bytes_per_token(kv_dtype_bytes)) * tokens
    if network == SCALE_UP:
        per_link = min(src.scale_up_bytes_s, dst.scale_up_bytes_s)
    else:
        per_link = min(src.scale_out_bytes_s, dst.scale_out_bytes_s)
    lanes = max(1, min(src_devices, dst_devices))
    return latency_s + total / (per_link * link_efficiency * lanes)
