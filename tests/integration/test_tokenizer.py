"""The router's torch-free tokenizer and chat templates agree with transformers exactly."""

from __future__ import annotations

import pytest

from tessera.runtime.models.prepare import ensure_model
from tessera.runtime.models.registry import resolve
from tessera.runtime.models.tokenizer import ChatTemplateError, ModelTokenizer

CONVERSATIONS = [
    [{"role": "user", "content": "What is the capital of France?"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi there! ¿Qué tal? 日本語"},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Tell me a joke\nwith two lines."},
    ],
]


@pytest.mark.parametrize("model", ["tiny", "smollm2"])
def test_chat_and_text_tokenization_match_transformers(model):
    from transformers import AutoTokenizer

    path = ensure_model(resolve(model))
    ours, theirs = ModelTokenizer(path), AutoTokenizer.from_pretrained(path)
    for conv in CONVERSATIONS:
        expected = theirs.apply_chat_template(conv, add_generation_prompt=True, tokenize=True)
        expected = list(expected["input_ids"] if hasattr(expected, "keys") else expected)
        assert ours.encode_chat(conv) == expected
        assert ours.render_chat(conv) == theirs.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    for text in ["Hello world", "  spaces   and\ttabs\n", "<|im_start|>user special tokens", "émoji 🎉"]:
        assert ours.encode(text) == theirs(text)["input_ids"]


def test_a_template_that_raises_becomes_a_clear_error(tmp_path):
    path = ensure_model(resolve("tiny"))
    tok = ModelTokenizer(path)
    tok.chat_template = (
        "{% if messages[0]['role'] != 'user' %}{{ raise_exception('first message must be user') }}{% endif %}"
    )
    with pytest.raises(ChatTemplateError, match="first message must be user"):
        tok.encode_chat([{"role": "assistant", "content": "x"}])
