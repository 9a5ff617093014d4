"""What one engine step asks of one device: FLOPs and bytes per operator.

This module only counts; it knows nothing of any accelerator. Keeping the
counting apart from the timing (roofline.py) means the same operator list can
be timed on every catalog row, and the counts can be checked by hand.

All counts are per device under tensor parallelism `tp` (attention heads and
MLP widths split `tp` ways, norms/embedding/residual adds replicated) and, for
MoE layers, expert parallelism `ep` (whole experts spread over `ep` devices).
Under data-parallel attention (`dp` ranks, vLLM's DP + EP deployment for
DeepSeek-class MoE) each rank runs attention and the dense parts for its own
sequences while the experts see every rank's tokens; under context parallelism
(`cp`) a prefill's tokens are split over `cp` ranks that each hold the weights.
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

    `ep > 1` places whole experts on `ep` devices (vLLM's expert parallelism:
    EP = DP x TP, every device of the instance); `ep == 1` splits every expert
    `tp` ways like a dense MLP. `dp` data-parallel attention ranks of `tp`
    devices each share the experts (vLLM's --data-parallel-size with
    --enable-expert-parallel). `cp` context-parallel ranks split a prefill's
    tokens (vLLM's prefill context parallelism), each rank holding the weights.
    """

    tp: int = 1
    ep: int = 1
    dp: int = 1
    cp: int = 1

    def __post_init__(self) -> None:
        if min(self.tp, self.ep, self.dp, self.cp) < 1:
            raise ValueError("tp, ep, dp and cp must be >= 1")
        if self.ep > 1 and self.ep != self.tp * self.dp:
            raise ValueError("expert parallelism is modelled with ep == dp * tp (experts over every device)")
        if self.cp > 1 and self.dp > 1:
            raise ValueError("context parallelism is modelled without data-parallel attention")

    @property
    def devices(self) -> int:
        return self.tp * self.dp * self.cp

    @property
    def ranks(self) -> int:
        """Attention ranks that each take a share of the batch."""
        return self.dp * self.cp


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
    """(query heads, KV heads) on one device; KV heads are replicated when fewer than tp (MLA's one
    latent counts as one KV head, replicated on every TP rank)."""
    return math.ceil(arch.heads / tp), 1 if arch.is_mla else max(1, math.ceil(arch.kv_heads / tp))


def _mla_projections(arch: ModelArch, t: int, q: int) -> list[OpCost]:
    """MLA's projections for `t` tokens and `q` local heads: the query (through its LoRA rank), the
    replicated down-projection to the latent, the up-projection (prefill) or the same weights absorbed
    into the query and output (decode: same FLOPs and bytes per token), and the output."""
    d, h, L = arch.dtype_bytes, arch.hidden, arch.layers
    nope, rope, v, lat = arch.qk_nope_head_dim, arch.qk_rope_head_dim, arch.v_head_dim, arch.kv_lora_rank
    q_ops = (
        [gemm("q_down", t, h, arch.q_lora_rank, d, L), gemm("q_up", t, arch.q_lora_rank, q * (nope + rope), d, L)]
        if arch.q_lora_rank
        else [gemm("q_proj", t, h, q * (nope + rope), d, L)]
    )
    return [
        *q_ops,
        gemm("kv_down", t, h, lat + rope, d, L),
        gemm("kv_up_absorbed", t, lat, q * (nope + v), d, L),
        OpCost("rope", ROPE, 6.0 * t * (q + 1) * rope, d * 2.0 * t * (q + 1) * rope, L),
        gemm("o_proj", t, q * v, h, d, L),
    ]


def dense_layer_ops(arch: ModelArch, tokens: int, par: Parallelism) -> list[OpCost]:
    """The per-layer operators other than attention and the MLP (counted once per layer)."""
    d, t, h, L = arch.dtype_bytes, tokens, arch.hidden, arch.layers
    q, kv = local_heads(arch, par.tp)
    hd = arch.head_dim
    norms = [
        OpCost("input_norm", NORM, 4.0 * t * h, d * (2.0 * t * h + h), L),
        OpCost("post_attention_norm", NORM, 4.0 * t * h, d * (2.0 * t * h + h), L),
        OpCost("residual_add", RESIDUAL_ADD, 2.0 * t * h, d * 3.0 * t * h, 2 * L),
    ]
    if arch.is_mla:
        return [norms[0], *_mla_projections(arch, t, q), *norms[1:]]
    return [
        norms[0],
        gemm("qkv_proj", t, h, (q + 2 * kv) * hd, d, L),
        OpCost("rope", ROPE, 6.0 * t * (q + kv) * hd, d * 2.0 * t * (q + kv) * hd, L),
        gemm("o_proj", t, q * hd, h, d, L),
        *norms[1:],
    ]


