"""What vLLM 0.32's CPU build lacks to run MoE models data- and expert-parallel, added from outside.

Two gaps, both known upstream (vllm-project/vllm issue #57837; PR #47778,
"[CPU] Add MoE DP/EP support", open, fixes both inside vLLM):

1. With ``data_parallel_size > 1`` every MoE layer moves tokens between the
   DP ranks through the ``allgather_reducescatter`` all-to-all (the only one
   the CPU build has). It calls ``all_gatherv`` and ``reduce_scatterv``
   (per-rank token counts differ), which ``CpuCommunicator`` does not
   implement: the first forward pass dies with a bare ``NotImplementedError``
   from ``base_device_communicator.py``. Dense models are unaffected (their DP
   ranks never talk).
2. With ``enable_expert_parallel`` over more than one rank, each rank holds
   only its slice of the experts, but the CPU unquantized experts kernel
   ignores ``expert_map`` and indexes its local weights with global expert
   ids: an out-of-bounds read that kills the worker process without a trace.

:func:`install` adds the two collectives, built on the communicator's own
``all_gather`` and ``all_reduce`` (gloo): pad every rank's rows to the largest
count, gather, cut the padding off; reduce-scatter as an all-reduce followed
by taking this rank's rows. It also maps global expert ids to local ones
before the CPU kernel runs, giving non-local (top-k) slots zero weight, so
each rank adds only its own experts' share and the reduce-scatter sums the
shares. Correct, not fast (each rank moves the whole batch), which is what a
CPU test of the DP/EP path needs. It leaves what a later vLLM implements
alone, and it is idempotent.

The collectives run in vLLM's worker processes, which the CPU build always
*spawns* (vllm/platforms/cpu.py forces VLLM_WORKER_MULTIPROC_METHOD=spawn),
so patching the engine's parent process does nothing. Instead the engine arg
``worker_extension_cls=WORKER_EXTENSION`` makes vLLM import this module in
every worker process before the worker is built; importing it installs.
vendors.yaml puts that arg in the CPU row's expert_parallel engine_args.
"""

from __future__ import annotations

from typing import Any

_MARK = "_tessera_gatherv"
WORKER_EXTENSION = "services.worker.vllm_cpu_collectives.CpuCollectivesInstalled"


def install() -> bool:
    """Add the two collectives to vLLM's CpuCommunicator and the expert map to its MoE kernel; True if
    anything changed."""
    from vllm.distributed.device_communicators.base_device_communicator import DeviceCommunicatorBase
    from vllm.distributed.device_communicators.cpu_communicator import CpuCommunicator

    added = False
    if CpuCommunicator.all_gatherv is DeviceCommunicatorBase.all_gatherv:
        CpuCommunicator.all_gatherv = _all_gatherv  # type: ignore[method-assign]
        added = True
    if CpuCommunicator.reduce_scatterv is DeviceCommunicatorBase.reduce_scatterv:
        CpuCommunicator.reduce_scatterv = _reduce_scatterv  # type: ignore[method-assign]
        added = True
    added = _install_expert_map() or added
    if added:
        setattr(CpuCommunicator, _MARK, True)
    return added


def _install_expert_map() -> bool:
    """Wrap the CPU unquantized experts kernel so it honours ``expert_map`` (vLLM passes it, the kernel drops it)."""
    from vllm.model_executor.layers.fused_moe.experts.cpu_moe import CPUUnquantizedExperts

    if getattr(CPUUnquantizedExperts.apply, _MARK, False):
        return False
    original = CPUUnquantizedExperts.apply

    def apply(
        self: Any,
        output: Any,
        hidden_states: Any,
        w1: Any,
        w2: Any,
        topk_weights: Any,
        topk_ids: Any,
        activation: Any,
        global_num_experts: int,
        expert_map: Any,
        *rest: Any,
        **kwargs: Any,
    ) -> None:
        if expert_map is None:
            return original(
                self,
                output,
                hidden_states,
                w1,
                w2,
                topk_weights,
                topk_ids,
                activation,
                global_num_experts,
                expert_map,
                *rest,
                **kwargs,
            )
        weights, ids, dropped = localize_experts(topk_weights, topk_ids, expert_map)
        original(
            self, output, hidden_states, w1, w2, weights, ids, activation, global_num_experts, None, *rest, **kwargs
        )
        output[dropped] = 0
        return None

    setattr(apply, _MARK, True)
    CPUUnquantizedExperts.apply = apply  # type: ignore[method-assign]
    return True


def installed() -> bool:
    """Whether :func:`install` patched this process's vLLM."""
    from vllm.distributed.device_communicators.cpu_communicator import CpuCommunicator

    return bool(getattr(CpuCommunicator, _MARK, False))


def localize_experts(topk_weights: Any, topk_ids: Any, expert_map: Any) -> tuple[Any, Any, Any]:
    """Global top-k expert ids to this rank's local ones, for a kernel that only knows local experts.

    ``expert_map[g]`` is expert g's local slot here, or -1 if another rank
    holds it. A slot held elsewhere gets weight 0 (and local id 0, any valid
    one), so this rank adds nothing for it. Returns the weights, the ids and
    the rows whose every expert lives elsewhere: a router weight applied to
    the input already (top-1 models) is not masked by a zero weight, so the
    caller zeroes those rows of the output.
    """
    local_ids = expert_map[topk_ids.long()]
    elsewhere = local_ids < 0
    return (topk_weights.masked_fill(elsewhere, 0), local_ids.clamp(min=0).to(topk_ids.dtype), elsewhere.all(dim=1))


def _all_gatherv(self: Any, input_: Any, dim: int = 0, sizes: list[int] | None = None) -> Any:
    """Concatenate every rank's rows (``sizes[r]`` of them from rank r) along dim 0."""
    if dim != 0:
        raise NotImplementedError("only dim 0 all-gatherv is supported")
    if isinstance(input_, (list, tuple)):
        return [_gatherv_one(self, t, sizes) for t in input_]
    return _gatherv_one(self, input_, sizes)


def _gatherv_one(self: Any, tensor: Any, sizes: list[int] | None) -> Any:
    import torch

    world = self.world_size
    if world == 1:
        return tensor
    sizes = list(sizes) if sizes is not None else [tensor.shape[0]] * world
    assert len(sizes) == world and tensor.shape[0] == sizes[self.rank_in_group], (sizes, tensor.shape)
    rows = max(sizes)
    padded = tensor.new_zeros((rows,) + tuple(tensor.shape[1:]))
    padded[: tensor.shape[0]] = tensor
    gathered = self.all_gather(padded.contiguous(), dim=0)
    return torch.cat([gathered[r * rows : r * rows + sizes[r]] for r in range(world)], dim=0)


def _reduce_scatterv(self: Any, input_: Any, dim: int = -1, sizes: list[int] | None = None) -> Any:
    """Sum over ranks, then keep this rank's ``sizes[rank]`` rows along ``dim``."""
    world = self.world_size
    if world == 1:
        return input_
    if dim < 0:
        dim += input_.dim()
    rows_first = input_.movedim(dim, 0).contiguous()
    total = rows_first.shape[0]
    sizes = list(sizes) if sizes is not None else [total // world] * world
    assert len(sizes) == world and sum(sizes) == total, (sizes, total)
    summed = self.all_reduce(rows_first.clone())
    start = sum(sizes[: self.rank_in_group])
    return summed[start : start + sizes[self.rank_in_group]].movedim(0, dim).contiguous()


class CpuCollectivesInstalled:
    """vLLM's ``worker_extension_cls`` hook: an empty mixin whose import (below) is the point."""


install()
