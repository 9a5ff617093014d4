"""An expert-parallel MoE instance on the CPU build: one worker, two data-parallel ranks, experts sharded.

`tessera up --model tiny-moe` with data_parallel_size 2 and expert parallelism
(a random-weight tiny Qwen3-MoE): the worker registers as one instance with
its ranks, the scheduler pins each request to a rank, both ranks serve, and
greedy answers do not depend on the rank (the experts really are split over
them: each rank holds half).
"""

from __future__ import annotations

import urllib.request

import pytest

from tests.support.harness import cluster_status, tessera_up

MOE = "tiny-qwen3-moe"


@pytest.fixture(scope="module")
def moe_cluster(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("moe")
    with tessera_up(
        log_dir,
        "--engine",
        "vllm",
        "--model",
        "tiny-moe",
        "--workers",
        "1",
        "--engine-arg",
        "data_parallel_size=2",
        "--engine-arg",
        "expert_parallel=true",
        ready_timeout=600,
    ) as (proc, port, lines):
        etcd = next(line.split("--etcd")[1].split()[0] for line in lines if "tessera status --etcd" in line)
        yield port, etcd


def engine_metric(metrics_address: str, name: str, engine: str) -> float:
    text = urllib.request.urlopen(f"http://{metrics_address}/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith(name) and f'engine="{engine}"' in line
    )


def test_one_instance_two_ranks_both_serve_the_same_answers(moe_cluster):
    import openai

    port, etcd = moe_cluster
    [worker] = [w for w in cluster_status(etcd)["workers"] if w["model"] == MOE]
    assert worker["data_parallel_ranks"] == [0, 1]
    client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=300)
    answers = [
        client.completions.create(model=MOE, prompt="The experts of this model", max_tokens=12, temperature=0)
        .choices[0]
        .text
        for _ in range(6)
    ]
    assert len(set(answers)) == 1 and answers[0], answers  # same greedy answer whichever rank served it
    served = [engine_metric(worker["metrics_address"], "vllm:request_success_total", r) for r in ("0", "1")]
    assert all(n >= 2 for n in served), f"requests per rank: {served}"
