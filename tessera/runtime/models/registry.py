"""Resolve what a user types after ``--model`` to a served name and a local folder.

Light on purpose: the router imports this, so nothing here touches torch,
transformers or vLLM. Preparing a model (which needs torch) lives in
:mod:`tessera.runtime.models.prepare`, imported only by workers and the CLI.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path


def model_cache_dir() -> Path:
    """Where prepared models live; ``TESSERA_MODEL_CACHE`` overrides."""
    env = os.environ.get("TESSERA_MODEL_CACHE")
    if env:
        return Path(env)
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "tessera" / "models"


@dataclass(frozen=True)
class ModelSpec:
    """A model Tessera can serve.

    ``source`` is a local folder, a hub id, or the name of a built-in recipe
    (``smollm2``, ``tiny``, ``tiny-moe``) that :func:`tessera.runtime.models.prepare.ensure_model`
    turns into a folder on first use.
    """

    name: str  # served model name, what clients put in "model"
    source: str  # folder, hub id or recipe name
    recipe: str | None = None  # built-in recipe that prepares the folder
    # Per-vendor dtype overrides. The CPU build of vLLM serves SmolLM2 in
    # float32: see docs/smollm2-bf16.md for why bfloat16 goes wrong there.
    dtype_by_vendor: dict[str, str] = field(default_factory=dict)

    @property
    def path(self) -> str:
        """The folder (or hub id) an engine and a tokenizer load from."""
        if self.recipe:
            return str(model_cache_dir() / self.recipe)
        return self.source


BUILTIN = {
    "smollm2": ModelSpec(
        name="SmolLM2-135M-Instruct",
        source="smollm2",
        recipe="smollm2",
        dtype_by_vendor={"cpu": "float32"},
    ),
    "tiny": ModelSpec(name="tiny-llama", source="tiny", recipe="tiny"),
    "tiny-moe": ModelSpec(name="tiny-qwen3-moe", source="tiny-moe", recipe="tiny-moe"),
}
ALIASES = {
    "SmolLM2-135M-Instruct": "smollm2",
    "HuggingFaceTB/SmolLM2-135M-Instruct": "smollm2",
    "tiny-llama": "tiny",
    "tiny-qwen3-moe": "tiny-moe",
}


def resolve(model: str, served_name: str | None = None) -> ModelSpec:
    """Map ``--model`` to a spec: a built-in name, a local folder, or a hub id."""
    key = ALIASES.get(model, model)
    if key in BUILTIN:
        spec = BUILTIN[key]
    else:
        path = Path(model).expanduser()
        if path.is_dir():
            spec = ModelSpec(name=path.name, source=str(path.resolve()))
        else:
            spec = ModelSpec(name=model, source=model)  # a hub id, loaded by the engine
    return dataclasses.replace(spec, name=served_name) if served_name else spec
