"""A prefill/decode pair launched by the autoscaler on real vLLM CPU workers, KV moved by NIXL; and a
worker whose KV format differs from the decode worker's is never paired with it.

`tessera up --engine vllm --slo-policy` with a policy whose inventory is this machine's two cores and
whose roles are prefill and decode: the planner's plan is one prefill and one decode instance of the
tiny model in float32, which the local actuator starts. (The roles are pinned: on a CPU, the tiny
model's prefill takes milliseconds, so no P:D split beats one mixed instance by the performance
model, and honestly so; the sim-engine test, test_slo_disaggregation_live.py, shows the planner
choosing a split where it pays.) Next to them the test starts a third worker by hand: a prefill worker
of the same model under the same name, serving in bfloat16. The scheduler times it as the float32
one (same model, same core), so a scheduler blind to KV formats would hand it about half the prompts,
and the decode worker would read its bfloat16 blocks as float32. Requests ask for the
`tessera_disagg` profile (every long uncached prompt is paired, as in test_disaggregation.py): the
default profile rightly finds no pair worth its copy for this model on a CPU.
"""

from __future__ import annotations

import concurrent.futures
import os
import urllib.request

import grpc
import openai
import pytest

from tessera.runtime.models.prepare import ensure_model
from tessera.runtime.models.registry import resolve
from tessera.runtime.net import split_host_port
from tessera.v1 import common_pb2, worker_pb2, worker_pb2_grpc
from tests.support.harness import ServiceProcess, cluster_status, pid_listening_on, tessera_up, up_etcd, wait_for

MODEL = "tiny-slo-pd"
DISAGG = {"x-tessera-profile": "tessera_disagg"}
PROMPT_TOKENS = 700  # past the profile's 512-token threshold


def policy(tiny: str) -> str:
    return f"""
model: {tiny}                  # the capacity model reads the tiny model's config.json
targets:
  ttft: {{percentile: 90, ms: 2000}}
  tpot: {{percentile: 90, ms: 200}}
inventory: {{cpu: {{free: 2}}}}   # this machine's two cores, one per worker
roles: [prefill, decode]        # pinned: see the module's docstring
instances: {{min: 2, max: 2}}
interval_s: 3
scale_to_zero_idle_s: 3600
deployment:
  served_model: {MODEL}
  worker_model: tiny
  engine: vllm
  engine_args: {{dtype: float32, max_model_len: 2048}}
"""


def workers(etcd: str) -> dict[str, dict]:
    return {w["id"]: w for w in cluster_status(etcd)["workers"] if w["model"] == MODEL and w["healthy"]}


def metric(address: str, name: str, *labels: str) -> float:
    """The sum of the series of `name` carrying every one of `labels` ('key="value"')."""
    text = urllib.request.urlopen(f"http://{address}/metrics", timeout=30).read().decode()
    return sum(
        float(line.split()[-1])
        for line in text.splitlines()
        if line.startswith(name + "{") and all(label in line for label in labels)
    )


def prompt(seed: int) -> list[int]:
    """Token ids no other prompt shares (the tiny model's vocabulary is 583 tokens)."""
    return [3 + (seed * 7919 + j * 104729 + j * j) % 577 for j in range(PROMPT_TOKENS)]


def direct(
    address: str, ids: list[int], max_tokens: int, params: dict | None = None
) -> tuple[str, worker_pb2.GenerateResponse]:
    """One request to a worker's own gRPC API, past the router: its text, and its last message."""
    request = worker_pb2.GenerateRequest(
        request_id=f"direct-{ids[0]}-{max_tokens}",
        prompt_token_ids=ids,
        sampling=common_pb2.SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True),
    )
    if params:
        request.kv_transfer.params.update(params)
    with grpc.insecure_channel(address) as ch:
        out = list(worker_pb2_grpc.WorkerStub(ch).Generate(request, timeout=120))
    text = "".join(r.delta.text for r in out)
    return text, out[-1]