def _dense_mlp(arch: ModelArch, t: int, intermediate: int, tp: int, layers: int, prefix: str) -> list[OpCost]:
    d, h = arch.dtype_bytes, arch.hidden
    width = math.ceil(intermediate / tp)
    up = (2 if arch.gated_mlp else 1) * width
    act_bytes = d * t * width * (3 if arch.gated_mlp else 2)
    return [
        gemm(f"{prefix}_up_gate", t, h, up, d, layers),
        OpCost(f"{prefix}_act", ACTIVATION, 4.0 * t * width, act_bytes, layers),
        gemm(f"{prefix}_down", t, width, h, d, layers),
    ]


def mlp_ops(arch: ModelArch, tokens: int, par: Parallelism, moe_tokens: int | None = None) -> list[OpCost]:
    """Dense MLP (gate/up fused, activation, down) on the dense layers; on MoE layers the router,
    the shared experts (a dense MLP every token takes) and the routed experts. `moe_tokens`: tokens
    of every DP rank together, which the experts on this device serve (default: `tokens` x dp)."""
    ops = _dense_mlp(arch, tokens, arch.intermediate, par.tp, arch.mlp_layers, "mlp") if arch.mlp_layers else []
    if arch.is_moe:
        ops += moe_rank_ops(arch, tokens, par) + moe_ops(
            arch, tokens * par.dp if moe_tokens is None else moe_tokens, par
        )
    return ops


def moe_rank_ops(arch: ModelArch, tokens: int, par: Parallelism) -> list[OpCost]:
    """What each attention rank runs of an MoE layer for its own tokens: the router and the shared experts."""
    ops = [gemm("moe_router", tokens, arch.hidden, arch.num_experts, arch.dtype_bytes, arch.moe_layers)]
    if arch.shared_experts:
        width = arch.shared_experts * arch.expert_intermediate
        ops += _dense_mlp(arch, tokens, width, par.tp, arch.moe_layers, "shared_expert")
    return ops


def moe_ops(arch: ModelArch, tokens: int, par: Parallelism) -> list[OpCost]:
    """Routed experts as grouped GEMMs: weight bytes of the experts actually hit, FLOPs of the routed tokens.

    `tokens`: every token the experts of this instance serve this step (all DP ranks'). Expected
    distinct experts hit by `tokens` tokens choosing top_k of E uniformly: E * (1 - (1 - k/E)^tokens).
    Load is assumed balanced across devices.
    """
    d, t, h, L = arch.dtype_bytes, tokens, arch.hidden, arch.moe_layers
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
        OpCost("moe_experts", GEMM, flops, weight_bytes + act_bytes, L, rows_per_expert),
        OpCost("moe_act", ACTIVATION, 4.0 * routed * width, d * routed * width * (mats), L),
    ]


def attention_ops(arch: ModelArch, batch: Batch, par: Parallelism) -> list[OpCost]:
    """Attention proper (QK^T, softmax, PV) for prefill chunks and decodes, per layer.

    Prefill: new token i of a chunk attends to cached + i + 1 keys (causal), so
    FLOPs grow as n*c + n^2/2 per chunk. Decode: one query per sequence, so time
    is dominated by reading its whole KV cache once.
    """
    if arch.is_mla:
        return mla_attention_ops(arch, batch, par)
    d, L, hd = arch.kv_element_bytes, arch.layers, arch.head_dim
    q, kv = local_heads(arch, par.tp)
    ops: list[OpCost] = []
    if batch.prefill:
        pairs = sum(n * c + n * (n + 1) / 2 for n, c in batch.prefill) / par.cp
        flops = 4.0 * hd * q * pairs
        new = sum(n for n, _ in batch.prefill) / par.cp
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


