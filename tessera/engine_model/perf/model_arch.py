"""The shape of a decoder-only transformer, as far as cost is concerned.

The performance model needs sizes, not weights: how many FLOPs and bytes each
operator moves, how large the weights and the KV cache are. ModelArch carries
exactly those numbers, so the model can be built from a HuggingFace
config.json (already parsed by the caller) or from the constructors below.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_DTYPE_BYTES = {
    "float32": 4,
    "float": 4,
    "bfloat16": 2,
    "float16": 2,
    "half": 2,
    "float8_e4m3fn": 1,
    "float8_e5m2": 1,
    "fp8": 1,
    "int8": 1,
}

# Families whose MLP is up -> activation -> down (two matrices); everything else here is
# gated (SwiGLU/GeGLU: gate, up, down).
_UNGATED_MLP_MODEL_TYPES = frozenset(
    {"gpt2", "gpt_neox", "gptj", "opt", "falcon", "bloom", "phi", "gpt_bigcode", "starcoder2"}
)


@dataclass(frozen=True)
class ModelArch:
    """Sizes of a (possibly mixture-of-experts) decoder-only transformer.

    `intermediate` is the dense MLP width; for MoE models `expert_intermediate`
    is each routed expert's width and every layer is assumed to be an MoE layer
    (shared experts and dense-first-layers are not modelled).
    """

    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    head_dim: int
    intermediate: int
    vocab: int
    dtype_bytes: int = 2
    num_experts: int = 0
    top_k: int = 0
    expert_intermediate: int = 0
    gated_mlp: bool = True
    tied_embeddings: bool = False

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.num_experts and not (0 < self.top_k <= self.num_experts and self.expert_intermediate > 0):
            raise ValueError(f"{self.name}: MoE needs 0 < top_k <= num_experts and expert_intermediate > 0")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices per MLP/expert: gate+up+down for gated (SwiGLU) MLPs, up+down otherwise."""
        return 3 if self.gated_mlp else 2

    @property
    def q_dim(self) -> int:
        return self.heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def attention_params_per_layer(self) -> int:
        return self.hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden

    def mlp_params_per_layer(self) -> int:
        """All MLP weights of one layer (every expert for MoE, plus the router)."""
        if self.is_moe:
            return (
                self.num_experts * self.mlp_matrices * self.hidden * self.expert_intermediate
                + self.hidden * self.num_experts
            )
        return self.mlp_matrices * self.hidden * self.intermediate

    def param_count(self) -> int:
        per_layer = self.attention_params_per_layer() + self.mlp_params_per_layer() + 2 * self.hidden
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * per_layer + embeddings + self.hidden

    def weight_bytes(self) -> int:
        return self.param_count() * self.dtype_bytes

    def kv_bytes_per_token(self, kv_dtype_bytes: int | None = None) -> int:
        """K and V of one token over all layers (whole model, before any TP split)."""
        return 2 * self.layers * self.kv_dim * (kv_dtype_bytes or self.dtype_bytes)

    # -- well-known models ---------------------------------------------------------------

    @classmethod
    def llama2_7b(cls) -> ModelArch:
        return cls(
            "Llama-2-7b-hf",
            layers=32,
            hidden=4096,
            heads=32,
            kv_heads=32,
            head_dim=128,
            intermediate=11008,
            vocab=32000,
        )

    @classmethod
    def llama2_70b(cls) -> ModelArch:
        return cls(
            "Llama-2-70b-hf",
            layers=80,
            hidden=8192,
            heads=64,
            kv_heads=8,
            head_dim=128,
            intermediate=28672,
            vocab=32000,
        )

    @classmethod
    def smollm2_135m(cls) -> ModelArch:
        return cls(
            "SmolLM2-135M",
            layers=30,
            hidden=576,
            heads=9,
            kv_heads=3,
            head_dim=64,
            intermediate=1536,
            vocab=49152,
            tied_embeddings=True,
        )

    @classmethod
    def llama3_8b(cls) -> ModelArch:
        return cls(
            "Llama-3.1-8B", layers=32, hidden=4096, heads=32, kv_heads=8, head_dim=128, intermediate=14336, vocab=128256
        )

    @classmethod
    def llama3_70b(cls) -> ModelArch:
        return cls(
            "Llama-3.1-70B",
            layers=80,
            hidden=8192,
            heads=64,
            kv_heads=8,
            head_dim=128,
            intermediate=28672,
            vocab=128256,
        )

    @classmethod
    def qwen3_30b_a3b(cls) -> ModelArch:
        return cls(
            "Qwen3-30B-A3B",
            layers=48,
            hidden=2048,
            heads=32,
            kv_heads=4,
            head_dim=128,
            intermediate=6144,
            vocab=151936,
            num_experts=128,
            top_k=8,
            expert_intermediate=768,
        )

    @classmethod
    def from_hf_config(
        cls, config: dict[str, Any], name: str | None = None, dtype_bytes: int | None = None
    ) -> ModelArch:
        """Build from a parsed HuggingFace config.json (Llama, Mistral, Qwen, Mixtral, DeepSeek-style keys).

        Multimodal configs keep the language model under `text_config`; that part is used.
        """
        cfg = config.get("text_config") or config
        heads = int(cfg["num_attention_heads"])
        hidden = int(cfg["hidden_size"])
        if dtype_bytes is None:
            dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or "bfloat16")
            dtype_bytes = _DTYPE_BYTES.get(dtype.removeprefix("torch."), 2)
        experts = int(cfg.get("num_local_experts") or cfg.get("num_experts") or cfg.get("n_routed_experts") or 0)
        intermediate = int(cfg.get("intermediate_size") or 0)
        return cls(
            name=name or str(cfg.get("_name_or_path") or config.get("_name_or_path") or cfg.get("model_type", "hf")),
            layers=int(cfg["num_hidden_layers"]),
            hidden=hidden,
            heads=heads,
            kv_heads=int(cfg.get("num_key_value_heads") or heads),
            head_dim=int(cfg.get("head_dim") or hidden // heads),
            intermediate=intermediate,
            vocab=int(cfg["vocab_size"]),
            dtype_bytes=dtype_bytes,
            num_experts=experts,
            top_k=int(cfg.get("num_experts_per_tok") or 0) if experts else 0,
            expert_intermediate=int(cfg.get("moe_intermediate_size") or intermediate) if experts else 0,
            gated_mlp=cfg.get("model_type") not in _UNGATED_MLP_MODEL_TYPES,
            tied_embeddings=bool(cfg.get("tie_word_embeddings", False)),
        )


# Architectures the simulator and the sim engine know by name (`--sim-model`).
KNOWN_ARCHS = {
    "llama2-7b": ModelArch.llama2_7b,
    "llama2-70b": ModelArch.llama2_70b,
    "llama3-8b": ModelArch.llama3_8b,
    "llama3-70b": ModelArch.llama3_70b,
    "qwen3-30b-a3b": ModelArch.qwen3_30b_a3b,
    "smollm2-135m": ModelArch.smollm2_135m,
}


def arch_named(name: str) -> ModelArch:
    """A well-known architecture by its short name; a clear error listing them otherwise."""
    try:
        return KNOWN_ARCHS[name.lower()]()
    except KeyError:
        raise ValueError(
            f"unknown model architecture {name!r}; known: {', '.join(KNOWN_ARCHS)} "
            "(or give a folder with a config.json)"
        ) from None
