"""The same OpenAI requests to Tessera's router and to a worker's own vLLM server; a conformance table.

Each case is one request body (greedy or seeded, so both answers are reproducible) sent to both;
the table says, per endpoint and field, whether Tessera answered what `vllm serve` answers on the
same engine (same status, same choices: text, tool calls, logprobs), or the exact difference.
Fields that differ by design (id, created, system_fingerprint, usage details) are not compared.

    tessera up --model smollm2          # or any cluster with a vLLM worker
    # and one more worker whose vLLM HTTP server the script can call directly:
    tessera worker --etcd 127.0.0.1:2379 --model smollm2 --max-model-len 2048 --port 0 \\
        --http-port 8222 --http-api-key KEY \\
        --serve-arg=--enable-auto-tool-choice --serve-arg=--tool-call-parser=hermes
    python benchmarks/openai_conformance.py --router http://127.0.0.1:8000 \\
        --direct http://127.0.0.1:8222 --direct-key KEY

Greedy and seeded answers are the same on either worker, so the router may place on either.
Writes benchmarks/results/openai_conformance.md (and prints it).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import httpx

OUT = Path(__file__).resolve().parent / "results" / "openai_conformance.md"
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]
TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "strict": True,
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "enum": ["Paris", "Rome"]}},
            "required": ["city"],
            "additionalProperties": False,
        },
    },
}
CHAT, COMPLETION, RESPONSES = "/v1/chat/completions", "/v1/completions", "/v1/responses"
RESPONSES_TOOL = {"type": "function", **TOOL["function"]}  # type: ignore[dict-item]  # Responses' flat shape
GREEDY = {"temperature": 0, "max_tokens": 12}

# (endpoint, the fields under test, the body beyond model)
CASES: list[tuple[str, str, dict[str, Any]]] = [
    (CHAT, "plain (messages, max_tokens, temperature)", {"messages": ASK, **GREEDY}),
    (CHAT, "seed, temperature 1", {"messages": ASK, "seed": 7, "temperature": 1.0, "max_tokens": 12}),
    (CHAT, "stop, top_k, repetition_penalty", {"messages": ASK, **GREEDY, "stop": ["."], "top_k": 5}),
    (CHAT, "tools, tool_choice required", {"messages": ASK, "tools": [TOOL], "tool_choice": "required", **GREEDY}),
    (
        CHAT,
        "tools, tool_choice named",
        {
            "messages": ASK,
            "tools": [TOOL],
            "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
            "temperature": 0,
            "max_tokens": 40,
        },
    ),
    (CHAT, "tools, tool_choice none", {"messages": ASK, "tools": [TOOL], "tool_choice": "none", **GREEDY}),
    (CHAT, "tools, tool_choice auto", {"messages": ASK, "tools": [TOOL], "tool_choice": "auto", **GREEDY}),
    (CHAT, "response_format json_object", {"messages": ASK, "response_format": {"type": "json_object"}, **GREEDY}),
    (
        CHAT,
        "response_format json_schema",
        {
            "messages": ASK,
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "w", "schema": TOOL["function"]["parameters"]},  # type: ignore[index]
            },
            "temperature": 0,
            "max_tokens": 30,
        },
    ),
    (CHAT, "structured_outputs choice", {"messages": ASK, "structured_outputs": {"choice": ["sun", "rain"]}, **GREEDY}),
    (CHAT, "structured_outputs regex", {"messages": ASK, "structured_outputs": {"regex": "[0-9]{3}"}, **GREEDY}),
    (CHAT, "logprobs, top_logprobs 2", {"messages": ASK, "logprobs": True, "top_logprobs": 2, **GREEDY}),
    (CHAT, "n 2 (seeded)", {"messages": ASK, "n": 2, "seed": 3, "temperature": 1.0, "max_tokens": 8}),
    (CHAT, "logit_bias", {"messages": ASK, "logit_bias": {"198": 100}, **GREEDY}),
    (CHAT, "chat_template_kwargs", {"messages": ASK, "chat_template_kwargs": {"x": 1}, **GREEDY}),
    (CHAT, "stream, stream_options include_usage", {"messages": ASK, "stream": True, **GREEDY}),
    (CHAT, "functions (deprecated)", {"messages": ASK, "functions": [TOOL["function"]], **GREEDY}),
    (COMPLETION, "plain (prompt, max_tokens)", {"prompt": "The capital of France is", **GREEDY}),
    (COMPLETION, "echo, logprobs 2", {"prompt": "The capital of France is", "echo": True, "logprobs": 2, **GREEDY}),
    (COMPLETION, "suffix", {"prompt": "The capital of France is", "suffix": "!", **GREEDY}),
    (COMPLETION, "n 2 (seeded)", {"prompt": "Once upon", "n": 2, "seed": 3, "temperature": 1.0, "max_tokens": 8}),
    (COMPLETION, "best_of 2", {"prompt": "Once upon", "best_of": 2, **GREEDY}),
    (CHAT, "invalid: tool_choice required, no tools", {"messages": ASK, "tool_choice": "required", "tools": []}),
    (RESPONSES, "text input", {"input": "The capital of France is", "max_output_tokens": 12, "temperature": 0}),
    (
        RESPONSES,
        "message input, instructions",
        {
            "instructions": "Answer in one word.",
            "input": [{"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}],
            "max_output_tokens": 8,
            "temperature": 0,
        },
    ),
    (RESPONSES, "stream", {"input": "Count: one, two,", "max_output_tokens": 10, "temperature": 0, "stream": True}),
    (
        RESPONSES,
        "tools, tool_choice required",
        {
            "input": ASK[0]["content"],
            "tools": [RESPONSES_TOOL],
            "tool_choice": "required",
            "max_output_tokens": 80,
            "temperature": 0,
        },
    ),
    (RESPONSES, "invalid: tool_choice required, no tools", {"input": "Hi", "tool_choice": "required"}),
    (RESPONSES, "previous_response_id", {"input": "Hi", "previous_response_id": "resp_1", "max_output_tokens": 4}),
]


def _stream(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    """A streamed answer folded into what the comparison needs: per choice, its text and finish."""
    choices: dict[int, dict[str, Any]] = {}
    with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.json()
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            for c in json.loads(line[6:]).get("choices", []):
                slot = choices.setdefault(c["index"], {"text": "", "finish_reason": None})
                slot["text"] += (c.get("delta") or {}).get("content") or c.get("text") or ""
                slot["finish_reason"] = c.get("finish_reason") or slot["finish_reason"]
    return 200, {"choices": [choices[i] for i in sorted(choices)]}


def _stream_response(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    """A Responses event stream: the response its last event carries (completed or incomplete)."""
    last: dict[str, Any] = {}
    with client.stream("POST", url, json=body, headers=headers) as r:
        if r.status_code != 200:
            r.read()
            return r.status_code, r.json()
        for line in r.iter_lines():
            if line.startswith("data: "):
                last = json.loads(line[6:]).get("response") or last
    return 200, last


def ask(client: httpx.Client, url: str, body: dict[str, Any], headers: dict[str, str]) -> tuple[int, Any]:
    if body.get("stream") and url.endswith(RESPONSES):
        return _stream_response(client, url, body, headers)
    if body.get("stream"):
        return _stream(client, url, {**body, "stream_options": {"include_usage": True}}, headers)
    r = client.post(url, json=body, headers=headers)
    return r.status_code, r.json()


def _without_nulls(value: Any) -> Any:
    """vLLM writes every optional field (refusal: null, ...); Tessera's own path only those with a value."""
    if isinstance(value, dict):
        return {k: _without_nulls(v) for k, v in value.items() if v is not None and v != {}}
    if isinstance(value, list):
        return [_without_nulls(v) for v in value]
    return value