def mla_attention_ops(arch: ModelArch, batch: Batch, par: Parallelism) -> list[OpCost]:
    """MLA attention as vLLM runs it: prefill expands the latent to per-head keys and values
    (qk_nope + qk_rope wide scores, v_head_dim wide values); decode uses the absorbed form, every
    head scoring the shared latent directly (kv_lora_rank + qk_rope wide scores, kv_lora_rank wide
    values), so a decode reads each sequence's latent cache once for all heads: MQA-like bytes."""
    d, L = arch.kv_element_bytes, arch.layers
    q, _ = local_heads(arch, par.tp)
    lat, qk, v = arch.latent_dim, arch.qk_head_dim, arch.v_head_dim
    ops: list[OpCost] = []
    if batch.prefill:
        pairs = sum(n * c + n * (n + 1) / 2 for n, c in batch.prefill) / par.cp
        flops = 2.0 * q * (qk + v) * pairs
        new = sum(n for n, _ in batch.prefill) / par.cp
        keys = sum(n + c for n, c in batch.prefill)
        nbytes = d * (new * q * (qk + v) + keys * (lat + q * (qk + v)) + new * lat)
        ops.append(OpCost("attention_prefill", ATTENTION, flops, nbytes, L))
    if batch.decode:
        ctx = float(sum(batch.decode))
        n = len(batch.decode)
        flops = 2.0 * q * (lat + arch.kv_lora_rank) * (ctx + n)
        nbytes = d * ((ctx + n) * lat + n * q * (lat + arch.kv_lora_rank))
        ops.append(OpCost("attention_decode", ATTENTION, flops, nbytes, L))
    return ops


def embedding_op(arch: ModelArch, tokens: int) -> OpCost:
    """Embedding lookup: gathers `tokens` rows and writes them out (vocab-parallel under TP)."""
    return OpCost("embedding", EMBEDDING, 0.0, arch.dtype_bytes * 2.0 * tokens * arch.hidden)


def rank_token_ops(arch: ModelArch, tokens: int, sequences: int, par: Parallelism) -> list[OpCost]:
    """What one attention rank runs for its own `tokens` and `sequences`, attention and routed
    experts aside (a context-parallel rank computes 1/cp of the tokens)."""
    if tokens == 0:
        return []
    t = math.ceil(tokens / par.cp)
    d, h = arch.dtype_bytes, arch.hidden
    vocab_local = math.ceil(arch.vocab / par.tp)
    mlp = _dense_mlp(arch, t, arch.intermediate, par.tp, arch.mlp_layers, "mlp") if arch.mlp_layers else []
    return [
        embedding_op(arch, t),
        *dense_layer_ops(arch, t, par),
        *mlp,
        *(moe_rank_ops(arch, t, par) if arch.is_moe else []),
        OpCost("final_norm", NORM, 4.0 * t * h, d * (2.0 * t * h + h)),
        gemm("lm_head", sequences, h, vocab_local, d),
    ]


def expert_ops(arch: ModelArch, tokens: int, par: Parallelism) -> list[OpCost]:
    """The routed experts on one device for `tokens` tokens of the whole instance (0 for a dense model)."""
    return moe_ops(arch, math.ceil(tokens / par.cp), par) if arch.is_moe and tokens else []


def token_ops(arch: ModelArch, tokens: int, sequences: int, par: Parallelism) -> list[OpCost]:
    """Every compute operator whose cost depends only on the step's token and sequence counts
    (everything but attention): `tokens` rows through the GEMMs, `sequences` rows of logits
    (one rank's: the experts see `tokens` x dp)."""
    return [*rank_token_ops(arch, tokens, sequences, par), *expert_ops(arch, tokens * par.dp, par)]


def rank_batches(batch: Batch, ranks: int) -> list[Batch]:
    """How vLLM's DP balancer spreads a step's work over `ranks` attention ranks: prefill chunks,
    longest first, to the rank with the fewest tokens; decodes round-robin. One rank = the batch."""
    if ranks <= 1:
        return [batch]
    prefill: list[list[tuple[int, int]]] = [[] for _ in range(ranks)]
    load = [0] * ranks
    for chunk in sorted(batch.prefill, key=lambda c: -c[0]):
        r = load.index(min(load))
        prefill[r].append(chunk)
        load[r] += chunk[0]
    decode: list[list[int]] = [[] for _ in range(ranks)]
    for i, ctx in enumerate(batch.decode):
        decode[i % ranks].append(ctx)
    return [Batch(tuple(p), tuple(dec)) for p, dec in zip(prefill, decode)]


def step_ops(arch: ModelArch, batch: Batch, par: Parallelism) -> list[OpCost]:
    """Every compute operator of one engine step on one device (communication is separate); under
    DP attention the operators of the busiest rank, whose time the others wait for."""
    if batch.tokens == 0:
        return []
    if par.dp > 1:
        ranks = rank_batches(batch, par.dp)
        busiest = max(ranks, key=lambda b: (b.tokens, sum(b.decode) + sum(c for _, c in b.prefill)))
        rank_ops = [*rank_token_ops(arch, busiest.tokens, busiest.sequences, par), *attention_ops(arch, busiest, par)]
        return [*rank_ops, *expert_ops(arch, batch.tokens, par)]
    return [
        *rank_token_ops(arch, batch.tokens, batch.sequences, par),
        *expert_ops(arch, batch.tokens, par),
        *attention_ops(arch, batch, par),
    ]
