"""The launch configuration of expert/data-parallel MoE workers, per vendor, without starting an engine.

What Tessera would hand vLLM for an EP/DP instance (engine args, environment,
the DP ranks it registers, CPU core binding, KV-event ports, the rank a request
is pinned to) is pure; these tests pin it down and check it against vLLM
0.32's own configuration types, so a GPU box gets a shape vLLM accepts. The
CPU collectives that make DP MoE run on the CPU build are checked with two
ranks as threads. The engines themselves: benchmarks/probe_moe_cpu.py here,
deploy/gpu-checks/expert_parallel.sh on GPUs.
"""

from __future__ import annotations

import dataclasses
import threading
import typing
from types import SimpleNamespace

import pytest

from tessera.engine_model.catalog.expert_parallel import (
    cpu_threads_bind,
    dp_ranks,
    expert_parallel_engine_args,
    expert_parallel_env,
    kv_event_ports,
    pick_dp_rank,
)
from tessera.engine_model.catalog.vendors import vendor_names, vendor_settings

EP_VENDORS = ["cpu", "nvidia", "amd"]
ROLES = ["mixed", "prefill", "decode"]


@pytest.mark.parametrize("vendor", EP_VENDORS)
def test_a_plain_instance_gets_no_extra_args(vendor):
    assert expert_parallel_engine_args(vendor, 1, ep=False) == {}
    assert expert_parallel_env(vendor, 1, ep=False) == {}


@pytest.mark.parametrize(
    ("vendor", "role", "backend"),
    [
        ("cpu", "mixed", "allgather_reducescatter"),
        ("cpu", "decode", "allgather_reducescatter"),
        ("nvidia", "mixed", "allgather_reducescatter"),
        ("nvidia", "prefill", "deepep_high_throughput"),
        ("nvidia", "decode", "deepep_low_latency"),
        ("amd", "mixed", "allgather_reducescatter"),
        ("amd", "prefill", "mori_high_throughput"),
        ("amd", "decode", "mori_low_latency"),
    ],
)
def test_ep_dp_args_name_the_vendors_all2all_backend_for_the_role(vendor, role, backend):
    args = expert_parallel_engine_args(vendor, 4, ep=True, role=role)
    assert args["data_parallel_size"] == 4
    assert args["enable_expert_parallel"] is True
    assert args["all2all_backend"] == backend


def test_cpu_ep_dp_args_carry_the_collectives_hook():
    from services.worker.vllm_cpu_collectives import WORKER_EXTENSION

    assert expert_parallel_engine_args("cpu", 2, ep=True)["worker_extension_cls"] == WORKER_EXTENSION
    assert expert_parallel_engine_args("cpu", 2, ep=False)["enable_expert_parallel"] is False
    assert "worker_extension_cls" not in expert_parallel_engine_args("nvidia", 2, ep=True)


def test_gpu_ep_env_randomizes_idle_dp_ranks_dummy_batches():
    assert expert_parallel_env("nvidia", 2, ep=True) == {"VLLM_RANDOMIZE_DP_DUMMY_INPUTS": "1"}
    assert expert_parallel_env("amd", 2, ep=True) == {"VLLM_RANDOMIZE_DP_DUMMY_INPUTS": "1"}
    assert expert_parallel_env("cpu", 2, ep=True) == {}


def test_vendors_without_ep_and_bad_shapes_are_refused():
    assert vendor_settings("tenstorrent").expert_parallel is None
    with pytest.raises(ValueError, match="no expert/data-parallel"):
        expert_parallel_engine_args("tenstorrent", 2, ep=True)
    assert expert_parallel_engine_args("tenstorrent", 1, ep=False) == {}
    with pytest.raises(ValueError, match="role"):
        expert_parallel_engine_args("nvidia", 2, ep=True, role="router")
    with pytest.raises(ValueError, match="dp_size"):
        expert_parallel_engine_args("nvidia", 0, ep=True)


def test_every_vendor_row_says_whether_it_runs_ep():
    for vendor in vendor_names():
        settings = vendor_settings(vendor).expert_parallel
        if settings is not None:
            assert set(settings.all2all_backend) == set(ROLES), vendor


