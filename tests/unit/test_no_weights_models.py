"""The weights-free tiny models (what simulated workers get without torch) read as the full ones do."""

from __future__ import annotations

import pytest

from tessera.engine_model.build import context_length, resolve_arch
from tessera.runtime.models.prepare import PrepareError, ensure_model, model_folder
from tessera.runtime.models.registry import resolve


@pytest.mark.parametrize("recipe", ["tiny", "tiny-moe"])
def test_no_weights_folder_matches_the_full_model(recipe, tmp_path, monkeypatch):
    pytest.importorskip("torch")  # the full build needs the engine extra (the dev venv has it)
    monkeypatch.setenv("TESSERA_MODEL_CACHE", str(tmp_path))
    spec = resolve(recipe)
    light = ensure_model(spec, weights=False)
    assert light == str(tmp_path / "no-weights" / recipe)
    full = ensure_model(spec)
    assert full == str(tmp_path / recipe)
    assert resolve_arch(light) == resolve_arch(full)  # same name, sizes, experts: the same step times
    assert context_length(light) == context_length(full)
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (tmp_path / "no-weights" / recipe / name).read_text() == (tmp_path / recipe / name).read_text()
    assert model_folder(spec, weights=False) == tmp_path / recipe  # once the full folder exists, sim uses it


def test_smollm2_without_torch_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setenv("TESSERA_MODEL_CACHE", str(tmp_path))
    monkeypatch.setattr("tessera.runtime.models.prepare._torch_installed", lambda: False)
    with pytest.raises(PrepareError, match=r"pip install 'tessera-inference\[cpu\]'"):
        ensure_model(resolve("smollm2"), weights=False)  # no weights-free recipe: its tokenizer is in the GGUF
    assert not (tmp_path / "smollm2").exists()
