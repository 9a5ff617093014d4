"""Cache-aware routing on the live cluster: vLLM's KV-cache events reach the scheduler's prefix index,
and a repeated prompt goes where its prefix is cached."""

from __future__ import annotations

import re
import urllib.request

from tests.support.harness import wait_for
from tests.support.models import TINY


def _metric(text: str, name: str) -> float:
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def _scheduler_metrics(cluster) -> str:
    status = cluster.scheduler.log_tail()
    port = re.findall(r"metrics :(\d+)", status)
    assert port, "scheduler did not log its metrics port"
    with urllib.request.urlopen(f"http://127.0.0.1:{port[-1]}/metrics", timeout=5) as resp:
        return resp.read().decode()


def test_a_repeated_prompt_lands_where_its_prefix_is_cached(cluster, openai_client):
    # ~600 tokens of a prompt nobody else sends; 2 tiny vLLM workers serve the model.
    prompt = "cache routing check " + " ".join(f"w{i}" for i in range(300))
    first = openai_client.completions.create(model=TINY, prompt=prompt, max_tokens=4, temperature=0)
    cached = []
    for _ in range(3):
        again = openai_client.completions.create(model=TINY, prompt=prompt, max_tokens=4, temperature=0)
        cached.append(again.usage.prompt_tokens_details.cached_tokens)
    assert first.usage.prompt_tokens > 300
    # vLLM caches whole 32-token blocks and recomputes at least the last token
    assert all(c >= first.usage.prompt_tokens - 64 for c in cached), cached


def test_the_scheduler_indexes_vllm_kv_events(cluster, openai_client):
    for _ in range(2):
        openai_client.completions.create(model=TINY, prompt="index me " * 100, max_tokens=2)
    # events travel engine -> worker -> scheduler on their own: give them a moment
    wait_for(
        lambda: _metric(_scheduler_metrics(cluster), "tessera_scheduler_prefix_index_blocks") > 0,
        10,
        interval=0.2,
        what="the prefix index to hold the workers' blocks",
    )
    text = _scheduler_metrics(cluster)
    assert _metric(text, "tessera_scheduler_kv_events_total") > 0
    assert _metric(text, "tessera_scheduler_expected_cached_tokens_total") > 0
