"""The OpenAI-compatible API through the official openai client, against real vLLM workers."""

from __future__ import annotations

import json
import urllib.request

import httpx
import openai
import pytest

from tests.support.models import SMOLLM2, TINY

HELLO = [{"role": "user", "content": "Hello! Please count to five."}]


def greedy_chat(client, **kw):
    return client.chat.completions.create(model=TINY, messages=HELLO, temperature=0, **kw)


def test_models_are_listed(openai_client):
    ids = {m.id for m in openai_client.models.list()}
    assert {TINY, SMOLLM2} <= ids


def test_chat_non_streaming_returns_text_and_usage(openai_client):
    r = greedy_chat(openai_client, max_tokens=12, extra_body={"ignore_eos": True})
    assert r.object == "chat.completion"
    assert r.choices[0].message.role == "assistant"
    assert r.choices[0].message.content
    assert r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 12
    assert r.usage.prompt_tokens > 10  # the chat template's system prompt is counted
    assert r.usage.total_tokens == r.usage.prompt_tokens + 12


def test_chat_streaming_matches_non_streaming(openai_client):
    whole = greedy_chat(openai_client, max_tokens=20, extra_body={"ignore_eos": True})
    stream = greedy_chat(
        openai_client,
        max_tokens=20,
        stream=True,
        stream_options={"include_usage": True},
        extra_body={"ignore_eos": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 20


def test_completions_streaming_and_not_with_text_and_token_prompts(openai_client):
    whole = openai_client.completions.create(
        model=TINY, prompt="The quick brown fox", max_tokens=16, temperature=0, extra_body={"ignore_eos": True}
    )
    assert whole.object == "text_completion" and whole.usage.completion_tokens == 16
    stream = openai_client.completions.create(
        model=TINY,
        prompt="The quick brown fox",
        max_tokens=16,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    assert "".join(c.choices[0].text for c in stream if c.choices) == whole.choices[0].text
    by_ids = openai_client.completions.create(model=TINY, prompt=[5, 6, 7, 8], max_tokens=4, temperature=0)
    assert by_ids.usage.prompt_tokens == 4


def test_stop_strings_end_the_completion(openai_client):
    full = (
        openai_client.completions.create(
            model=TINY, prompt="Hello world", max_tokens=40, temperature=0, extra_body={"ignore_eos": True}
        )
        .choices[0]
        .text
    )
    # Stop at a piece of text the model is known (greedy) to produce midway.
    stop = full[len(full) // 2 : len(full) // 2 + 3]
    cut = openai_client.completions.create(
        model=TINY, prompt="Hello world", max_tokens=40, temperature=0, stop=[stop], extra_body={"ignore_eos": True}
    ).choices[0]
    assert cut.finish_reason == "stop"
    assert stop not in cut.text and full.startswith(cut.text)


def test_seed_makes_sampling_reproducible(openai_client):
    def sample(seed):
        return (
            openai_client.completions.create(
                model=TINY,
                prompt="Once upon a time",
                max_tokens=24,
                temperature=1.0,
                top_p=0.95,
                seed=seed,
                extra_body={"ignore_eos": True},
            )
            .choices[0]
            .text
        )

    assert sample(42) == sample(42)
    assert sample(42) != sample(7)


def _post(cluster, path: str, body: bytes) -> httpx.Response:
    return httpx.post(cluster.base_url + path, content=body, headers={"Content-Type": "application/json"}, timeout=30)


@pytest.mark.parametrize(
    "path,body,status,needle",
    [
        ("/v1/chat/completions", b'{"model": "tiny-llama", "messages": [', 400, "Invalid JSON"),
        ("/v1/chat/completions", b'["not", "an", "object"]', 400, "JSON object"),
        ("/v1/chat/completions", b'{"model": "tiny-llama"}', 400, "messages"),
        ("/v1/completions", b'{"model": "tiny-llama"}', 400, "prompt"),
        ("/v1/completions", b'{"prompt": "hi"}', 400, "model"),
        ("/v1/completions", b'{"model": "tiny-llama", "prompt": "hi", "max_tokens": -5}', 400, "max_tokens"),
        ("/v1/completions", b'{"model": "tiny-llama", "prompt": "hi", "temperature": 9}', 400, "temperature"),
        (
            "/v1/chat/completions",
            b'{"model": "tiny-llama", "messages": [{"role": "wizard", "content": "x"}]}',
            400,
            "role",
        ),
        ("/v1/completions", b'{"model": "no-such-model", "prompt": "hi"}', 404, "does not exist"),
    ],
)
def test_bad_requests_get_openai_shaped_errors_and_serving_continues(
    cluster, openai_client, path, body, status, needle
):
    r = _post(cluster, path, body)
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert needle in err["message"] and err["type"]
    assert greedy_chat(openai_client, max_tokens=2).choices[0].message.content is not None


def test_errors_through_the_openai_client(openai_client):
    with pytest.raises(openai.NotFoundError):
        openai_client.chat.completions.create(model="gpt-nonexistent", messages=HELLO)
    with pytest.raises(openai.BadRequestError, match="max_tokens"):
        openai_client.completions.create(model=TINY, prompt="x", max_tokens=-1)


def test_prompt_over_the_context_length_is_a_400_naming_the_limit(openai_client):
    long_prompt = "hello world " * 2000  # far beyond tiny's 2048-token context
    with pytest.raises(openai.BadRequestError, match="maximum context length is 2048 tokens"):
        openai_client.completions.create(model=TINY, prompt=long_prompt, max_tokens=5)
    with pytest.raises(openai.BadRequestError, match="maximum context length"):
        openai_client.completions.create(model=TINY, prompt="hi", max_tokens=5000)
    assert greedy_chat(openai_client, max_tokens=2).choices


def test_health_and_metrics(cluster, openai_client):
    greedy_chat(openai_client, max_tokens=3, stream=True).close()
    health = json.loads(urllib.request.urlopen(cluster.base_url + "/health").read())
    assert health["status"] == "ok" and health["models"][TINY] >= 1
    text = urllib.request.urlopen(cluster.base_url + "/metrics").read().decode()
    for name in (
        "tessera_time_to_first_token_seconds_count",
        "tessera_inter_token_latency_seconds_count",
        "tessera_e2e_request_latency_seconds_count",
        "tessera_router_requests_total",
    ):
        assert f'{name}{{model="{TINY}"' in text or f"{name}{{" in text, name
    ttft = [
        line
        for line in text.splitlines()
        if line.startswith(f'tessera_time_to_first_token_seconds_count{{model="{TINY}",')  # then its profile
    ]
    assert ttft and float(ttft[0].split()[-1]) > 0


def test_each_worker_also_serves_vllms_own_openai_api(cluster):
    """Interop: vLLM's OpenAI server runs on every worker's engine, so other routers can front it."""
    import subprocess
    import sys

    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", cluster.etcd.endpoint],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    worker = next(w for w in json.loads(out)["workers"] if w["model"] == TINY)
    direct = openai.OpenAI(base_url=f"http://{worker['http_address']}/v1", api_key="unused", max_retries=0)
    assert [m.id for m in direct.models.list()] == [TINY]
    r = direct.completions.create(
        model=TINY, prompt="The quick brown fox", max_tokens=6, temperature=0, extra_body={"ignore_eos": True}
    )
    assert r.usage.completion_tokens == 6
    assert r.system_fingerprint.startswith("vllm-")
