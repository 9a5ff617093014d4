"""The whole OpenAI surface through the router, against a real vLLM worker (SmolLM2-135M, CPU).

Tools, structured output, logprobs, n > 1 and the other fields the router does not serve itself go
to vLLM's own serving code on the worker; the answers must be vLLM's (compared with the worker's
own vLLM HTTP server, same engine, same request) and valid for the official `openai` types.
"""

from __future__ import annotations

import json
import math

import grpc
import httpx
import jsonschema
import openai
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tessera.v1 import router_pb2, router_pb2_grpc
from tests.support.harness import RUN_ID, ServiceProcess, wait_for
from tests.support.models import SMOLLM2

WORKER_KEY = "test-worker-key"
CITY = {"type": "string", "enum": ["Paris", "Rome", "Berlin"]}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "strict": True,  # vLLM pins the arguments to the schema (without a tool parser it always does)
        "parameters": {
            "type": "object",
            "properties": {"city": CITY, "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}},
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
ASK = [{"role": "user", "content": "What is the weather in Paris?"}]


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """etcd, a scheduler, a router and one SmolLM2 vLLM worker whose own HTTP server needs a key."""
    log_dir = tmp_path_factory.mktemp("openai-surface")
    etcd = LocalEtcd(client_port=free_port(), data_dir=str(log_dir / "etcd"), log_path=str(log_dir / "etcd.log"))
    etcd.start()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TESSERA_TEST_RUN": RUN_ID}
    common = ["--etcd", etcd.endpoint, "--lease-ttl", "3"]
    http_port, grpc_port, worker_http = free_port(), free_port(), free_port()
    procs = [
        ServiceProcess("scheduler", ["scheduler", *common, "--port", "0"], log_dir, env).start(),
        ServiceProcess(
            "router", ["router", *common, "--port", str(http_port), "--grpc-port", str(grpc_port)], log_dir, env
        ).start(),
        ServiceProcess(
            "worker",
            [
                "worker",
                *common,
                "--model",
                "smollm2",
                "--max-model-len",
                "2048",
                "--http-port",
                str(worker_http),
                "--http-api-key",
                WORKER_KEY,
                "--serve-arg=--enable-auto-tool-choice",
                "--serve-arg=--tool-call-parser=hermes",
            ],
            log_dir,
            env,
        ).start(),
    ]
    base = f"http://127.0.0.1:{http_port}"

    def serving() -> bool:
        try:
            data = httpx.get(base + "/v1/models", timeout=5).json()["data"]
        except (httpx.HTTPError, KeyError, ValueError):
            return False
        return any(m["id"] == SMOLLM2 and m["workers"] >= 1 for m in data)

    try:
        wait_for(serving, 300, interval=1.0, what="the SmolLM2 worker to register")
        yield {
            "router": base,
            "grpc": f"127.0.0.1:{grpc_port}",
            "direct": f"http://127.0.0.1:{worker_http}",
            "worker": procs[2],
        }
    except BaseException:
        for p in procs:
            print(f"--- {p.name}\n{p.log_tail(40)}")
        raise
    finally:
        for p in reversed(procs):
            p.stop()
        etcd.stop(wipe=True)


@pytest.fixture(scope="module")
def client(stack):
    return openai.OpenAI(base_url=stack["router"] + "/v1", api_key="unused", max_retries=0, timeout=120)


def post(stack, path: str, body: dict, direct: bool = False) -> httpx.Response:
    """The raw answer, so openai's types validate what was really sent (the client does not validate)."""
    url = (stack["direct"] if direct else stack["router"]) + path
    headers = {"Authorization": f"Bearer {WORKER_KEY}"} if direct else {}
    return httpx.post(url, json={"model": SMOLLM2, **body}, headers=headers, timeout=120)


def stream_chunks(stack, path: str, body: dict) -> list[dict]:
    chunks = []
    body = {"model": SMOLLM2, **body, "stream": True}
    with httpx.stream("POST", stack["router"] + path, json=body, timeout=120) as r:
        assert r.status_code == 200, r.read()
        for line in r.iter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                chunks.append(json.loads(line.removeprefix("data: ")))
    return chunks


def test_json_schema_response_validates(stack):
    schema = {
        "type": "object",
        "properties": {"city": CITY, "capital": {"type": "boolean"}},
        "required": ["city", "capital"],
        "additionalProperties": False,
    }
    r = post(
        stack,
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "Name a European capital as JSON."}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "place", "schema": schema}},
            "max_tokens": 60,
            "temperature": 0,
        },
    )
    assert r.status_code == 200, r.text
    completion = ChatCompletion.model_validate(r.json())
    jsonschema.validate(json.loads(completion.choices[0].message.content), schema)


