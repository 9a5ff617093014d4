"""How long an instance takes to start, and to wake from vLLM's sleep mode: a quantity, not a constant.

A cold start reads the weights into device memory and warms the engine up:

    start_s = weight bytes per device / load bandwidth per device + engine warm-up

Devices load their shards in parallel, so it is each device's share that counts (an EP
instance's experts are split over all its devices; a DP rank's attention weights are whole).
The load bandwidth is the catalog row's `load_gb_s` (node-local NVMe shared by the node's
devices, an estimate) and the warm-up the vendor table's `warmup_s` (measured here for the CPU
engine; estimates for GPUs).

vLLM's sleep mode (`--enable-sleep-mode`, level 1) keeps a started engine with its weights
offloaded to host memory and its KV cache freed; `wake_up` copies the weights back over the
host link (PCIe) and skips the warm-up:

    wake_s = weight bytes per device / host link bandwidth + WAKE_OVERHEAD_S

A sleeping instance still holds its devices, so it is billed like a running one. Pure: plain
data in (architecture, catalog row, parallelism, warm-up), seconds out.
"""

from __future__ import annotations

from dataclasses import dataclass

from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.memory import weight_bytes_per_device
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import Parallelism

# Re-allocating the KV cache and re-arming the engine after the weights are back: an estimate
# (vLLM's sleep-mode announcement reports wake-ups of seconds against cold starts of minutes).
WAKE_OVERHEAD_S = 1.0


@dataclass(frozen=True)
class StartupTimes:
    """Seconds to serve from nothing (cold) and from sleep mode (wake), and what they are made of."""

    load_s: float  # weights from storage to device memory
    warmup_s: float
    wake_s: float

    @property
    def cold_s(self) -> float:
        return self.load_s + self.warmup_s


def startup_times(arch: ModelArch, accel: Accelerator, par: Parallelism, warmup_s: float) -> StartupTimes:
    """Cold-start and wake-up seconds of one instance of `arch` on `par` devices of `accel`."""
    per_device = weight_bytes_per_device(arch, par)
    load = per_device / accel.load_bytes_s
    wake = per_device / accel.host_link_bytes_s + WAKE_OVERHEAD_S
    return StartupTimes(load, warmup_s, wake)


def cold_start_s(arch: ModelArch, accel: Accelerator, par: Parallelism, warmup_s: float) -> float:
    """Seconds from asking for an instance to its first request: weights loaded plus warm-up."""
    return startup_times(arch, accel, par, warmup_s).cold_s
