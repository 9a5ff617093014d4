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
from tessera.engine_model.perf.operators import Batch, Parallelism, attention_ops, token_ops
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

    def _tokens_time(self, tokens: int, sequences: int) -> float:
        key = (tokens, sequences)
        t = self._token_part.get(key)
        if t is None:
            arch, accel, eff = self.arch, self.accel, self.eff
            t = sum(op_time(op, accel, eff, arch.dtype_bytes) for op in token_ops(arch, tokens, sequences, self.par))
            t += communication_time(arch, Batch(prefill=((tokens, 0),)), accel, self.par, eff)
            self._token_part[key] = t
        return t

    def __call__(self, prefill: Sequence[tuple[int, int]] = (), decode: Sequence[int] = ()) -> float:
        """Seconds for one step: prefill as (new tokens, cached/computed prefix) per chunk,
        decode as the context length of each decoding sequence. An empty step takes 0."""
        tokens = sum(n for n, _ in prefill) + len(decode)
        if tokens == 0:
            return 0.0
        batch = Batch(prefill=tuple(prefill), decode=tuple(decode))
        attention = sum(
            op_time(op, self.accel, self.eff, self.arch.dtype_bytes) for op in attention_ops(self.arch, batch, self.par)
        )
        return self._tokens_time(tokens, len(prefill) + len(decode)) + attention + self.eff.step_overhead_s

    def prefill_tokens_per_s(self, tokens: int = 4096) -> float:
        """Prefill throughput on a long prompt: what a scheduler divides queued prompt tokens by."""
        return tokens / self(prefill=[(tokens, 0)])

    def decode_base_s(self, context: int = 2048) -> float:
        """One decode step of a single sequence: the floor every step pays."""
        return self(decode=[context])

    def decode_step_s(self, sequences: int = 16, context: int = 2048) -> float:
        """One decode step of a moderate batch: what every co-scheduled prefill chunk also pays."""
        return self(decode=[context] * sequences)
