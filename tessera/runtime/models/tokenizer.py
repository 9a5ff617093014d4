"""Tokenizing at the router with the model's own tokenizer and chat template.

The router must stay small and start in seconds, so it does not import
transformers (which pulls in torch where installed). It reads the model
folder's ``tokenizer.json`` with the Rust ``tokenizers`` library and renders
the chat template with Jinja2 configured exactly as transformers'
``apply_chat_template`` configures it (sandboxed, trim_blocks, lstrip_blocks,
loopcontrols, ``raise_exception``, ``strftime_now``, a non-escaping
``tojson``). tests/integration/test_tokenizer.py checks both against transformers.
"""

from __future__ import annotations

import json
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from tokenizers import Tokenizer


class ChatTemplateError(ValueError):
    """The messages cannot be rendered by the model's chat template (e.g. wrong role order)."""


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    x: Any, ensure_ascii: bool = False, indent: int | None = None, separators: Any = None, sort_keys: bool = False
) -> str:
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


@lru_cache(maxsize=16)
def _compile(template: str) -> jinja2.Template:
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(template)


def _token_text(value: Any) -> str | None:
    """Special tokens appear in tokenizer_config.json as strings or as AddedToken dicts."""
    if isinstance(value, dict):
        return value.get("content")
    return value


class ModelTokenizer:
    """A model's tokenizer and chat template, loaded from its folder."""

    def __init__(self, folder: str | Path) -> None:
        folder = Path(folder)
        tok_file = folder / "tokenizer.json"
        if not tok_file.is_file():
            raise FileNotFoundError(f"{tok_file} not found: the router needs the model's fast tokenizer")
        self.tokenizer = Tokenizer.from_file(str(tok_file))
        cfg_file = folder / "tokenizer_config.json"
        self.config: dict[str, Any] = json.loads(cfg_file.read_text()) if cfg_file.is_file() else {}
        template_file = folder / "chat_template.jinja"
        if template_file.is_file():
            self.chat_template: str | None = template_file.read_text()
        else:
            tmpl = self.config.get("chat_template")
            if isinstance(tmpl, list):  # named templates: use "default"
                tmpl = next((t["template"] for t in tmpl if t.get("name") == "default"), None)
            self.chat_template = tmpl
        self.bos_token = _token_text(self.config.get("bos_token"))
        self.eos_token = _token_text(self.config.get("eos_token"))
        # The longest token's text: a text of n characters holds at least n / this many tokens,
        # which lets a caller refuse an over-long prompt without tokenizing it.
        self.max_token_chars = max((len(t) for t in self.tokenizer.get_vocab(with_added_tokens=True)), default=1)

    def min_tokens(self, text_chars: int) -> int:
        """A lower bound on the tokens of any text of this many characters (without special tokens)."""
        return text_chars // max(1, self.max_token_chars)

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        # encode_batch, not encode: it lets go of the GIL while it works, so a long text tokenized
        # in a thread does not hold up the caller's event loop (encode holds it throughout).
        return self.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0].ids

    def count_or_encode(self, text: str, add_special_tokens: bool, limit: int) -> list[int] | int:
        """The ids, or only their number when there are more than `limit` (a request to refuse:
        turning millions of ids into a Python list would hold the GIL for nothing)."""
        encoding = self.tokenizer.encode_batch([text], add_special_tokens=add_special_tokens)[0]
        n = len(encoding)
        return n if limit and n > limit else encoding.ids

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=skip_special_tokens)

    def render_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **template_kwargs: Any
    ) -> str:
        if not self.chat_template:
            raise ChatTemplateError("this model has no chat template; use /v1/completions")
        try:
            return _compile(self.chat_template).render(
                messages=messages,
                add_generation_prompt=add_generation_prompt,
                bos_token=self.bos_token or "",
                eos_token=self.eos_token or "",
                **template_kwargs,
            )
        except jinja2.exceptions.TemplateError as exc:
            raise ChatTemplateError(f"chat template: {exc}") from None

    def encode_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool = True, **template_kwargs: Any
    ) -> list[int]:
        """Render then tokenize; the template carries its special tokens, so none are added."""
        return self.encode(
            self.render_chat(messages, add_generation_prompt, **template_kwargs), add_special_tokens=False
        )

    def count_or_encode_chat(
        self, messages: list[dict[str, Any]], add_generation_prompt: bool, limit: int, **template_kwargs: Any
    ) -> list[int] | int:
        """encode_chat, or only the number of tokens when over `limit` (see count_or_encode)."""
        text = self.render_chat(messages, add_generation_prompt, **template_kwargs)
        return self.count_or_encode(text, False, limit)
