"""Prefill/decode pairs form only between workers whose KV formats match, with the default profile.

Simulated H100-class workers (no weights), each a real process: one decode worker with an fp8 KV
cache (NVIDIA's float8_e4m3fn), and three prefill workers: one of the same build, one standing for
an MI300X (fp8 stored as float8_e4m3fnuz: vLLM's own handshake would let it through), and one
serving float32. The MI300X is the fastest prefill worker, so a scheduler that ignored the formats
would send it most prompts. The router asks for tessera_disagg, which pairs every long uncached
prompt: the scheduler times these workers as the tiny model they load (a prefill takes it well
under a millisecond), so the default profile rightly finds no pair worth its copy here; whether a
pair pays is tests/unit/test_disaggregation_policy.py's and the simulator's to show.
"""

from __future__ import annotations

import concurrent.futures
import json
import subprocess
import sys
import urllib.request

import grpc
import pytest

from tessera.v1 import common_pb2, router_pb2, worker_pb2, worker_pb2_grpc
from tests.support.harness import wait_for
from tests.support.models import TINY
from tests.support.sim_cluster import SimCluster

ROLES = {
    "dec": ("--role", "decode"),
    "pre-ok": ("--role", "prefill"),
    "pre-mi300": ("--role", "prefill", "--accelerator", "mi300x"),
    "pre-f32": ("--role", "prefill", "--engine-arg", "dtype=float32"),
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    with SimCluster.running(
        tmp_path_factory.mktemp("kv-pairing"),
        workers=tuple(ROLES),
        router_args=("--profile", "tessera_disagg"),
        worker_args=("--engine-arg", "kv_cache_dtype=fp8"),
        args_by_worker=ROLES,
    ) as c:
        yield c


def metric(address: str, name: str, *labels: str) -> float:
    """The sum of the series of `name` carrying every one of `labels` ('key="value"')."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=5).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(label in line for label in labels)
    )


def status(cluster) -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", cluster.etcd.endpoint],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    return json.loads(out.stdout)


def long_prompt(i: int) -> str:
    """About 1,000 tokens no other prompt shares: past the 512-token threshold, cached nowhere."""
    return " ".join(f"item{i}x{j} is {j * 7 % 13}." for j in range(80))


def generate(cluster, i: int) -> int:
    tokens = 0
    for resp in cluster.stub.Generate(
        router_pb2.RouterGenerateRequest(
            model=TINY,
            text=long_prompt(i),
            request_id=f"pair-{i}",
            sampling=common_pb2.SamplingParams(max_tokens=48, ignore_eos=True),
        ),
        timeout=120,
    ):
        tokens += len(resp.delta.token_ids)
    return tokens


def test_only_the_compatible_prefill_worker_is_paired_with_the_decode_worker(cluster):
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        served = list(pool.map(lambda i: generate(cluster, i), range(32)))
    assert served == [48] * 32  # every request answered in full
    router = f"127.0.0.1:{cluster.http_port}"
    by_worker = "tessera_router_remote_prefills_by_worker_total"
    # prompts were prefilled on the prefill worker of the decode worker's build, and on no other
    assert metric(router, by_worker, 'prefill_worker="pre-ok"', 'outcome="transferred"') > 0
    for bad in ("pre-mi300", "pre-f32"):
        assert metric(router, by_worker, f'prefill_worker="{bad}"') == 0, cluster.logs()
    assert metric(router, "tessera_router_remote_prefills_total", 'outcome="fallback"') == 0
    scheduler = next(s for s in status(cluster)["services"] if s["kind"] == "scheduler")
    assert metric(scheduler["metrics_address"], "tessera_scheduler_worker_kv_pulls_failed_total", 'worker="dec"') == 0


def test_a_hand_off_between_incompatible_engines_is_refused_and_counted(cluster):
    """What a scheduler that ignored the descriptors would cause: the decode worker refuses the KV
    (as NIXL refuses a handshake), recomputes the prompt, and the refusal shows in the metrics."""
    workers = {w["id"]: w for w in status(cluster)["workers"]}
    prompt = list(range(10, 700))
    sampling = common_pb2.SamplingParams(max_tokens=1)
    with grpc.insecure_channel(workers["pre-mi300"]["address"]) as ch:
        request = worker_pb2.GenerateRequest(request_id="direct-prefill", prompt_token_ids=prompt, sampling=sampling)
        request.kv_transfer.params.update({"do_remote_decode": True, "do_remote_prefill": False})
        last = list(worker_pb2_grpc.WorkerStub(ch).Generate(request, timeout=60))[-1]
    assert last.kv_transfer.params["tessera_kv_compat"]["kv_cache_dtype"] == "float8_e4m3fnuz"
    with grpc.insecure_channel(workers["dec"]["address"]) as ch:
        request = worker_pb2.GenerateRequest(
            request_id="direct-decode",
            prompt_token_ids=prompt,
            sampling=common_pb2.SamplingParams(max_tokens=4),
            kv_transfer=last.kv_transfer,
        )
        out = list(worker_pb2_grpc.WorkerStub(ch).Generate(request, timeout=60))
    assert sum(len(r.delta.token_ids) for r in out) == 4  # recomputed, not lost
    assert metric(workers["dec"]["metrics_address"], "tessera_worker_kv_pulls_failed_total", "") == 1
    scheduler = next(s for s in status(cluster)["services"] if s["kind"] == "scheduler")
    wait_for(
        lambda: (
            metric(scheduler["metrics_address"], "tessera_scheduler_worker_kv_pulls_failed_total", 'worker="dec"') == 1
        ),
        10,
        what="the decode worker's refused pull in the scheduler's metrics",
    )
