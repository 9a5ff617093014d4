"""The launch shape of an expert/data-parallel MoE instance, from the vendor table.

One Tessera worker runs one vLLM ``AsyncLLM`` that hosts all of an instance's
data-parallel (DP) ranks, one engine-core process each, and takes a request's
rank in ``generate(..., data_parallel_rank=)``. The instance registers once
(``WorkerIdentity.data_parallel_ranks``), reports load per rank
(``LoadReport.data_parallel_rank``), and the scheduler may pin a request to a
rank (``Placement.data_parallel_rank`` -> ``GenerateRequest.data_parallel_rank``).

Everything here is pure so the worker's launch, the tests and the simulator
agree on the shape; the facts it encodes come from vLLM 0.32's source and are
checked on CPU by ``benchmarks/probe_moe_cpu.py``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from tessera.engine_model.catalog.vendors import vendor_settings


def expert_parallel_engine_args(vendor: str, dp_size: int, ep: bool, role: str = "mixed") -> dict[str, Any]:
    """vLLM engine args for one MoE instance of ``dp_size`` DP ranks, experts sharded (``ep``) or not.

    With ``ep`` vLLM shards the experts over the DP x TP ranks instead of
    replicating them; the all-to-all backend that moves tokens between those
    ranks depends on the vendor and on the role (prefill wants throughput,
    decode latency). A plain instance (``dp_size == 1``, no EP) gets nothing.
    """
    if dp_size < 1:
        raise ValueError(f"dp_size must be at least 1, got {dp_size}")
    if dp_size == 1 and not ep:
        return {}
    settings = vendor_settings(vendor).expert_parallel
    if settings is None:
        raise ValueError(f"vendor {vendor!r} runs no expert/data-parallel MoE instances")
    if role not in settings.all2all_backend:
        raise ValueError(
            f"no all2all backend for role {role!r} on {vendor!r}; known: {', '.join(settings.all2all_backend)}"
        )
    args: dict[str, Any] = dict(settings.engine_args)
    args.update(data_parallel_size=dp_size, enable_expert_parallel=ep, all2all_backend=settings.all2all_backend[role])
    return args


def expert_parallel_env(vendor: str, dp_size: int, ep: bool) -> dict[str, str]:
    """Extra environment for an EP/DP instance (empty for a plain one); set before vLLM is imported."""
    settings = vendor_settings(vendor).expert_parallel
    if settings is None or (dp_size == 1 and not ep):
        return {}
    return dict(settings.env)


def dp_ranks(dp_size: int, start_rank: int = 0, local_size: int | None = None) -> list[int]:
    """The DP ranks one instance hosts: what ``WorkerIdentity.data_parallel_ranks`` lists.

    A single-node instance hosts all ``dp_size`` ranks from 0 (a plain one:
    rank 0). A multi-node instance (vLLM's ``data_parallel_start_rank`` and
    ``data_parallel_size_local``) hosts ``local_size`` of them from ``start_rank``.
    """
    local = dp_size if local_size is None else local_size
    if dp_size < 1 or local < 1 or start_rank < 0 or start_rank + local > dp_size:
        raise ValueError(f"ranks {start_rank}..{start_rank + local - 1} do not fit in DP size {dp_size}")
    return list(range(start_rank, start_rank + local))


def cpu_threads_bind(cores: Sequence[int], dp_size: int, tp_size: int = 1) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for a CPU instance: one core list per rank, ``|``-separated.

    vLLM's CPU build wants exactly DP x TP lists, in [DP, TP] order (rank r of
    DP group d takes list d*TP + r; vllm/utils/ompmultiprocessing.py); one list
    for a DP instance fails with "Given number of CPU id list [] doesn't match
    local world size 1". The worker's cores are split evenly; with fewer
    cores than ranks, ranks share cores round-robin (slow, but it runs).
    """
    ranks = dp_size * tp_size
    if ranks < 1 or not cores:
        raise ValueError(f"need at least one core and one rank, got cores={list(cores)} ranks={ranks}")
    if len(cores) < ranks:
        return "|".join(str(cores[i % len(cores)]) for i in range(ranks))
    per, extra = divmod(len(cores), ranks)
    groups, at = [], 0
    for i in range(ranks):
        n = per + (1 if i < extra else 0)
        groups.append(",".join(str(c) for c in cores[at : at + n]))
        at += n
    return "|".join(groups)


def kv_event_ports(base_port: int, ranks: Sequence[int]) -> dict[int, int]:
    """The loopback port each DP rank publishes its KV-cache events to.

    vLLM offsets a KV-events endpoint's port by the publishing engine's DP
    rank (``ZmqEventPublisher.offset_endpoint_port``; port 0 is not offset),
    so a worker that subscribes for a DP instance binds one port per rank,
    ``base_port + rank``, and reads the rank from each batch's
    ``data_parallel_rank``.
    """
    if base_port <= 0:
        raise ValueError("DP ranks need a fixed base port: vLLM does not offset port 0")
    return {rank: base_port + rank for rank in ranks}


class RankLoad(Protocol):
    """What :func:`pick_dp_rank` reads from a rank's load (``LoadReport`` fits)."""

    num_waiting: int
    num_running: int
    kv_cache_usage: float


def pick_dp_rank(
    loads: Mapping[int, RankLoad],
    cached_tokens: Mapping[int, int] | None = None,
    recent: Mapping[int, int] | None = None,
) -> int:
    """The DP rank to pin a request to: most prefix-cache hits first, then least loaded.

    The load score is vLLM's own DP balancer's (``DPLBAsyncMPClient``:
    waiting + running, plus waiting x 6 x (KV usage - 0.5) when the KV cache
    is over half full), so pinning never does worse than leaving the choice
    to vLLM, and it adds what vLLM's balancer does not know: which rank
    holds the prompt's prefix (KV events carry their rank). Ties go to the
    rank given the fewest requests lately (`recent`: otherwise idle ranks
    would all tie and every request of a light, sequential load would land on
    rank 0), then to the lowest rank, so the choice is deterministic.
    """
    if not loads:
        raise ValueError("no DP ranks to choose from")
    cached, lately = cached_tokens or {}, recent or {}

    def key(rank: int) -> tuple[float, float, int, int]:
        load = loads[rank]
        score = float(load.num_waiting + load.num_running)
        if load.num_waiting:
            score += load.num_waiting * 6.0 * max(0.0, float(load.kv_cache_usage) - 0.5)
        return (-float(cached.get(rank, 0)), score, lately.get(rank, 0), rank)

    return min(loads, key=key)