@pytest.mark.parametrize("tool_choice", ["required", {"type": "function", "function": {"name": "get_weather"}}])
def test_forced_tool_calls_have_arguments_that_validate(client, tool_choice):
    r = client.chat.completions.with_raw_response.create(
        model=SMOLLM2, messages=ASK, tools=[WEATHER_TOOL], tool_choice=tool_choice, max_tokens=80, temperature=0
    )
    completion = ChatCompletion.model_validate(json.loads(r.http_response.text))
    calls = completion.choices[0].message.tool_calls
    assert calls and calls[0].function.name == "get_weather"
    jsonschema.validate(json.loads(calls[0].function.arguments), WEATHER_TOOL["function"]["parameters"])


def test_an_agent_loop_completes(client):
    """Call a tool, hand its result back, get a final answer: the round trip agent frameworks make."""
    named = {"type": "function", "function": {"name": "get_weather"}}
    first = client.chat.completions.create(
        model=SMOLLM2, messages=ASK, tools=[WEATHER_TOOL], tool_choice=named, max_tokens=80, temperature=0
    )
    call = first.choices[0].message.tool_calls[0]
    conversation = [
        *ASK,
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call.id, "type": "function", "function": call.function.model_dump()}],
        },
        {"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature": 21, "sky": "clear"})},
    ]
    final = client.chat.completions.create(
        model=SMOLLM2, messages=conversation, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=30, temperature=0
    )
    assert final.choices[0].message.content and not final.choices[0].message.tool_calls
    # tool_choice auto goes through the worker's tool parser (--serve-arg): a valid answer either way
    auto = client.chat.completions.with_raw_response.create(
        model=SMOLLM2, messages=ASK, tools=[WEATHER_TOOL], tool_choice="auto", max_tokens=30, temperature=0
    )
    ChatCompletion.model_validate(json.loads(auto.http_response.text))


def test_top_logprobs_equal_vllms_direct_answer(stack):
    body = {"messages": ASK, "logprobs": True, "top_logprobs": 2, "max_tokens": 8, "temperature": 0}
    via, direct = post(stack, "/v1/chat/completions", body), post(stack, "/v1/chat/completions", body, direct=True)
    assert via.status_code == 200 and direct.status_code == 200, (via.text, direct.text)
    ours = ChatCompletion.model_validate(via.json()).choices[0].logprobs.content
    theirs = ChatCompletion.model_validate(direct.json()).choices[0].logprobs.content
    assert len(ours) == 8 and all(len(t.top_logprobs) == 2 for t in ours)
    assert [t.token for t in ours] == [t.token for t in theirs]
    for a, b in zip(ours, theirs, strict=True):
        assert math.isclose(a.logprob, b.logprob, rel_tol=1e-3, abs_tol=1e-4)
        assert [x.token for x in a.top_logprobs] == [x.token for x in b.top_logprobs]


def test_n_and_seeded_samples_equal_vllms_direct_answer(stack):
    body = {"messages": ASK, "n": 2, "max_tokens": 12, "temperature": 1.0, "seed": 1234}
    via, direct = post(stack, "/v1/chat/completions", body), post(stack, "/v1/chat/completions", body, direct=True)
    ours, theirs = ChatCompletion.model_validate(via.json()), ChatCompletion.model_validate(direct.json())
    assert [c.index for c in ours.choices] == [0, 1]
    assert [c.message.content for c in ours.choices] == [c.message.content for c in theirs.choices]
    # the router's own (resumable) path: a seeded sample is vLLM's too
    plain = {"messages": ASK, "max_tokens": 12, "temperature": 1.0, "seed": 99}
    via, direct = post(stack, "/v1/chat/completions", plain), post(stack, "/v1/chat/completions", plain, direct=True)
    assert (
        ChatCompletion.model_validate(via.json()).choices[0].message.content
        == ChatCompletion.model_validate(direct.json()).choices[0].message.content
    )


