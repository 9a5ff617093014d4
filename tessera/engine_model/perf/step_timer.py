"""Fast step times for simulators: the roofline of roofline.step_time, memoised.

A simulated engine asks for the time of every step it takes; a data-center
simulation takes hundreds of thousands of steps. Everything in a step except
attention depends only on how many tokens and sequences it carries, so that
part is computed once per (tokens, sequences) and kept; attention is costed
from the batch each time. The result equals step_time(...).total_s exactly
(tests/unit/test_perf_model.py checks it), it is just cheaper to ask for.
"""

from __future__ import annotations

from collections.abc import Sequence

from tessera.engine_model.catalog.accelerators import Accelerator
from tessera.engine_model.perf.efficiency import Efficiency
from tessera.engine_model.perf.model_arch import ModelArch
from tessera.engine_model.perf.operators import (
    Batch,
    Parallelism,
    attention_ops,
    expert_ops,
    rank_batches,
    rank_token_ops,
)
from tessera.engine_model.perf.roofline import communication_time, op_time


class StepTimer:
    """step time of (prefill chunks, decode contexts) for one model on one accelerator instance."""

    def __init__(
        self, arch: ModelArch, accel: Accelerator, par: Parallelism | None = None, eff: Efficiency | None = None
    ) -> None:
        self.arch, self.accel = arch, accel
        self.par = par or Parallelism()
        self.eff = eff or Efficiency()
        self._token_part: dict[tuple[int, int], float] = {}
        self._expert_part: dict[int, float] = {}

    def _tokens_time(self, tokens: int, sequences: int) -> float:
        """One rank's token-dependent operators (attention and routed experts aside)."""
        key = (tokens, sequences)
        t = self._token_part.get(key)
        if t is None:
            arch, accel, eff = self.arch, self.accel, self.eff
            t = sum(
                op_time(op, accel, eff, arch.dtype_bytes) for op in rank_token_ops(arch, tokens, sequences, self.par)
            )
            self._token_part[key] = t
        return t

    def _experts_time(self, tokens: int) -> float:
        """The routed experts and the collectives for a step of `tokens` (the instance's)."""
        t = self._expert_part.get(tokens)
        if t is None:
            arch, accel, eff = self.arch, self.accel, self.eff
            t = sum(op_time(op, accel, eff, arch.dtype_bytes) for op in expert_ops(arch, tokens, self.par))
            if self.par.cp == 1:  # CP's KV all-gather depends on the prefill, not just the count
                t += communication_time(arch, Batch(prefill=((tokens, 0),)), accel, self.par, eff)
            self._expert_part[tokens] = t
        return t

    def __call__(self, prefill: Sequence[tuple[int, int]] = (), decode: Sequence[int] = ()) -> float:
        """Seconds for one step: prefill as (new tokens, cached/computed prefix) per chunk,
        decode as the context length of each decoding sequence. An empty step takes 0."""
        tokens = sum(n for n, _ in prefill) + len(decode)
        if tokens == 0:
            return 0.0
        batch = Batch(prefill=tuple(prefill), decode=tuple(decode))
        slowest = max(self._rank_time(r) for r in rank_batches(batch, self.par.dp) if r.tokens)
        comm = 0.0
        if self.par.cp > 1:
            comm = communication_time(self.arch, batch, self.accel, self.par, self.eff)
        return slowest + self._experts_time(tokens) + comm + self.eff.step_overhead_s

    def _rank_time(self, batch: Batch) -> float:
        kv_bytes = self.arch.kv_element_bytes  # attention runs in the KV cache's dtype
        attention = sum(op_time(op, self.accel, self.eff, kv_bytes) for op in attention_ops(self.arch, batch, self.par))
        return self._tokens_time(batch.tokens, batch.sequences) + attention

    def prefill_tokens_per_s(self, tokens: int = 4096) -> float:
        """Prefill throughput on a long prompt: what a scheduler divides queued prompt tokens by."""
        return tokens / self(prefill=[(tokens, 0)])

    def decode_base_s(self, context: int = 2048) -> float:
        """One decode step of a single sequence: the floor every step pays."""
        return self(decode=[context])

    def decode_step_s(self, sequences: int = 16, context: int = 2048) -> float:
        """One decode step of a moderate batch: what every co-scheduled prefill chunk also pays."""
        return self(decode=[context] * sequences)
