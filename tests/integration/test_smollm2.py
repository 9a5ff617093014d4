"""The default model, SmolLM2-135M-Instruct, answers correctly and matches transformers."""

from __future__ import annotations

from tests.support.models import SMOLLM2

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_capital_of_france_is_paris(openai_client):
    r = openai_client.chat.completions.create(model=SMOLLM2, messages=QUESTION, temperature=0, max_tokens=30)
    assert "Paris" in r.choices[0].message.content


def test_served_tokens_match_transformers_greedy(openai_client):
    """The engine (float32 on CPU) reproduces the reference implementation token for token."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from tessera.runtime.models.prepare import ensure_model
    from tessera.runtime.models.registry import resolve

    path = ensure_model(resolve("smollm2"))
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32)
    ids = tok.apply_chat_template(QUESTION, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=24, do_sample=False)
    expected = tok.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)

    r = openai_client.chat.completions.create(model=SMOLLM2, messages=QUESTION, temperature=0, max_tokens=24)
    assert r.choices[0].message.content == expected
