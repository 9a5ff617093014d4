"""Prefill/decode disaggregation on real vLLM CPU workers, KV moved by NIXL (UCX over TCP/shared memory).

The shared cluster runs the tiny model twice: as two mixed workers (`tiny-llama`) and as a prefill
worker plus a decode worker (`tiny-pd`), same weights. Requests for `tiny-pd` with the
`tessera_disagg` profile are prefilled on one and decoded on the other.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import time
import urllib.request

import pytest

from tessera.runtime.net import split_host_port
from tests.support.harness import kill_worker_group, pid_listening_on, wait_for
from tests.support.models import TINY, TINY_PD

DISAGG = {"x-tessera-profile": "tessera_disagg"}


def pd_workers(cluster) -> dict[str, dict]:
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", cluster.etcd.endpoint],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    ).stdout
    return {w["role"]: w for w in json.loads(out)["workers"] if w["model"] == TINY_PD}


def metric(url: str, name: str, label: str = "") -> float:
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name) and label in line and not line.startswith("#")
    )


def prompt(n: int, seed: int = 0) -> str:
    """A prompt of several hundred tokens: past the profile's 512-token threshold for disaggregating."""
    return " ".join(
        f"note {seed}.{i}: the {['red', 'green', 'blue'][i % 3]} box holds {i * 7 % 13} keys." for i in range(n)
    )


def complete(client, model: str, text: str, max_tokens: int = 24, headers: dict | None = None):
    return client.completions.create(
        model=model, prompt=text, max_tokens=max_tokens, temperature=0, extra_headers=headers or {}
    )


def test_a_disaggregated_request_answers_as_a_mixed_worker_and_moves_the_prompt_kv(cluster, openai_client):
    workers = pd_workers(cluster)
    decode_metrics = f"http://{workers['decode']['metrics_address']}/metrics"
    prefill_metrics = f"http://{workers['prefill']['metrics_address']}/metrics"
    transferred = 'source="external_kv_transfer"'
    before = {
        "moved": metric(decode_metrics, "vllm:prompt_tokens_by_source_total", transferred),
        "computed": metric(decode_metrics, "vllm:prompt_tokens_by_source_total", 'source="local_compute"'),
        "prefilled": metric(prefill_metrics, "vllm:prompt_tokens_by_source_total", 'source="local_compute"'),
        "remote": metric(cluster.base_url + "/metrics", "tessera_router_remote_prefills_total", "transferred"),
    }
    text = prompt(60)
    pd = complete(openai_client, TINY_PD, text, headers=DISAGG)
    mixed = complete(openai_client, TINY, text)

    assert pd.usage.prompt_tokens == mixed.usage.prompt_tokens >= 600
    assert pd.choices[0].text == mixed.choices[0].text  # same greedy answer as one mixed worker
    n = pd.usage.prompt_tokens
    moved = metric(decode_metrics, "vllm:prompt_tokens_by_source_total", transferred) - before["moved"]
    computed = (
        metric(decode_metrics, "vllm:prompt_tokens_by_source_total", 'source="local_compute"') - before["computed"]
    )
    prefilled = (
        metric(prefill_metrics, "vllm:prompt_tokens_by_source_total", 'source="local_compute"') - before["prefilled"]
    )
    # The prefill worker computed the prompt; the decode worker received it instead of recomputing it.
    assert prefilled >= n - 32
    assert moved >= n - 32, f"decode worker got {moved} of {n} prompt tokens by transfer"
    assert computed <= 32, f"decode worker recomputed {computed} prompt tokens"
    assert (
        metric(cluster.base_url + "/metrics", "tessera_router_remote_prefills_total", "transferred")
        == before["remote"] + 1
    )


def test_a_short_prompt_is_not_disaggregated(cluster, openai_client):
    prefill_metrics = f"http://{pd_workers(cluster)['prefill']['metrics_address']}/metrics"
    before = metric(prefill_metrics, "tessera_worker_prompt_tokens_total")
    pd = complete(openai_client, TINY_PD, "A short question?", headers=DISAGG)
    mixed = complete(openai_client, TINY, "A short question?")
    assert pd.choices[0].text == mixed.choices[0].text
    assert metric(prefill_metrics, "tessera_worker_prompt_tokens_total") == before  # decoded where prefilled


@pytest.mark.disruptive
def test_killing_the_prefill_worker_mid_run_loses_no_request(cluster, openai_client):
    texts = [prompt(60, seed) for seed in range(16)]
    expected = [complete(openai_client, TINY, t, max_tokens=32).choices[0].text for t in texts]
    prefill = pd_workers(cluster)["prefill"]
    pid = pid_listening_on(split_host_port(prefill["address"])[1])
    assert pid is not None

    done: list[int] = []

    def ask(i: int) -> str:
        answer = complete(openai_client, TINY_PD, texts[i], max_tokens=32, headers=DISAGG).choices[0].text
        done.append(i)
        return answer

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        futures = [pool.submit(ask, i) for i in range(len(texts))]
        wait_for(lambda: len(done) >= 3, 120, interval=0.05, what="the first disaggregated requests")
        kill_worker_group(pid)
        killed_after = len(done)
        answers = [f.result(timeout=180) for f in futures]

    assert killed_after < len(texts), "every request had finished before the kill"
    assert answers == expected  # every request answered, and answered right
    # The pair recovers: the autoscaler replaces the prefill worker and disaggregation resumes.
    wait_for(
        lambda: "prefill" in pd_workers(cluster) and pd_workers(cluster)["prefill"]["address"] != prefill["address"],
        180,
        interval=1.0,
        what="a new prefill worker",
    )
    before = metric(cluster.base_url + "/metrics", "tessera_router_remote_prefills_total", "transferred")
    deadline, seed = time.monotonic() + 60, 100
    while time.monotonic() < deadline:
        seed += 1  # a new prompt each time: one the decode worker holds already is prefilled there
        text = prompt(60, seed)
        assert (
            complete(openai_client, TINY_PD, text, headers=DISAGG).choices[0].text
            == complete(openai_client, TINY, text).choices[0].text
        )
        if metric(cluster.base_url + "/metrics", "tessera_router_remote_prefills_total", "transferred") > before:
            break
        time.sleep(1.0)
    else:
        pytest.fail("the new prefill worker never prefilled a request")
