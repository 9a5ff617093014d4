"""Load the accelerator catalog (accelerators.yaml) into frozen records.

The performance model, the scheduler and the planner all reason about
accelerators through these records, so that adding a part is adding a row to
the YAML file. Figures are stored in the units vendors publish (TFLOP/s, TB/s,
GB/s); the properties convert to SI units (FLOP/s, bytes/s, bytes) so that
model code never multiplies by 1e12 by hand.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

import yaml

from tessera.engine_model.catalog.vendors import vendor_names

_REQUIRED = (
    "vendor",
    "bf16_tflops",
    "memory_gb",
    "memory_bw_tb_s",
    "scale_up_gb_s",
    "scale_out_gb_s",
    "cost_per_hour_usd",
)


# How a node's devices reach each other: one switch (NVSwitch, a PCIe switch: any pair at the full
# per-device rate), a full mesh of point-to-point links (AMD Infinity Fabric: a pair gets one link),
# or a ring/torus of Ethernet links (Tenstorrent: traffic to non-neighbours takes several hops).
TOPOLOGIES = ("switch", "mesh", "ring")
# Cold-start weight loading, GB/s per device: safetensors read from node-local NVMe by all of a
# node's devices at once. An estimate: one PCIe Gen4 NVMe drive reads ~7 GB/s sequentially, GPU
# nodes carry 2-8 of them for 8 devices, and loaders rarely reach the drives' peak.
DEFAULT_LOAD_GB_S = 2.0
# Host-to-device copy, GB/s per direction (PCIe Gen4 x16), what a wake from sleep mode moves weights over.
DEFAULT_HOST_LINK_GB_S = 32.0


@dataclass(frozen=True)
class Accelerator:
    """One accelerator model (per device as the engine sees it), in published units."""

    name: str
    vendor: str
    bf16_tflops: float
    fp8_tflops: float | None
    memory_gb: float
    memory_bw_tb_s: float
    scale_up_gb_s: float
    scale_out_gb_s: float
    cost_per_hour_usd: float
    measured: bool = True
    description: str = ""
    cost_source: str = ""
    sources: dict[str, str] = field(default_factory=dict)
    fp32_tflops: float | None = None
    scale_up_topology: str = "switch"
    scale_up_links: int = 1
    devices_per_node: int = 8
    load_gb_s: float = DEFAULT_LOAD_GB_S
    host_link_gb_s: float = DEFAULT_HOST_LINK_GB_S

    @property
    def peak_bf16_flops(self) -> float:
        """Dense bf16 peak in FLOP/s."""
        return self.bf16_tflops * 1e12

    @property
    def peak_fp8_flops(self) -> float | None:
        """Dense fp8 peak in FLOP/s, None where the part has no fp8 units."""
        return None if self.fp8_tflops is None else self.fp8_tflops * 1e12

    @property
    def peak_fp32_flops(self) -> float:
        """Dense fp32 matmul peak in FLOP/s: the catalog's `fp32_tflops` where given (CPUs,
        measured), else half the bf16 peak: the TF32 tensor-core rate of A100/H100/MI300-class
        parts, which is what an fp32 matmul runs at when TF32 is allowed."""
        return self.fp32_tflops * 1e12 if self.fp32_tflops is not None else self.peak_bf16_flops / 2.0

    def peak_flops(self, dtype_bytes: int) -> float:
        """Peak FLOP/s for weights of `dtype_bytes`: fp8 where it exists (bf16 otherwise) for 1,
        fp32 (see peak_fp32_flops) for 4, bf16 for everything else."""
        if dtype_bytes == 1 and self.fp8_tflops is not None:
            return self.fp8_tflops * 1e12
        if dtype_bytes == 4:
            return self.peak_fp32_flops
        return self.peak_bf16_flops

    @property
    def memory_bytes(self) -> float:
        return self.memory_gb * 1e9

    @property
    def memory_bw_bytes_s(self) -> float:
        return self.memory_bw_tb_s * 1e12

    @property
    def scale_up_bytes_s(self) -> float:
        """Per direction, per device."""
        return self.scale_up_gb_s * 1e9

    @property
    def scale_out_bytes_s(self) -> float:
        """Per direction, per device."""
        return self.scale_out_gb_s * 1e9

    @property
    def load_bytes_s(self) -> float:
        """Cold-start weight loading, per device."""
        return self.load_gb_s * 1e9

    @property
    def host_link_bytes_s(self) -> float:
        """Host memory to device memory, per device (a wake from sleep mode)."""
        return self.host_link_gb_s * 1e9


def _row_to_accelerator(name: str, row: dict[str, Any], vendors: set[str]) -> Accelerator:
    missing = [k for k in _REQUIRED if row.get(k) is None]
    if missing:
        raise ValueError(f"accelerator {name!r}: missing {', '.join(missing)}")
    if row["vendor"] not in vendors:
        raise ValueError(
            f"accelerator {name!r}: vendor {row['vendor']!r} is not in vendors.yaml ({', '.join(sorted(vendors))})"
        )
    fp8, fp32 = row.get("fp8_tflops"), row.get("fp32_tflops")
    topology = str(row.get("scale_up_topology", "switch"))
    if topology not in TOPOLOGIES:
        raise ValueError(f"accelerator {name!r}: scale_up_topology must be one of {', '.join(TOPOLOGIES)}")
    return Accelerator(
        name=name,
        vendor=str(row["vendor"]),
        bf16_tflops=float(row["bf16_tflops"]),
        fp8_tflops=None if fp8 is None else float(fp8),
        memory_gb=float(row["memory_gb"]),
        memory_bw_tb_s=float(row["memory_bw_tb_s"]),
        scale_up_gb_s=float(row["scale_up_gb_s"]),
        scale_out_gb_s=float(row["scale_out_gb_s"]),
        cost_per_hour_usd=float(row["cost_per_hour_usd"]),
        measured=bool(row.get("measured", True)),
        description=str(row.get("description", "")),
        cost_source=str(row.get("cost_source", "")),
        sources={str(k): str(v) for k, v in (row.get("sources") or {}).items()},
        fp32_tflops=None if fp32 is None else float(fp32),
        scale_up_topology=topology,
        scale_up_links=int(row.get("scale_up_links", 1)),
        devices_per_node=int(row.get("devices_per_node", 8)),
        load_gb_s=float(row.get("load_gb_s", DEFAULT_LOAD_GB_S)),
        host_link_gb_s=float(row.get("host_link_gb_s", DEFAULT_HOST_LINK_GB_S)),
    )


def parse_catalog(table: dict[str, dict[str, Any]], vendors: set[str]) -> dict[str, Accelerator]:
    """Turn the parsed YAML table into records; pure, so tests can feed their own rows."""
    return {name: _row_to_accelerator(name, row, vendors) for name, row in table.items()}


@cache
def _catalog() -> dict[str, Accelerator]:
    text = resources.files("tessera.engine_model.catalog").joinpath("accelerators.yaml").read_text()
    return parse_catalog(yaml.safe_load(text), set(vendor_names()))


def get(name: str) -> Accelerator:
    """The catalog row `name`; a clear error listing the known names otherwise."""
    catalog = _catalog()
    if name not in catalog:
        raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(catalog)}")
    return catalog[name]


def find(name: str) -> Accelerator:
    """A row by name or unambiguous prefix, as people type them: 'h100' is 'h100-sxm', 'a100' is
    'a100-80gb-sxm'. A clear error listing the known names otherwise."""
    catalog = _catalog()
    if name in catalog:
        return catalog[name]
    matches = [a for key, a in catalog.items() if key.startswith(name.lower())]
    if len(matches) == 1:
        return matches[0]
    raise ValueError(f"unknown accelerator {name!r}; known: {', '.join(catalog)}")


def all() -> list[Accelerator]:  # noqa: A001 - the catalog's natural name, used as accelerators.all()
    """Every catalog row, in file order."""
    return list(_catalog().values())
