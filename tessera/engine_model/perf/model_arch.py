"""The shape of a decoder-only transformer, as far as cost is concerned.

The performance model needs sizes, not weights: how many FLOPs and bytes each
operator moves, how large the weights and the KV cache are. ModelArch carries
exactly those numbers, so the model can be built from a HuggingFace
config.json (already parsed by the caller) or from the constructors below.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
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
    is each routed expert's width, the first `dense_layers` layers keep a dense MLP
    (DeepSeek's first_k_dense_replace) and every MoE layer adds `shared_experts`
    always-on experts of the same width.

    Multi-head latent attention (MLA, DeepSeek V2/V3/R1) is on when `kv_lora_rank`
    is set: the KV cache holds one compressed latent of kv_lora_rank +
    qk_rope_head_dim values per token per layer, shared by every head, instead of
    K and V per KV head; queries and keys have qk_nope + qk_rope dims, values
    v_head_dim. `kv_dtype_bytes` (0: the weights' dtype) is the KV cache's element
    size: an fp8 checkpoint (DeepSeek V3's) still keeps its KV cache in bf16.
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
    shared_experts: int = 0
    dense_layers: int = 0
    kv_lora_rank: int = 0
    q_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    kv_dtype_bytes: int = 0

    def __post_init__(self) -> None:
        if self.heads % self.kv_heads:
            raise ValueError(f"{self.name}: heads ({self.heads}) must be a multiple of kv_heads ({self.kv_heads})")
        if self.num_experts and not (0 < self.top_k <= self.num_experts and self.expert_intermediate > 0):
            raise ValueError(f"{self.name}: MoE needs 0 < top_k <= num_experts and expert_intermediate > 0")
        if not 0 <= self.dense_layers <= self.layers:
            raise ValueError(f"{self.name}: dense_layers must be within 0..layers")
        if self.kv_lora_rank and not (self.qk_nope_head_dim and self.v_head_dim):
            raise ValueError(f"{self.name}: MLA needs qk_nope_head_dim and v_head_dim")

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0

    @property
    def is_mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def moe_layers(self) -> int:
        """Layers whose MLP is routed experts (0 for a dense model)."""
        return self.layers - self.dense_layers if self.is_moe else 0

    @property
    def mlp_layers(self) -> int:
        """Layers with a dense MLP: all of a dense model's, the first `dense_layers` of an MoE."""
        return self.dense_layers if self.is_moe else self.layers

    @property
    def latent_dim(self) -> int:
        """MLA: values cached per token per layer (compressed KV + the decoupled RoPE key)."""
        return self.kv_lora_rank + self.qk_rope_head_dim

    @property
    def qk_head_dim(self) -> int:
        """Query/key width per head: head_dim, or nope + rope dims under MLA."""
        return self.qk_nope_head_dim + self.qk_rope_head_dim if self.is_mla else self.head_dim

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim if self.is_mla else self.head_dim

    @property
    def kv_element_bytes(self) -> int:
        return self.kv_dtype_bytes or self.dtype_bytes

    @property
    def mlp_matrices(self) -> int:
        """Weight matrices per MLP/expert: gate+up+down for gated (SwiGLU) MLPs, up+down otherwise."""
        return 3 if self.gated_mlp else 2

    @property
    def q_dim(self) -> int:
        return self.heads * self.qk_head_dim

    @property
    def kv_dim(self) -> int:
        return self.kv_heads * self.head_dim

    def attention_params_per_layer(self) -> int:
        if self.is_mla:
            q = (
                self.hidden * self.q_lora_rank + self.q_lora_rank * self.q_dim
                if self.q_lora_rank
                else self.hidden * self.q_dim
            )
            kv_down = self.hidden * self.latent_dim
            kv_up = self.kv_lora_rank * self.heads * (self.qk_nope_head_dim + self.v_head_dim)
            return q + kv_down + kv_up + self.heads * self.v_head_dim * self.hidden
        return self.hidden * (self.q_dim + 2 * self.kv_dim) + self.q_dim * self.hidden

    def dense_mlp_params(self) -> int:
        return self.mlp_matrices * self.hidden * self.intermediate

    def moe_params_per_layer(self) -> int:
        """One MoE layer's MLP weights: every routed expert, the shared ones and the router."""
        experts = self.num_experts + self.shared_experts
        return experts * self.mlp_matrices * self.hidden * self.expert_intermediate + self.hidden * self.num_experts

    def mlp_params_per_layer(self) -> int:
        """All MLP weights of one MoE layer (every expert, plus the router), or a dense layer's."""
        return self.moe_params_per_layer() if self.is_moe else self.dense_mlp_params()

    def param_count(self) -> int:
        norms = 2 * self.hidden
        mlp = self.moe_layers * self.moe_params_per_layer() + self.mlp_layers * self.dense_mlp_params()
        embeddings = self.vocab * self.hidden * (1 if self.tied_embeddings else 2)
        return self.layers * (self.attention_params_per_layer() + norms) + mlp + embeddings + self.hidden

    def weight_bytes(self) -> int:
        return self.param_count() * self.dtype_bytes

    def kv_bytes_per_token(self, kv_dtype_bytes: int | None = None) -> int:
        """K and V of one token over all layers (whole model, before any TP split); under MLA the
        one latent per layer (kv_lora_rank + qk_rope_head_dim values, all heads share it)."""
        nbytes = kv_dtype_bytes or self.kv_element_bytes
        if self.is_mla:
            return self.layers * self.latent_dim * nbytes
        return 2 * self.layers * self.kv_dim * nbytes

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
        dtype = str(cfg.get("torch_dtype") or cfg.get("dtype") or config.get("torch_dtype") or "bfloat16")
        activation_bytes = _DTYPE_BYTES.get(dtype.removeprefix("torch."), 2)
        quant = str((cfg.get("quantization_config") or config.get("quantization_config") or {}).get("quant_method", ""))
        if dtype_bytes is None:
            # An fp8 checkpoint (DeepSeek V3's block-fp8) stores 1-byte weights; its KV cache stays
            # in the activation dtype (vLLM's kv_cache_dtype "auto").
            dtype_bytes = 1 if quant == "fp8" else activation_bytes
        kv_bytes = activation_bytes if dtype_bytes != activation_bytes and quant == "fp8" else 0
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
            shared_experts=int(cfg.get("n_shared_experts") or cfg.get("num_shared_experts") or 0) if experts else 0,
            dense_layers=int(cfg.get("first_k_dense_replace") or 0) if experts else 0,
            kv_lora_rank=int(cfg.get("kv_lora_rank") or 0),
            q_lora_rank=int(cfg.get("q_lora_rank") or 0),
            qk_nope_head_dim=int(cfg.get("qk_nope_head_dim") or 0),
            qk_rope_head_dim=int(cfg.get("qk_rope_head_dim") or 0),
            v_head_dim=int(cfg.get("v_head_dim") or 0),
            kv_dtype_bytes=kv_bytes,
        )

    @classmethod
    def deepseek_v3(cls) -> ModelArch:
        """DeepSeek V3 (and R1, same shape) from its config.json, kept in the catalog's models folder."""
        text = resources.files("tessera.engine_model.catalog").joinpath("models/deepseek-v3.json").read_text()
        return cls.from_hf_config(json.loads(text), name="DeepSeek-V3")


# Architectures the simulator and the sim engine know by name (`--sim-model`).
KNOWN_ARCHS = {
    "llama2-7b": ModelArch.llama2_7b,
    "llama2-70b": ModelArch.llama2_70b,
    "llama3-8b": ModelArch.llama3_8b,
    "llama3-70b": ModelArch.llama3_70b,
    "qwen3-30b-a3b": ModelArch.qwen3_30b_a3b,
    "deepseek-v3": ModelArch.deepseek_v3,
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