def comparable(status: int, answer: Any) -> Any:
    """What must be equal: the choices (text, tool calls without their random ids, logprobs, finish);
    for Responses, the status and output items (text, function calls); for errors, status and param."""
    if status != 200:
        return status, (answer.get("error") or {}).get("param") if isinstance(answer, dict) else None
    if "output" in answer:
        items = [
            {"type": i.get("type"), "name": i.get("name"), "arguments": i.get("arguments")}
            if i.get("type") == "function_call"
            else {"type": i.get("type"), "text": "".join(c.get("text") or "" for c in i.get("content") or [])}
            for i in answer["output"]
        ]
        return answer.get("status"), items
    out = []
    for c in answer.get("choices", []):
        message = dict(c.get("message") or {})
        for call in message.get("tool_calls") or []:
            call.pop("id", None)
        out.append({k: v for k, v in {**c, "message": message}.items() if k not in ("stop_reason", "token_ids")})
    return _without_nulls(out)


def difference(ours: Any, theirs: Any) -> str:
    if ours == theirs:
        return "same"
    return f"differs: Tessera {json.dumps(ours)[:120]} / vLLM {json.dumps(theirs)[:120]}"


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--router", default="http://127.0.0.1:8000")
    p.add_argument("--direct", required=True, help="a worker's vLLM HTTP server (tessera status: its HTTP address)")
    p.add_argument("--direct-key", default="", help="the workers' HTTP key")
    p.add_argument("--direct-key-file", default="", help="a file holding it (tessera up: LOG_DIR/worker-http-key)")
    p.add_argument("--model", default="SmolLM2-135M-Instruct")
    p.add_argument("--out", default=str(OUT))
    args = p.parse_args()
    key = args.direct_key or (Path(args.direct_key_file).read_text().strip() if args.direct_key_file else "")
    direct_headers = {"Authorization": f"Bearer {key}"} if key else {}
    rows = ["| endpoint | fields | Tessera | vLLM | result |", "|---|---|---|---|---|"]
    with httpx.Client(timeout=180) as client:
        for path, what, body in CASES:
            body = {"model": args.model, **body}
            ours = ask(client, args.router.rstrip("/") + path, body, {})
            theirs = ask(client, args.direct.rstrip("/") + path, body, direct_headers)
            result = difference(comparable(*ours), comparable(*theirs))
            if ours[0] != 200 and result == "same":
                result = f"same (both refuse, param `{comparable(*ours)[1]}`)"
            elif ours[0] != 200 and ours[0] == theirs[0]:
                result = f"both refuse; {result}"
            elif ours[0] == 400 and theirs[0] != 200:
                mine, vllms = comparable(*ours)[1], comparable(*theirs)[1]
                result = f"Tessera refuses by name (param `{mine}`); vLLM answers {theirs[0]} (param `{vllms}`)"
            elif ours[0] == 400 and theirs[0] == 200:
                param = (ours[1].get("error") or {}).get("param")
                result = f"Tessera refuses by name (param `{param}`); vLLM ignores it"
            rows.append(f"| `{path}` | {what} | {ours[0]} | {theirs[0]} | {result} |")
            print(rows[-1], flush=True)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(rows) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