@pytest.fixture(scope="module")
def vllm_types():
    pytest.importorskip("vllm")
    from vllm.config.parallel import All2AllBackend, ParallelConfig
    from vllm.engine.arg_utils import AsyncEngineArgs

    return SimpleNamespace(
        backends=set(typing.get_args(All2AllBackend)),
        ParallelConfig=ParallelConfig,
        fields={f.name for f in dataclasses.fields(AsyncEngineArgs)},
    )


@pytest.mark.parametrize("vendor", EP_VENDORS)
@pytest.mark.parametrize("role", ROLES)
def test_vllm_accepts_the_launch_shape(vllm_types, vendor, role):
    """Every arg is an AsyncEngineArgs field and the parallel part builds a vLLM ParallelConfig."""
    args = expert_parallel_engine_args(vendor, 2, ep=True, role=role)
    assert set(args) <= vllm_types.fields
    backend = args["all2all_backend"]
    assert backend in vllm_types.backends
    assert backend not in ("pplx", "naive"), "removed in vLLM 0.32: it falls back to allgather_reducescatter"
    config = vllm_types.ParallelConfig(data_parallel_size=2, enable_expert_parallel=True, all2all_backend=backend)
    assert config.all2all_backend == backend  # not rewritten by vLLM's fallback
    assert config.use_all2all


def test_dp_ranks_are_what_the_instance_hosts():
    assert dp_ranks(1) == [0]
    assert dp_ranks(4) == [0, 1, 2, 3]
    assert dp_ranks(8, start_rank=4, local_size=4) == [4, 5, 6, 7]
    with pytest.raises(ValueError):
        dp_ranks(4, start_rank=2, local_size=4)
    with pytest.raises(ValueError):
        dp_ranks(0)


def test_cpu_threads_bind_gives_one_core_list_per_rank():
    assert cpu_threads_bind([1], 1) == "1"
    assert cpu_threads_bind([1], 2) == "1|1"  # two ranks sharing one core (this machine)
    assert cpu_threads_bind([0, 1], 2) == "0|1"
    assert cpu_threads_bind([4, 5, 6, 7, 8], 2) == "4,5,6|7,8"
    assert cpu_threads_bind([0, 1, 2, 3], 2, tp_size=2) == "0|1|2|3"  # [DP, TP] order
    with pytest.raises(ValueError):
        cpu_threads_bind([], 2)


def test_kv_event_ports_follow_vllms_per_rank_offset():
    assert kv_event_ports(5557, [0, 1, 2]) == {0: 5557, 1: 5558, 2: 5559}
    assert kv_event_ports(6000, dp_ranks(8, 4, 2)) == {4: 6004, 5: 6005}
    with pytest.raises(ValueError, match="port 0"):
        kv_event_ports(0, [0, 1])


def _load(waiting: int = 0, running: int = 0, kv: float = 0.0) -> SimpleNamespace:
    return SimpleNamespace(num_waiting=waiting, num_running=running, kv_cache_usage=kv)


def test_pick_dp_rank_prefers_cached_prefix_then_least_load():
    loads = {0: _load(running=3), 1: _load(running=1), 2: _load(running=1)}
    assert pick_dp_rank(loads) == 1  # least loaded, lowest rank on ties
    assert pick_dp_rank(loads, cached_tokens={0: 64}) == 0  # the prefix wins over load
    idle = {0: _load(), 1: _load()}
    assert (
        pick_dp_rank(idle) == 0 and pick_dp_rank(idle, recent={0: 3, 1: 1}) == 1
    )  # equal load: the rank used least lately
    # A queue on a nearly full KV cache weighs more than the same queue on an empty one.
    assert pick_dp_rank({0: _load(waiting=2, kv=0.95), 1: _load(waiting=2, running=2, kv=0.1)}) == 1
    with pytest.raises(ValueError):
        pick_dp_rank({})


