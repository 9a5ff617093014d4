"""Every request field of OpenAI's and vLLM's schemas, and what the router does with each.

One rule: a known field is honoured or refused with a 400 that names it; nothing known is
dropped. Three ways to honour or refuse:

- PLAIN: the router honours it itself (token ids and SamplingParams to a worker, resumable);
- vLLM's own serving code on the worker honours it (every other vLLM field with a value other
  than its default): the request goes as its JSON body to a vLLM worker (``openai_request`` in
  worker.proto), whose answer is relayed chunk by chunk; such a request is not resumed mid-stream;
- REFUSED: a 400 naming the field, with why (fields only Tessera itself may set, and OpenAI
  features that neither vLLM nor Tessera has).

Fields in neither schema are ignored, as vLLM ignores them. The names and defaults come from the
installed vLLM and openai packages through ``benchmarks/dump_openai_fields.py``
(``openai_fields.json``), so the router knows the surface without importing vLLM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

SCHEMA_FILE = Path(__file__).with_name("openai_fields.json")

# Honoured by the router itself, whatever their value (api_types.py validates them).
PLAIN_COMMON = frozenset(
    {
        "model",
        "max_tokens",
        "temperature",
        "top_p",
        "seed",
        "stop",
        "stream",
        "presence_penalty",
        "frequency_penalty",
        "user",
        "top_k",
        "min_tokens",
        "repetition_penalty",
        "ignore_eos",
        "stop_token_ids",
        "skip_special_tokens",
        "include_stop_str_in_output",
        "priority",
        "request_id",  # the response's id when no X-Request-Id header is sent
        "session_id",  # placement affinity, as X-Session-Id
        "prompt_cache_key",  # OpenAI's cache-affinity key: placement affinity too
        "safety_identifier",  # OpenAI's end-user id: placement affinity when user is unset
    }
)
PLAIN_CHAT = PLAIN_COMMON | {"messages", "max_completion_tokens", "add_generation_prompt"}
PLAIN_COMPLETION = PLAIN_COMMON | {"prompt"}
# Honoured by the router while they hold these values; any other value goes to vLLM's serving code.
PLAIN_WHEN: dict[str, tuple[Any, ...]] = {
    "n": (None, 1),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "echo": (None, False),
    "stream_options": (None,),  # or {"include_usage": bool} only: see _plain_stream_options
}

# Refused whatever their value, unless it asks for nothing (None, False, the default).
REFUSED: dict[str, str] = {
    "kv_transfer_params": "it is set by Tessera's prefill/decode disaggregation, not by clients",
    "ec_transfer_params": "it is set by Tessera's workers, not by clients",
    "prompt_embeds": "the router places requests on the prompt's tokens; send text or token ids",
    "functions": "OpenAI deprecated it; send tools (and tool_choice) instead",
    "function_call": "OpenAI deprecated it; send tool_choice (with tools) instead",
    "best_of": "vLLM removed it; send n and choose among the choices",
    "audio": "audio output is not supported by the models Tessera serves",
    "prediction": "predicted outputs are not supported",
    "web_search_options": "web search is not supported",
    "moderation": "moderation is not supported",
    "verbosity": "verbosity is not supported by vLLM; say it in the prompt",
    "store": "Tessera stores no completions",
    "metadata": "Tessera stores no completions (metadata goes with store)",
    "prompt_cache_retention": "cache retention is not configurable per request",
    "prompt_cache_options": "cache options are not configurable per request",
}
# Values of refused fields that ask for nothing, so clients that always send them keep working.
NEUTRAL: dict[str, tuple[Any, ...]] = {
    "modalities": (None, ["text"]),
    "service_tier": (None, "auto", "default"),
    "best_of": (None, 1),
    "store": (None, False),
    "metadata": (None, {}),
}
REFUSED["modalities"] = "only text output is supported"
# Values of fields vLLM's whole-answer endpoints lack that ask for nothing (not obfuscating a stream
# changes no answer).
UNSERVED_NEUTRAL: dict[str, tuple[Any, ...]] = {"stream_options": ({"include_obfuscation": False},)}
REFUSED["service_tier"] = "service tiers are not offered; send priority (a Tessera field) instead"


@cache
def schema() -> dict[str, Any]:
    """The field names (and vLLM's defaults) of both schemas, as dumped from the packages."""
    data: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return data


@cache
def known_fields(chat: bool) -> frozenset[str]:
    """Every field of OpenAI's or vLLM's request schema for the endpoint."""
    which = "chat" if chat else "completion"
    s = schema()
    return frozenset(s["vllm"][which]) | frozenset(s["openai"][which]) | {"stream"}


def vllm_default(chat: bool, name: str) -> Any:
    return schema()["vllm"]["chat" if chat else "completion"].get(name)


@dataclass(frozen=True)
class Route:
    """How a request is served: ``vllm_fields`` empty: the router's own (resumable) path;
    otherwise the fields that send it to vLLM's serving code on a worker."""

    vllm_fields: tuple[str, ...]

    @property
    def plain(self) -> bool:
        return not self.vllm_fields


class RefusedField(ValueError):
    def __init__(self, name: str, why: str) -> None:
        super().__init__(f"{name} is not supported: {why}")
        self.name = name


def _plain_stream_options(value: Any) -> bool:
    return value is None or (isinstance(value, dict) and set(value) <= {"include_usage"})


def route(body: dict[str, Any], chat: bool) -> Route:
    """Which path serves ``body``; RefusedField for the first refused field that asks for something."""
    plain = PLAIN_CHAT if chat else PLAIN_COMPLETION
    known = known_fields(chat)
    to_vllm: list[str] = []
    for name, value in body.items():
        if name not in known or name in plain:
            continue  # unknown: ignored as vLLM ignores it
        if name in REFUSED:
            if value in NEUTRAL.get(name, (None, False)):
                continue
            raise RefusedField(name, REFUSED[name])
        if name == "stream_options":
            if not _plain_stream_options(value):
                to_vllm.append(name)
            continue
        if name in PLAIN_WHEN:
            if value not in PLAIN_WHEN[name]:
                to_vllm.append(name)
            continue
        if value is None or value == vllm_default(chat, name):
            continue  # asks for nothing vLLM would do differently
        to_vllm.append(name)
    return Route(tuple(to_vllm))


def classification(chat: bool) -> dict[str, str]:
    """Each known field and how it is served: "router", "router or vllm", "vllm" or "refused"."""
    plain = PLAIN_CHAT if chat else PLAIN_COMPLETION
    out = {}
    for name in sorted(known_fields(chat)):
        if name in plain:
            out[name] = "router"
        elif name in REFUSED:
            out[name] = "refused"
        elif name in PLAIN_WHEN:
            out[name] = "router or vllm"
        elif name in schema()["vllm"]["chat" if chat else "completion"]:
            out[name] = "vllm"
        else:
            out[name] = "unclassified"
    return out


def refuse_unserved(endpoint: str, body: dict[str, Any], honoured: frozenset[str] = frozenset()) -> None:
    """For the endpoints vLLM's serving code answers whole (``responses``, ``embeddings``): a field
    of OpenAI's schema that vLLM's lacks would be ignored there, so it is refused by name when it
    asks for something. ``honoured``: such fields the router serves itself."""
    s = schema()
    unserved = set(s["openai"][endpoint]) - set(s["vllm"][endpoint]) - honoured
    for name in sorted(unserved & body.keys()):
        value = body[name]
        neutral = (None, False, {}, [], "", *NEUTRAL.get(name, ()), *UNSERVED_NEUTRAL.get(name, ()))
        if value in neutral:
            continue
        raise RefusedField(name, f"vLLM's {endpoint} code does not implement it")
