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
from openai.types import Completion, CreateEmbeddingResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from pydantic import TypeAdapter

from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tessera.v1 import router_pb2, router_pb2_grpc
from tests.support.harness import RUN_ID, ServiceProcess, wait_for
from tests.support.models import SMOLLM2

WORKER_KEY = "test-worker-key"
EMBEDDER = "tiny-embed"  # the tiny model as an embedding model (vLLM's pooling runner)
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
    """etcd, a scheduler, a router, one SmolLM2 vLLM worker and one embedding worker (the tiny model
    run by vLLM's pooling runner), whose own HTTP servers need a key."""
    log_dir = tmp_path_factory.mktemp("openai-surface")
    etcd = LocalEtcd(client_port=free_port(), data_dir=str(log_dir / "etcd"), log_path=str(log_dir / "etcd.log"))
    etcd.start()
    env = {"VLLM_CPU_KVCACHE_SPACE": "1", "HF_HUB_OFFLINE": "1", "TESSERA_TEST_RUN": RUN_ID}
    common = ["--etcd", etcd.endpoint, "--lease-ttl", "3"]
    http_port, grpc_port, worker_http, embed_http = free_port(), free_port(), free_port(), free_port()
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
                # Granite's parser finds its reasoning by plain text, so a regex can make this model
                # reason (structured output in the reasoning too); any other answer is all content.
                "--serve-arg=--reasoning-parser=granite",
                "--engine-arg",
                "structured_outputs_config={enable_in_reasoning: true}",
            ],
            log_dir,
            env,
        ).start(),
        ServiceProcess(
            "embedder",
            [
                "worker",
                *common,
                "--model",
                "tiny",
                "--served-model-name",
                EMBEDDER,
                "--engine-arg",
                "runner=pooling",
                "--engine-arg",
                "convert=embed",
                "--http-port",
                str(embed_http),
                "--http-api-key",
                WORKER_KEY,
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
        return {SMOLLM2, EMBEDDER} <= {m["id"] for m in data if m["workers"] >= 1}

    try:
        wait_for(serving, 300, interval=1.0, what="the SmolLM2 worker to register")
        yield {
            "router": base,
            "grpc": f"127.0.0.1:{grpc_port}",
            "direct": f"http://127.0.0.1:{worker_http}",
            "embedder": f"http://127.0.0.1:{embed_http}",
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


def stream_chunks(stack, path: str, body: dict, direct: bool = False) -> list[dict]:
    chunks = []
    body = {"model": SMOLLM2, **body, "stream": True}
    url = (stack["direct"] if direct else stack["router"]) + path
    headers = {"Authorization": f"Bearer {WORKER_KEY}"} if direct else {}
    with httpx.stream("POST", url, json=body, headers=headers, timeout=120) as r:
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
    # vLLM's own validation of a field it serves: a 400 naming the field, as vLLM's server names it
    for path, body in (
        ("/v1/chat/completions", {"messages": ASK, "tool_choice": "required", "tools": []}),
        ("/v1/chat/completions", {"messages": ASK, "response_format": {"type": "json_schema"}}),
        ("/v1/responses", {"input": "Hi", "tool_choice": "required"}),
    ):
        via, direct = post(stack, path, body), post(stack, path, body, direct=True)
        assert via.status_code == direct.status_code == 400, (via.text, direct.text)
        assert via.json()["error"]["param"] == direct.json()["error"]["param"] is not None, (via.text, direct.text)
    # vLLM refuses suffix on this model: its 400, not a failure retried on every worker
    via, direct = (post(stack, "/v1/completions", {"prompt": "Hi", "suffix": "!"}, direct=d) for d in (False, True))
    assert via.status_code == direct.status_code == 400, via.text
    assert via.json()["error"]["message"] == direct.json()["error"]["message"]
    assert via.json()["error"]["param"] == direct.json()["error"]["param"] == "suffix"
    # A type error vLLM's schema finds: the field by its path
    r = post(stack, "/v1/chat/completions", {"messages": ASK, "logit_bias": {"1": "much"}})
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("logit_bias"), r.text


def test_parallel_tool_calls_equal_vllms_and_their_results_go_back(stack):
    both = [{"role": "user", "content": "What is the weather in Paris and in Rome?"}]
    body = {"messages": both, "tools": [WEATHER_TOOL], "tool_choice": "required", "temperature": 0, "max_tokens": 120}

    def calls(r: httpx.Response) -> list[tuple[str, str]]:
        assert r.status_code == 200, r.text
        message = ChatCompletion.model_validate(r.json()).choices[0].message
        return [(c.function.name, c.function.arguments) for c in message.tool_calls or []]

    via = calls(post(stack, "/v1/chat/completions", body))
    assert via and via == calls(post(stack, "/v1/chat/completions", body, direct=True))
    for _, arguments in via:
        jsonschema.validate(json.loads(arguments), WEATHER_TOOL["function"]["parameters"])
    # Turned off, vLLM's structured output allows exactly one call
    one = {**body, "parallel_tool_calls": False}
    assert len(calls(post(stack, "/v1/chat/completions", one))) == 1
    # Two calls made at once, both results in the conversation: the same final answer as vLLM's
    made = [
        {"id": f"call_{i}", "type": "function", "function": {"name": "get_weather", "arguments": json.dumps(a)}}
        for i, a in enumerate(({"city": "Paris", "unit": "celsius"}, {"city": "Rome", "unit": "celsius"}))
    ]
    results = [
        {"role": "tool", "tool_call_id": c["id"], "content": t} for c, t in zip(made, ("21 C, sun", "25 C, sun"))
    ]
    history = {
        "messages": [*both, {"role": "assistant", "tool_calls": made}, *results],
        "max_tokens": 30,
        "temperature": 0,
    }
    via_text, direct_text = (
        post(stack, "/v1/chat/completions", {**history, "tools": [WEATHER_TOOL]}, direct=d) for d in (False, True)
    )
    assert (
        via_text.status_code == 200
        and via_text.json()["choices"][0]["message"] == direct_text.json()["choices"][0]["message"]
    )


def test_responses_equal_vllms_direct_answer_and_validate(stack, client):
    body = {"input": "The capital of France is", "max_output_tokens": 12, "temperature": 0}
    via, direct = post(stack, "/v1/responses", body), post(stack, "/v1/responses", body, direct=True)
    assert via.status_code == 200, via.text
    ours, theirs = Response.model_validate(via.json()), Response.model_validate(direct.json())
    assert ours.output_text and ours.output_text == theirs.output_text
    assert ours.id.startswith("resp_") and ours.id == "resp_" + via.headers["x-request-id"]
    assert ours.usage is not None and ours.usage.output_tokens == theirs.usage.output_tokens
    # Message input with instructions, through the official client
    answer = client.responses.create(
        model=SMOLLM2,
        instructions="Answer in one word.",
        input=[{"role": "user", "content": [{"type": "input_text", "text": "Name a colour."}]}],
        max_output_tokens=8,
        temperature=0,
    )
    assert answer.status in ("completed", "incomplete") and answer.output_text


def test_responses_stream_typed_events(stack):
    body = {"model": SMOLLM2, "input": "Count: one, two,", "max_output_tokens": 10, "temperature": 0, "stream": True}
    events, kinds = [], []
    with httpx.stream("POST", stack["router"] + "/v1/responses", json=body, timeout=120) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        for line in r.iter_lines():
            if line.startswith("event: "):
                kinds.append(line.removeprefix("event: "))
            elif line.startswith("data: "):
                events.append(TypeAdapter(ResponseStreamEvent).validate_json(line.removeprefix("data: ")))
    assert kinds == [e.type for e in events]  # each event line names its data's type
    assert events[0].type == "response.created" and events[-1].type in ("response.completed", "response.incomplete")
    streamed = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert streamed and streamed == events[-1].response.output_text
    assert {e.response.id for e in events if hasattr(e, "response")} == {events[0].response.id}


def test_responses_that_need_a_stored_response_are_refused_by_name(stack):
    for field, value in (("previous_response_id", "resp_1"), ("background", True), ("conversation", "conv_1")):
        r = post(stack, "/v1/responses", {"input": "Hi", field: value})
        assert r.status_code == 400 and r.json()["error"]["param"] == field, r.text
        assert "stateless" in r.json()["error"]["message"]


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


def test_embeddings_equal_vllms_direct_answer(stack, client):
    body = {"model": EMBEDDER, "input": ["The capital of France is", "Paris"]}
    via = httpx.post(stack["router"] + "/v1/embeddings", json=body, timeout=60)
    direct = httpx.post(
        stack["embedder"] + "/v1/embeddings", json=body, headers={"Authorization": f"Bearer {WORKER_KEY}"}, timeout=60
    )
    assert via.status_code == 200, via.text
    ours = CreateEmbeddingResponse.model_validate(via.json())
    theirs = CreateEmbeddingResponse.model_validate(direct.json())
    assert [e.index for e in ours.data] == [0, 1] and len(ours.data[0].embedding) > 1
    for mine, vllms in zip(ours.data, theirs.data):
        assert mine.embedding == pytest.approx(vllms.embedding, abs=1e-5)
    assert ours.usage.prompt_tokens == theirs.usage.prompt_tokens
    # The official client (base64 by default), token-id input too
    got = client.embeddings.create(model=EMBEDDER, input="Paris")
    assert got.data[0].embedding == pytest.approx(ours.data[1].embedding, abs=1e-5)
    ids = client.embeddings.create(model=EMBEDDER, input=[[1, 2, 3, 4]])
    assert len(ids.data) == 1 and len(ids.data[0].embedding) == len(got.data[0].embedding)


def test_embeddings_refuse_by_name(stack):
    too_long = httpx.post(
        stack["router"] + "/v1/embeddings", json={"model": EMBEDDER, "input": ["ok", "word " * 5000]}, timeout=60
    )
    assert too_long.status_code == 400 and too_long.json()["error"]["param"] == "input", too_long.text
    assert "input[1]" in too_long.json()["error"]["message"]
    # A text-generation model has no embedding code; an embedding model does not chat: 400s, not 5xx
    not_embedder = post(stack, "/v1/embeddings", {"input": "Hi"})
    assert not_embedder.status_code == 400, not_embedder.text
    chat = httpx.post(
        stack["router"] + "/v1/chat/completions", json={"model": EMBEDDER, "messages": ASK, "max_tokens": 4}, timeout=60
    )
    assert 400 <= chat.status_code < 500, chat.text


def test_grpc_carries_responses_and_embeddings_too(stack):
    def generate(body: dict, endpoint: str = "") -> list:
        with grpc.insecure_channel(stack["grpc"]) as ch:
            request = router_pb2.RouterGenerateRequest(openai_request_json=json.dumps(body), openai_endpoint=endpoint)
            return list(router_pb2_grpc.RouterStub(ch).Generate(request, timeout=120))

    events = generate({"model": SMOLLM2, "input": "Hi", "max_output_tokens": 6, "temperature": 0, "stream": True})
    parsed = [TypeAdapter(ResponseStreamEvent).validate_json(r.openai_json) for r in events if r.openai_json]
    assert parsed[0].type == "response.created" and parsed[-1].type in ("response.completed", "response.incomplete")
    assert parsed[-1].response.id.startswith("resp_") and events[-1].finish_reason
    vectors = generate({"model": EMBEDDER, "input": ["Paris"]}, "/v1/embeddings")
    answer = CreateEmbeddingResponse.model_validate_json(next(r.openai_json for r in vectors if r.openai_json))
    assert len(answer.data) == 1 and len(answer.data[0].embedding) > 1
    with pytest.raises(grpc.RpcError) as refused:
        generate({"model": EMBEDDER, "input": ["Paris"]}, "/v1/nope")
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "openai_endpoint" in refused.value.details()


THINKING = r"Here's my thought process: [a-z ]{3,24}\. Here's my response: [A-Z][a-z]{2,12}\."


def test_reasoning_is_split_from_the_answer_as_vllm_splits_it(stack):
    body = {"messages": ASK, "structured_outputs": {"regex": THINKING}, "max_tokens": 60, "temperature": 0}
    via, direct = (post(stack, "/v1/chat/completions", body, direct=d) for d in (False, True))
    assert via.status_code == 200, via.text
    message = via.json()["choices"][0]["message"]
    assert message == direct.json()["choices"][0]["message"]
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    assert reasoning and message["content"] and "thought process" not in message["content"], message

    # Streamed: reasoning deltas, then content deltas, as vLLM's own server streams them
    def split(chunks: list[dict]) -> tuple[str, str]:
        deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
        thought = "".join(d.get("reasoning") or d.get("reasoning_content") or "" for d in deltas)
        return thought, "".join(d.get("content") or "" for d in deltas)

    via_stream = split(stream_chunks(stack, "/v1/chat/completions", body))
    assert via_stream == split(stream_chunks(stack, "/v1/chat/completions", body, direct=True))
    assert reasoning.strip() in via_stream[0] and via_stream[1].strip()