def test_pick_dp_rank_reads_load_reports():
    from tessera.v1 import common_pb2 as pb

    reports = {
        0: pb.LoadReport(data_parallel_rank=0, num_running=5),
        1: pb.LoadReport(data_parallel_rank=1, num_running=2, num_waiting=1, kv_cache_usage=0.2),
    }
    assert pick_dp_rank(reports) == 1


class _ThreadRanks:
    """Two 'ranks' as threads, with the all_gather/all_reduce a CpuCommunicator offers."""

    def __init__(self, world: int) -> None:
        self.world = world
        self.barrier = threading.Barrier(world)
        self.slots: list = [None] * world

    def comm(self, rank: int) -> SimpleNamespace:
        import torch

        def exchange(tensor):
            self.slots[rank] = tensor.clone()
            self.barrier.wait()
            out = list(self.slots)
            self.barrier.wait()
            return out

        def all_gather(tensor, dim=0):
            return torch.cat(exchange(tensor), dim=dim)

        def all_reduce(tensor):
            tensor.copy_(torch.stack(exchange(tensor)).sum(dim=0))
            return tensor

        return SimpleNamespace(world_size=self.world, rank_in_group=rank, all_gather=all_gather, all_reduce=all_reduce)

    def run(self, fn):
        results: list = [None] * self.world
        errors: list = []

        def body(rank):
            try:
                results[rank] = fn(self.comm(rank), rank)
            except BaseException as exc:  # noqa: BLE001 - re-raised below
                errors.append(exc)
                self.barrier.abort()

        threads = [threading.Thread(target=body, args=(r,)) for r in range(self.world)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(10)
        if errors:
            raise errors[0]
        return results


@pytest.fixture(scope="module")
def shim():
    pytest.importorskip("vllm")
    import services.worker.vllm_cpu_collectives as shim

    return shim


def test_cpu_all_gatherv_concatenates_uneven_rows(shim):
    import torch

    inputs = [torch.arange(6, dtype=torch.float32).reshape(3, 2), torch.full((1, 2), 9.0)]
    ids = [torch.tensor([[1], [2], [3]], dtype=torch.int32), torch.tensor([[7]], dtype=torch.int32)]
    out = _ThreadRanks(2).run(lambda comm, r: shim._all_gatherv(comm, [inputs[r], ids[r]], 0, [3, 1]))
    for hidden, topk in out:
        assert torch.equal(hidden, torch.cat(inputs))
        assert torch.equal(topk, torch.cat(ids))


def test_cpu_reduce_scatterv_sums_then_keeps_each_ranks_rows(shim):
    import torch

    full = [torch.arange(8, dtype=torch.float32).reshape(4, 2), torch.ones(4, 2)]
    out = _ThreadRanks(2).run(lambda comm, r: shim._reduce_scatterv(comm, full[r], 0, [3, 1]))
    total = full[0] + full[1]
    assert torch.equal(out[0], total[:3])
    assert torch.equal(out[1], total[3:])


def test_localize_experts_zeroes_experts_held_elsewhere(shim):
    import torch

    expert_map = torch.tensor([-1, -1, 0, 1])  # this rank holds global experts 2 and 3
    weights = torch.tensor([[0.6, 0.4], [0.7, 0.3], [1.0, 0.0]])
    ids = torch.tensor([[2, 0], [1, 0], [3, 2]], dtype=torch.int32)
    local_w, local_ids, dropped = shim.localize_experts(weights, ids, expert_map)
    assert torch.equal(local_w, torch.tensor([[0.6, 0.0], [0.0, 0.0], [1.0, 0.0]]))
    assert local_ids.dtype == ids.dtype
    assert torch.equal(local_ids[:, 0], torch.tensor([0, 0, 1], dtype=torch.int32))
    assert dropped.tolist() == [False, True, False]


def test_the_shim_patches_vllm_once_and_only_where_it_lacks(shim):
    from vllm.distributed.device_communicators.cpu_communicator import CpuCommunicator

    assert shim.installed()
    assert CpuCommunicator.all_gatherv is shim._all_gatherv
    assert shim.install() is False  # idempotent: imported in every worker process
