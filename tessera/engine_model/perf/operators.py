"""What one engine step asks of one device: FLOPs and bytes per operator.

This module only counts; it knows nothing of any accelerator. Keeping the
counting apart from the timing (roofline.py) means the same operator list can
be timed on every catalog row, and the counts can be checked by hand.

All counts are per device under tensor parallelism `tp` (attention heads and
MLP widths split `tp` ways, norms/embedding/residual adds replicated) and, for
MoE layers, expert parallelism `ep` (whole experts spread over `ep` devices).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from tessera.engine_model.perf.model_arch import ModelArch

# Operator kinds; each has its own efficiency factors (see efficiency.py). The
# memory-bound kernels are told apart because measured kernels differ by 3x in
# achieved bandwidth (a residual add streams, an RMSNorm reduces first).
GEMM = "gemm"
ATTENTION = "attention"
NORM = "norm"
ACTIVATION = "activation"
ROPE = "rope"
RESIDUAL_ADD = "residual_add"
EMBEDDING = "embedding"
KINDS = (GEMM, ATTENTION, NORM, ACTIVATION, ROPE, RESIDUAL_ADD, EMBEDDING)


@dataclass(frozen=True)
class Parallelism:
    """How one engine instance spreads a model over its devices.

    `ep > 1` places whole experts on `ep` devices (vLLM's expert parallelism,
    EP = TP here); `ep == 1` splits every expert `tp` ways like a dense MLP.
    """

    tp: int = 1
    ep: int = 1

    def __post_init__(self) -> None:
        if self.tp < 1 or self.ep < 1:
            raise ValueError("tp and ep must be >= 1")
        if self.ep > 1 and self.ep != self.tp:
            raise ValueError("expert parallelism is modelled with ep == tp (experts over the TP group)")

    @property
    def devices(self) -> int:
        return self.tp


@dataclass(frozen=True)
class Batch:
    """One engine step's work.

    prefill: (new_tokens, cached_prefix_tokens) per prefill chunk; the prefix is
    already in the KV cache (prefix-cache hit or an earlier chunk).
    decode: context length (tokens already in the KV cache) per decoding sequence.
    """

    prefill: tuple[tuple[int, int], ...] = ()
    decode: tuple[int, ...] = ()

    @property
    def tokens(self) -> int:
        """Tokens that go through the GEMMs this step."""
        return sum(n for n, _ in self.prefill) + len(self.decode)

    @property
    def sequences(self) -> int:
        """Rows of logits: one per prefill chunk (its last token) and one per decode."""
        return len(self.prefill) + len(self.decode)


@dataclass(frozen=True)
class OpCost:
    """One operator of the step on one device.

    `count` is how many times it runs per step (e.g. once per layer);
    `rows` is a GEMM's M dimension (tokens per expert for MoE): small M leaves
    tensor cores idle, so GEMM compute efficiency is a function of it.
    """

    name: str
    kind: str
    flops: float
    bytes: float
    count: int = 1
    rows: float = 0.0


def gemm(name: str, m: int, k: int, n: int, dtype_bytes: int, count: int = 1) -> OpCost:
    """x[m,k] @ w[k,n]: 2mkn FLOPs; reads weight and input, writes output."""
    flops = 2.0 * m * k * n
    return OpCost(name, GEMM, flops, float(dtype_bytes) * (k * n + m * k + m * n), count, float(m))


def local_heads(arch: ModelArch, tp: int) -> tuple[int, int]:
    """(query heads, KV heads) on one device; KV heads are replicated when fewer than tp."""
    return math.ceil(arch.heads / tp), max(1, math.ceil(arch.kv_heads / tp))


def dense_layer_ops(arch: ModelArch, tokens: int, par: Parallelism) -> list[OpCost]:
    """The per-layer operators other than attention and the MLP (counted once per layer)."""
    d, t, h, L = arch.dtype_bytes, tokens, arch.hidden, arch.layers
    q, kv = local_heads(arch, par.tp)
    hd = arch.head_dim
    return [
        OpCost("input_norm", NORM, 4.0 * t * h, d * (2.0 * t * h + h), L),
        gemm("qkv_proj", t, h, (q + 2 * kv) * hd, d, L),
        OpCost("rope", ROPE, 6.0 * t * (q + kv) * hd, d * 2.0 * t * (q + kv) * hd, L),
        gemm("o_proj", t, q * hd, h, d, L),
        OpCost("post_attention_norm", NORM, 4.0 * t * h, d * (2.0 * t * h + h), L),
        OpCost("residual_add", RESIDUAL_ADD, 2.0 * t * h, d * 3.0 * t * h, 2 * L),
    ]


def mlp_ops(arch: ModelArch, tokens: int, par: Parallelism) -> list[OpCost]:
    """Dense MLP (gate/up fused, activation, down) or MoE experts, per layer."""
    d, t, h, L = arch.dtype_bytes, tokens, arch.hidden, arch.layers
    if not arch.is_moe:
        width = math.ceil(arch.intermediate / par.tp)
        up = (2 if arch.gated_mlp else 1) * width
        act_bytes = d * t * width * (3 if arch.gated_mlp else 2)
        return [
            gemm("mlp_up_gate", t, h, up, d, L),
            OpCost("mlp_act", ACTIVATION, 4.0 * t * width, act_bytes, L),
            gemm("mlp_down", t, width, h, d, L),
        ]
    return moe_ops(arch, tokens, par)


def moe_ops(arch: ModelArch, tokens: int, par: Parallelism) -> list[OpCost]:
    """Routed experts as grouped GEMMs: weight bytes of the experts actually hit, FLOPs of the routed tokens.

    Expected distinct experts hit by `tokens` tokens choosing top_k of E uniformly:
    E * (1 - (1 - k/E)^tokens). Load is assumed balanced across devices.
    """
    d, t, h, L = arch.dtype_bytes, tokens, arch.hidden, arch.layers
    e, k, mats = arch.num_experts, arch.top_k, arch.mlp_matrices
    ep = par.ep
    tp_split = par.tp if ep == 1 else 1
    width = math.ceil(arch.expert_intermediate / tp_split)
    local_experts = e / ep
    active = local_experts * (1.0 - (1.0 - k / e) ** t)
    routed = t * k / ep  # token-expert pairs computed on this device
    flops = 2.0 * routed * h * width * mats
    weight_bytes = active * mats * h * width * d
    act_bytes = d * routed * (2 * h + (mats + 1) * width)
    rows_per_expert = routed / max(active, 1.0)
    return [
        gemm("moe_router", t, h, e, d, L),
        OpCost("moe_experts", GEMM, flops, weight_bytes + act_bytes, L, rows_per_expert),
        OpCost("moe_act", ACTIVATION, 4.0 * routed * width, d * routed * width * (mats), L),
    ]


def attention_ops(arch: ModelArch, batch: Batch, par: Parallelism) -> list[OpCost]:
    """Attention proper (QK^T, softmax, PV) for prefill chunks and decodes, per layer.

    Prefill: new token i of a chunk attends to cached + i + 1 keys (causal), so
    FLOPs grow as n*c + n^2/2 per chunk. Decode: one query per sequence, so time
    is dominated by reading its whole KV cache once.
    """
    d, L, hd = arch.dtype_bytes, arch.layers, arch.head_dim
    q, kv = local_heads(arch, par.tp)
    ops: list[OpCost] = []
    if batch.prefill:
        pairs = sum(n * c + n * (n + 1) / 2 for n, c in batch.prefill)
        flops = 4.0 * hd * q * pairs
        new = sum(n for n, _ in batch.prefill)
        keys = sum(n + c for n, c in batch.prefill)
        nbytes = d * (2.0 * new * q * hd + 2.0 * keys * kv * hd + 2.0 * new * kv * hd)
        ops.append(OpCost("attention_prefill", ATTENTION, flops, nbytes, L))
    if batch.decode:
        ctx = float(sum(batch.decode))
        n = len(batch.decode)
        flops = 4.0 * hd * q * (ctx + n)
        nbytes = d * (2.0 * (ctx + n) * kv * hd + 2.0 * n * q * hd)
        ops.append(OpCost("attention_decode", ATTENTION, flops, nbytes, L))
    return ops


def embedding_op(arch: ModelArch, tokens: int) -> OpCost:
    """Embedding lookup: gathers `tokens` rows and writes them out (vocab-parallel under TP)."""
    return OpCost("embedding", EMBEDDING, 0.0, arch.dtype_bytes * 2.0 * tokens * arch.hidden)


def token_ops(arch: ModelArch, tokens: int, sequences: int, par: Parallelism) -> list[OpCost]:
    """Every compute operator whose cost depends only on the step's token and sequence counts
    (everything but attention): `tokens` rows through the GEMMs, `sequences` rows of logits."""
    if tokens == 0:
        return []
    d, h = arch.dtype_bytes, arch.hidden
    vocab_local = math.ceil(arch.vocab / par.tp)
    return [
        embedding_op(arch, tokens),
        *dense_layer_ops(arch, tokens, par),
        *mlp_ops(arch, tokens, par),
        OpCost("final_norm", NORM, 4.0 * tokens * h, d * (2.0 * tokens * h + h)),
        gemm("lm_head", sequences, h, vocab_local, d),
    ]


def step_ops(arch: ModelArch, batch: Batch, par: Parallelism) -> list[OpCost]:
    """Every compute operator of one engine step on one device (communication is separate)."""
    if batch.tokens == 0:
        return []
    return [*token_ops(arch, batch.tokens, batch.sequences, par), *attention_ops(arch, batch, par)]