def test_streamed_chunks_validate_and_match_the_whole_response(stack):
    body = {"messages": ASK, "logprobs": True, "top_logprobs": 1, "max_tokens": 10, "temperature": 0}
    whole = ChatCompletion.model_validate(post(stack, "/v1/chat/completions", body).json())
    chunks = [ChatCompletionChunk.model_validate(c) for c in stream_chunks(stack, "/v1/chat/completions", body)]
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert sum(len(c.choices[0].logprobs.content or []) for c in chunks if c.choices and c.choices[0].logprobs) == 10
    # the plain path's chunks are valid too
    plain = stream_chunks(stack, "/v1/chat/completions", {"messages": ASK, "max_tokens": 5, "temperature": 0})
    for c in plain:
        ChatCompletionChunk.model_validate(c)


def test_completion_logprobs_and_echo_equal_vllms_direct_answer(stack):
    body = {"prompt": "The capital of France is", "logprobs": 2, "max_tokens": 5, "temperature": 0}
    via, direct = post(stack, "/v1/completions", body), post(stack, "/v1/completions", body, direct=True)
    ours, theirs = Completion.model_validate(via.json()), Completion.model_validate(direct.json())
    assert ours.choices[0].logprobs.tokens == theirs.choices[0].logprobs.tokens
    assert all(len(top) == 2 for top in ours.choices[0].logprobs.top_logprobs)
    # echo: the prompt comes back first (vLLM's answer, whose first prompt token has no logprob)
    body = {**body, "echo": True}
    via, direct = post(stack, "/v1/completions", body), post(stack, "/v1/completions", body, direct=True)
    assert via.json()["choices"][0]["text"].startswith("The capital of France is")
    assert via.json()["choices"][0]["text"] == direct.json()["choices"][0]["text"]


def test_refused_and_invalid_fields_are_named(stack):
    r = post(stack, "/v1/chat/completions", {"messages": ASK, "functions": [{"name": "f"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "functions"
    # vLLM's own validation of a field it serves comes back as a 400 too
    r = post(stack, "/v1/chat/completions", {"messages": ASK, "tool_choice": "required", "tools": []})
    assert r.status_code == 400 and "tools" in r.json()["error"]["message"], r.text


def test_grpc_openai_request_json(stack):
    body = {
        "model": SMOLLM2,
        "messages": ASK,
        "response_format": {"type": "json_object"},
        "max_tokens": 30,
        "temperature": 0,
        "stream": True,
    }
    with grpc.insecure_channel(stack["grpc"]) as ch:
        responses = list(
            router_pb2_grpc.RouterStub(ch).Generate(
                router_pb2.RouterGenerateRequest(openai_request_json=json.dumps(body)), timeout=120
            )
        )
    chunks = [ChatCompletionChunk.model_validate_json(r.openai_json) for r in responses if r.openai_json]
    assert chunks and responses[-1].finish_reason
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.lstrip().startswith("{")


def test_tokenize_and_detokenize_equal_vllms_direct_answer(stack):
    for body in ({"prompt": "The capital of France is"}, {"messages": ASK}):
        via, direct = post(stack, "/tokenize", body), post(stack, "/tokenize", body, direct=True)
        assert via.status_code == 200 and via.json()["tokens"] == direct.json()["tokens"], (via.text, direct.text)
        tokens = {"tokens": via.json()["tokens"]}
        assert post(stack, "/detokenize", tokens).json() == post(stack, "/detokenize", tokens, direct=True).json()


@pytest.mark.disruptive
def test_a_worker_dying_mid_stream_ends_the_stream_with_an_error_chunk(stack):
    """vLLM's serving code wrote the first chunks: no other worker can carry on, so the client is told."""
    body = {"model": SMOLLM2, "messages": ASK, "logprobs": True, "max_tokens": 400, "stream": True}
    lines = []
    with httpx.stream("POST", stack["router"] + "/v1/chat/completions", json=body, timeout=120) as r:
        for line in r.iter_lines():
            if line.startswith("data: "):
                lines.append(line.removeprefix("data: "))
                if len(lines) == 3:
                    stack["worker"].kill()
    assert lines[-1] == "[DONE]"
    error = json.loads(lines[-2])["error"]
    assert error["type"] == "server_error" and "cannot be resumed" in error["message"]
    assert all(ChatCompletionChunk.model_validate_json(x) for x in lines[:3])
