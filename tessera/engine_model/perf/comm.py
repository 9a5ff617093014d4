"""Communication times: tensor-parallel collectives and KV-cache transfers.

Kept apart from the compute roofline because the planner asks about transfers
on their own (is disaggregating prefill from decode worth the KV copy between
these two accelerators?) and because link figures, unlike kernel efficiencies,
come straight from the catalog.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Protocol

from tessera.engine_model.catalog import accelerators
from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.model_arch import ModelArch

SCALE_UP = "scale_up"
SCALE_OUT = "scale_out"


def all_reduce_time(
    nbytes: float, devices: int, link_bytes_s: float, link_efficiency: float, latency_s: float
) -> float:
    """Ring all-reduce of `nbytes` per device: 2(n-1)/n of the data crosses each link, plus a fixed cost."""
    if devices <= 1 or nbytes <= 0:
        return 0.0
    return latency_s + 2.0 * (devices - 1) / devices * nbytes / (link_bytes_s * link_efficiency)


def all_to_all_time(
    nbytes: float, devices: int, link_bytes_s: float, link_efficiency: float, latency_s: float
) -> float:
    """All-to-all where each device sends `nbytes` in total, (n-1)/n of it off-device."""
    if devices <= 1 or nbytes <= 0:
        return 0.0
    return latency_s + (devices - 1) / devices * nbytes / (link_bytes_s * link_efficiency)


def group_bandwidth(accel: Accelerator, group: int) -> float:
    """Bytes/s one device can push to the other `group - 1` members of its node at once (an all-to-all).

    switch (NVSwitch, a PCIe switch): the full per-device rate to any peers. mesh (Infinity Fabric,
    one link per peer): only the links to peers in the group carry traffic, so EP 4 on an MI300X
    uses 3 of its 7 links. ring (Tenstorrent Ethernet): each device's links reach its neighbours;
    traffic to others is forwarded, each byte taking the ring's mean distance, n^2 / (4 (n - 1))
    hops, shortened in proportion where a device has more than the ring's two links.
    """
    peers = max(group - 1, 1)
    if accel.scale_up_topology == "switch":
        return accel.scale_up_bytes_s
    per_link = accel.scale_up_bytes_s / max(accel.scale_up_links, 1)
    used = min(peers, accel.scale_up_links)
    if accel.scale_up_topology == "mesh":
        return per_link * used
    hops = max(1.0, group * group / (4.0 * peers) * 2.0 / max(accel.scale_up_links, 2))
    return per_link * used / hops


def expert_all_to_all_time(
    nbytes: float, group: int, accel: Accelerator, link_efficiency: float, latency_s: float
) -> float:
    """One dispatch (or combine) of an EP group of `group` devices, each sending `nbytes` in total.

    Within a node, (group-1)/group of it leaves the device over the scale-up fabric (group_bandwidth);
    a group larger than the catalog's devices_per_node sends the share bound for other nodes,
    (group - node)/group, over the scale-out NIC, and the slower of the two paths sets the time.
    """
    if group <= 1 or nbytes <= 0:
        return 0.0
    node = min(group, accel.devices_per_node)
    intra = nbytes * (node - 1) / group / (group_bandwidth(accel, node) * link_efficiency)
    inter = nbytes * (group - node) / group / (accel.scale_out_bytes_s * link_efficiency) if group > node else 0.0
    return latency_s * (2.0 if group > node else 1.0) + max(intra, inter)


def kv_transfer_time(
    arch: ModelArch,
    tokens: int,
    src: Accelerator,
    dst: Accelerator,
    *,
    network: str = SCALE_OUT,
    src_devices: int = 1,
    dst_devices: int = 1,
    latency_s: float = 50e-6,
    link_efficiency: float = 0.8,
    kv_dtype_bytes: int | None = None,
) -> float:
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


class _Placed(Protocol):
    """What a transfer estimate needs of a worker: its id and its catalog accelerator's name."""

    @property
    def id(self) -> str: ...

    @property
    def accelerator(self) -> str: ...


def kv_transfer_estimator(
    arch: ModelArch,
    devices: Mapping[str, int] | None = None,
    *,
    network: str = SCALE_OUT,
    default: str = "cpu",
) -> Callable[[_Placed, _Placed, int], float]:
    """`transfer_s(prefill_worker, decode_worker, tokens)` for the pairing policy, from the catalog.

    The policy is pure and never reads the catalog; this binds kv_transfer_time to one model and
    to each worker's accelerator row (looked up by name or prefix with accelerators.find, once per
    name). `devices` gives a worker's device count by id (TP shards move over parallel links; 1 if
    absent); an accelerator the catalog lacks is priced as `default`, the slowest link on offer.
    """
    rows: dict[str, Accelerator] = {}

    def row(name: str) -> Accelerator:
        if name not in rows:
            try:
                rows[name] = accelerators.find(name)
            except ValueError:
                rows[name] = accelerators.find(default)
        return rows[name]

    sizes = devices if devices is not None else {}  # the caller may add workers to it later

    def transfer_s(src: _Placed, dst: _Placed, tokens: int) -> float:
        return kv_transfer_time(
            arch,
            tokens,
            row(src.accelerator),
            row(dst.accelerator),
            network=network,
            src_devices=sizes.get(src.id, 1),
            dst_devices=sizes.get(dst.id, 1),
        )

    return transfer_s
