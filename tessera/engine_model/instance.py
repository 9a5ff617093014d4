"""How one simulated engine instance is configured: accelerator, parallelism, role, limits.

The sim worker and the discrete-event simulator both build their engines
here, from the same catalog row, vendor settings and calibration, so a
`cpu` instance in `tessera sim` is the same engine as `tessera worker
--engine sim --accelerator cpu`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from tessera.engine_model.batching import EngineConfig
from tessera.engine_model.catalog import accelerators
from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.efficiency import Efficiency
from tessera.engine_model.perf.memory import kv_bytes_per_token_per_device, kv_capacity_tokens
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import Parallelism
from tessera.engine_model.perf.step_timer import StepTimer

ROLES = ("mixed", "prefill", "decode")
# vLLM's defaults where the vendor table says nothing (v1, OpenAI server on a GPU).
DEFAULT_MAX_NUM_SEQS = 256
DEFAULT_MAX_NUM_BATCHED_TOKENS = 8192


class ClusterSpecError(ValueError):
    """A --cluster / --accelerators string that cannot be understood."""


def find_accelerator(name: str) -> Accelerator:
    """accelerators.find, failing as a cluster-spec error."""
    try:
        return accelerators.find(name)
    except ValueError as exc:
        raise ClusterSpecError(str(exc)) from None


@dataclass(frozen=True)
class InstanceSpec:
    """One engine instance: `tp` devices of one accelerator kind, in one role."""

    accelerator: Accelerator
    tp: int = 1
    role: str = "mixed"
    dp: int = 1  # data-parallel attention ranks (experts of an MoE spread over all dp x tp devices)
    cp: int = 1  # prefill context-parallel ranks

    @property
    def devices(self) -> int:
        return self.tp * self.dp * self.cp

    @property
    def label(self) -> str:
        tp = f"-tp{self.tp}" if self.tp > 1 else ""
        dp = f"-dp{self.dp}" if self.dp > 1 else ""
        cp = f"-cp{self.cp}" if self.cp > 1 else ""
        role = "" if self.role == "mixed" else f":{self.role}"
        return f"{self.accelerator.name}{tp}{dp}{cp}{role}"


_GROUP = re.compile(r"^(?P<kind>[a-z0-9-]+?)(?:x(?P<tp>\d+))?:(?P<count>\d+)(?::(?P<role>[a-z]+))?$")


def smallest_tp(arch: ModelArch, accel: Accelerator) -> int:
    """The fewest devices (a power of two up to 8) whose memory holds the weights with room for KV."""
    for tp in (1, 2, 4, 8):
        par = Parallelism(tp=tp, ep=tp if arch.is_moe and tp > 1 else 1)
        if kv_capacity_tokens(arch, accel, par) >= 16 * 1024 or (accel.vendor == "cpu" and tp == 1):
            return tp
    raise ClusterSpecError(f"{arch.name} does not fit on 8 x {accel.name}")


def parse_cluster(text: str, arch: ModelArch) -> list[InstanceSpec]:
    """`h100:32,a100x2:16:decode` -> instances: KIND[xTP]:DEVICES[:ROLE], devices a multiple of TP.

    Without xTP each instance gets the fewest devices the model fits on.
    """
    out: list[InstanceSpec] = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        m = _GROUP.match(part.lower())
        if not m:
            raise ClusterSpecError(
                f"bad cluster entry {part!r}: expected KIND[xTP]:COUNT[:ROLE], e.g. h100:8 or mi300x:4:prefill"
            )
        accel = find_accelerator(m["kind"])
        tp = int(m["tp"]) if m["tp"] else smallest_tp(arch, accel)
        count, role = int(m["count"]), m["role"] or "mixed"
        if role not in ROLES:
            raise ClusterSpecError(f"bad role {role!r} in {part!r}; roles: {', '.join(ROLES)}")
        if tp < 1 or count < tp or count % tp:
            raise ClusterSpecError(f"{part!r}: {count} devices cannot be split into instances of {tp}")
        out.extend(InstanceSpec(accel, tp, role) for _ in range(count // tp))
    if not out:
        raise ClusterSpecError("the cluster is empty")
    return out


def engine_config(
    arch: ModelArch,
    spec: InstanceSpec,
    vendor_engine_args: dict[str, Any],
    vendor_env: dict[str, str],
    max_model_len: int | None = None,
) -> EngineConfig:
    """The engine limits vLLM would run with on this instance: block size and batch limits from the
    vendor table, KV blocks from the memory left after the weights (on `cpu`, vLLM's
    VLLM_CPU_KVCACHE_SPACE GiB instead)."""
    block = int(vendor_engine_args.get("block_size", 16))
    par = parallelism(arch, spec)
    if spec.accelerator.vendor == "cpu":
        space = float(vendor_env.get("VLLM_CPU_KVCACHE_SPACE", "4")) * 2**30
        tokens = int(space // kv_bytes_per_token_per_device(arch, par))
    else:
        tokens = kv_capacity_tokens(arch, spec.accelerator, par)
    blocks = tokens // block
    if blocks <= 0:
        raise ClusterSpecError(f"{arch.name} leaves no room for a KV cache on {spec.label}")
    # each DP rank is its own vLLM engine core with its own scheduler limits
    return EngineConfig(
        num_blocks=blocks,
        block_size=block,
        max_num_seqs=int(vendor_engine_args.get("max_num_seqs", DEFAULT_MAX_NUM_SEQS)) * spec.dp,
        max_num_batched_tokens=int(vendor_engine_args.get("max_num_batched_tokens", DEFAULT_MAX_NUM_BATCHED_TOKENS))
        * spec.dp,
        max_model_len=min(max_model_len or 131072, blocks * block),
        enable_prefix_caching=bool(vendor_engine_args.get("enable_prefix_caching", True)),
    )


def parallelism(arch: ModelArch, spec: InstanceSpec) -> Parallelism:
    """An MoE's experts go over every device of a multi-device instance (EP = DP x TP); DP
    attention is only for MoE models (a dense model's DP ranks would just be separate instances)."""
    if spec.dp > 1 and not arch.is_moe:
        raise ClusterSpecError(f"{spec.label}: data-parallel attention is for MoE models, not {arch.name}")
    shards = spec.tp * spec.dp
    return Parallelism(tp=spec.tp, ep=shards if arch.is_moe and shards > 1 else 1, dp=spec.dp, cp=spec.cp)


def step_timer(arch: ModelArch, spec: InstanceSpec, eff: Efficiency) -> StepTimer:
    return StepTimer(arch, spec.accelerator, parallelism(arch, spec), eff)
