"""At the router's doors, with simulated workers: fields that need vLLM's serving code are refused
by name (the sim engine has none), refused fields are named, and the plain path is untouched."""

from __future__ import annotations

import json

import grpc
import httpx
import pytest
from openai.types import Completion
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from tessera.v1 import router_pb2
from tests.support.models import TINY
from tests.support.sim_cluster import SimCluster

ASK = [{"role": "user", "content": "hello"}]
TOOL = {"type": "function", "function": {"name": "f", "parameters": {"type": "object", "properties": {}}}}


@pytest.fixture(scope="module")
def door(tmp_path_factory):
    with SimCluster.running(tmp_path_factory.mktemp("openai-fields"), workers=("w1",)) as c:
        yield c


def chat(door, **body) -> httpx.Response:
    return httpx.post(door.base_url + "/v1/chat/completions", json={"model": TINY, "messages": ASK, **body}, timeout=30)


@pytest.mark.parametrize(
    "body,param",
    [
        ({"tools": [TOOL], "tool_choice": "required"}, "tools"),
        ({"response_format": {"type": "json_object"}}, "response_format"),
        ({"logprobs": True, "top_logprobs": 2}, "logprobs"),
        ({"n": 2}, "n"),
        ({"structured_outputs": {"choice": ["a", "b"]}}, "structured_outputs"),
    ],
)
def test_vllm_features_on_a_sim_worker_are_refused_by_name(door, body, param):
    r = chat(door, max_tokens=5, **body)
    assert r.status_code == 400, r.text
    err = r.json()["error"]
    assert err["param"] == param and param in err["message"] and "vLLM" in err["message"]


@pytest.mark.parametrize("field,value", [("functions", [{"name": "f"}]), ("store", True), ("audio", {"voice": "x"})])
def test_refused_fields_are_named(door, field, value):
    r = chat(door, max_tokens=5, **{field: value})
    assert r.status_code == 400 and r.json()["error"]["param"] == field


def test_the_plain_path_answers_valid_openai_objects(door):
    r = chat(door, max_tokens=5, n=1, logprobs=False, tool_choice="none", service_tier="auto", unknown_field=1)
    assert r.status_code == 200, r.text
    ChatCompletion.model_validate(r.json())
    body = {"model": TINY, "messages": ASK, "max_tokens": 5, "stream": True, "stream_options": {"include_usage": True}}
    with httpx.stream("POST", door.base_url + "/v1/chat/completions", json=body, timeout=30) as s:
        chunks = [json.loads(x[6:]) for x in s.iter_lines() if x.startswith("data: ") and x != "data: [DONE]"]
    assert len(chunks) >= 2 and all(ChatCompletionChunk.model_validate(c) for c in chunks)
    r = httpx.post(door.base_url + "/v1/completions", json={"model": TINY, "prompt": "x", "max_tokens": 3}, timeout=30)
    Completion.model_validate(r.json())


def test_grpc_openai_request_json_on_a_sim_worker_is_refused_by_name(door):
    body = {"model": TINY, "messages": ASK, "max_tokens": 3}
    with pytest.raises(grpc.RpcError) as info:
        list(door.stub.Generate(router_pb2.RouterGenerateRequest(openai_request_json=json.dumps(body)), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "openai_request_json" in info.value.details()
    with pytest.raises(grpc.RpcError) as info:
        list(door.stub.Generate(router_pb2.RouterGenerateRequest(openai_request_json="[1"), timeout=30))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_tokenize_and_detokenize_at_the_router(door):
    r = httpx.post(door.base_url + "/tokenize", json={"model": TINY, "prompt": "hello world"}, timeout=30)
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["count"] == len(out["tokens"]) > 1 and out["max_model_len"] > 0
    back = httpx.post(door.base_url + "/detokenize", json={"model": TINY, "tokens": out["tokens"]}, timeout=30).json()
    assert "hello world" in back["prompt"]
    chat = httpx.post(door.base_url + "/tokenize", json={"messages": ASK}, timeout=30).json()  # the one model
    assert chat["count"] > out["count"]  # the chat template's tokens
    bad = httpx.post(door.base_url + "/detokenize", json={"model": TINY, "tokens": [10**9]}, timeout=30)
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "tokens"


def test_embeddings_need_a_vllm_embedding_worker_and_say_so(door):
    r = httpx.post(door.base_url + "/v1/embeddings", json={"model": TINY, "input": "x"}, timeout=30)
    assert r.status_code == 400 and r.json()["error"]["param"] == "input", r.text


def test_responses_need_a_vllm_worker_and_say_so(door):
    """The sim engine has no vLLM serving code: a 400 that says so, not a 5xx nor a hang."""
    r = httpx.post(door.base_url + "/v1/responses", json={"model": TINY, "input": "x"}, timeout=30)
    assert r.status_code == 400 and "vLLM" in r.json()["error"]["message"], r.text