@pytest.mark.slow  # three vLLM engines start on two cores
def test_the_autoscalers_pair_serves_through_nixl_and_a_bfloat16_worker_is_never_paired(tmp_path):
    tiny = ensure_model(resolve("tiny"))
    (tmp_path / "policy.yaml").write_text(policy(tiny))
    up = ("--engine", "vllm", "--slo-policy", str(tmp_path / "policy.yaml"))
    with tessera_up(tmp_path, *up, ready_timeout=300) as (_, port, lines):
        url = f"http://127.0.0.1:{port}"
        etcd = up_etcd(lines)
        wait_for(
            lambda: sorted(w["role"] for w in workers(etcd).values()) == ["decode", "prefill"],
            300,
            interval=2,
            what="the policy's prefill and decode workers",
        )
        f32 = next(w for w in workers(etcd).values() if w["role"] == "prefill")
        # The incompatible worker joins by hand (the autoscaler does not own it), pinned to the float32
        # prefill worker's core as the local actuator pins its own: an unpinned vLLM CPU engine
        # busy-polls a core and starves the worker pinned there.
        pid = pid_listening_on(split_host_port(f32["address"])[1])
        assert pid is not None
        core = ",".join(map(str, sorted(os.sched_getaffinity(pid))))
        bf16 = ServiceProcess(
            "worker-bf16",
            [
                "worker",
                "--etcd",
                etcd,
                "--model",
                "tiny",
                "--served-model-name",
                MODEL,
                "--role",
                "prefill",
                "--engine",
                "vllm",
                "--engine-arg",
                "dtype=bfloat16",
                "--max-model-len",
                "2048",
                "--worker-id",
                "prefill-bf16",
            ],
            tmp_path,
            env={"TESSERA_CPU_AFFINITY": core, "VLLM_CPU_OMP_THREADS_BIND": core},
        ).start()
        try:
            wait_for(lambda: "prefill-bf16" in workers(etcd), 300, interval=2, what="the bfloat16 prefill worker")
            plan = {g["role"]: g.get("replicas", 0) for g in cluster_status(etcd)["plan"]["groups"]}
            assert plan == {"ROLE_PREFILL": 1, "ROLE_DECODE": 1}, plan  # the planner's 1:1 split
            fleet = workers(etcd)
            dec = next(w for w in fleet.values() if w["role"] == "decode")
            b16 = fleet["prefill-bf16"]

            # Both prefill workers are real engines of the same model; the KV formats they publish differ.
            assert f32["kv_compat"]["dtype"] == dec["kv_compat"]["dtype"] == "float32", (f32, dec)
            assert b16["kv_compat"]["dtype"] == "bfloat16", b16
            assert b16["kv_compat"]["kv_connector"] == f32["kv_compat"]["kv_connector"] == "NixlConnector", b16
            # ...and the tiny model does serve in bfloat16 on this CPU build (asked directly, past the router).
            text, last = direct(b16["address"], prompt(0), 8)
            assert last.usage.completion_tokens == 8 and text, (text, last)

            moved = "vllm:prompt_tokens_by_source_total"
            before = {
                "moved": metric(dec["metrics_address"], moved, 'source="external_kv_transfer"'),
                "computed": metric(dec["metrics_address"], moved, 'source="local_compute"'),
                "bf16": metric(b16["metrics_address"], "tessera_worker_prompt_tokens_total"),
            }
            client = openai.OpenAI(base_url=url + "/v1", api_key="unused", max_retries=0, timeout=180)
            seeds = range(1, 13)

            def ask(seed: int):
                return client.completions.create(
                    model=MODEL,
                    prompt=prompt(seed),
                    max_tokens=16,
                    temperature=0,
                    extra_headers=DISAGG,
                    extra_body={"ignore_eos": True},
                )

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(ask, seeds))
            assert all(a.usage.prompt_tokens == PROMPT_TOKENS and a.usage.completion_tokens == 16 for a in answers)

            # Every prompt was prefilled on the float32 prefill worker and its KV reached the decode worker
            # through NIXL (at most a block recomputed there); the bfloat16 worker prefilled none.
            by_worker = "tessera_router_remote_prefills_by_worker_total"
            router = f"127.0.0.1:{port}"
            assert metric(router, by_worker, f'prefill_worker="{f32["id"]}"', 'outcome="transferred"') == len(seeds)
            assert metric(router, by_worker, 'prefill_worker="prefill-bf16"') == 0
            assert metric(router, "tessera_router_remote_prefills_total", 'outcome="fallback"') == 0
            got = metric(dec["metrics_address"], moved, 'source="external_kv_transfer"') - before["moved"]
            recomputed = metric(dec["metrics_address"], moved, 'source="local_compute"') - before["computed"]
            assert got >= len(seeds) * (PROMPT_TOKENS - 32), f"{got} prompt tokens moved by NIXL"
            assert recomputed <= len(seeds) * 32, f"{recomputed} prompt tokens recomputed on the decode worker"
            assert metric(b16["metrics_address"], "tessera_worker_prompt_tokens_total") == before["bf16"]
            scheduler = next(s for s in cluster_status(etcd)["services"] if s["kind"] == "scheduler")
            failed = "tessera_scheduler_worker_kv_pulls_failed_total"
            assert metric(scheduler["metrics_address"], failed, f'worker="{dec["id"]}"') == 0

            # Greedy answers equal the float32 engine's own, computed whole on one worker.
            for seed, answer in list(zip(seeds, answers))[:3]:
                text, _ = direct(f32["address"], prompt(seed), 16)
                assert answer.choices[0].text == text, seed
        finally:
            bf16.stop()
            (tmp_path / "up.log").write_text("".join(lines))
