"""API keys and tenants at the router: 401/403/429 over HTTP (the official openai client) and gRPC,
`tessera tenant` against etcd, and rate limits held across two routers sharing one etcd.

The cluster: a private etcd, a scheduler, one simulated worker (fast, no vLLM) and two routers.
Router A takes its key from --api-key (and keys /metrics), router B from TESSERA_API_KEY.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import openai
import pytest

from services.autoscaler.load_observer import RouterScraper
from services.router.rate_limits import seconds_to_window_end
from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tessera.v1 import common_pb2, router_pb2, router_pb2_grpc
from tests.support.harness import ServiceProcess, wait_for
from tests.support.models import TINY
from tests.support.paths import REPO

ADMIN_KEY = "sk-admin-0123456789abcdef"
METRICS_KEY = "sk-metrics-0123456789"


@dataclass
class Routers:
    etcd: LocalEtcd
    http: list[int]  # A, B
    grpc: list[int]
    services: list[ServiceProcess]
    log_dir: Path

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.http[i]}"

    def client(self, i: int, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url(i) + "/v1", api_key=key, max_retries=0, timeout=60)

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in self.services)


@pytest.fixture(scope="module")
def routers(tmp_path_factory):
    log_dir = tmp_path_factory.mktemp("tenants")
    etcd = LocalEtcd(
        client_port=free_port(), data_dir=str(log_dir / "etcd-data"), log_path=str(log_dir / "etcd.log")
    ).start()
    common = ["--etcd", etcd.endpoint, "--lease-ttl", "3"]
    http, grpc_ports = [free_port(), free_port()], [free_port(), free_port()]
    services = [
        ServiceProcess("scheduler", ["scheduler", *common, "--port", "0"], log_dir).start(),
        ServiceProcess(
            "worker",
            ["worker", *common, "--engine", "sim", "--model", "tiny", "--accelerator", "cpu"],
            log_dir,
            {"TESSERA_API_KEY": ""},
        ).start(),
        ServiceProcess(
            "router-a",
            ["router", *common, "--port", str(http[0]), "--grpc-port", str(grpc_ports[0]), "--api-key", ADMIN_KEY]
            + ["--metrics-api-key", METRICS_KEY],
            log_dir,
        ).start(),
        ServiceProcess(
            "router-b",
            ["router", *common, "--port", str(http[1]), "--grpc-port", str(grpc_ports[1])],
            log_dir,
            {"TESSERA_API_KEY": ADMIN_KEY},
        ).start(),
    ]
    r = Routers(etcd, http, grpc_ports, services, log_dir)

    def ready() -> bool:
        for i in (0, 1):
            got = httpx.get(r.url(i) + "/v1/models", headers={"Authorization": f"Bearer {ADMIN_KEY}"}, timeout=5)
            if got.status_code != 200 or not any(m["workers"] for m in got.json()["data"]):
                return False
        return True

    try:
        wait_for(ready, 90, interval=0.5, what="both routers to see the simulated worker")
    except TimeoutError:
        print(r.logs())
        raise
    yield r
    for s in reversed(services):
        s.stop()
    etcd.stop(wipe=True)


def _tenant(routers: Routers, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tessera.cli", "tenant", *args, "--etcd", routers.etcd.endpoint],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=REPO,
    )


def _shown(routers: Routers, name: str) -> dict:
    """`tenant show`'s record, below its `# revision: N` line."""
    head, _, body = _tenant(routers, "show", name).stdout.partition("\n")
    assert head.startswith("# revision: ")
    return json.loads(body)


def _new_tenant(routers: Routers, name: str, *flags: str) -> str:
    """Store a tenant with a fresh key; return the key once both routers accept it."""
    out = _tenant(routers, "put", name, "--new-key", *flags)
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-")
    for i in (0, 1):
        wait_for(
            lambda i=i: (
                httpx.get(routers.url(i) + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 200
            ),
            15,
            what=f"router {i} to learn tenant {name}",
        )
    return key


def _complete(routers: Routers, i: int, key: str, **kw):
    args = {"model": TINY, "prompt": "hello", "max_tokens": 4} | kw
    return routers.client(i, key).completions.create(**args)


def _fresh_window(min_left_s: float = 25.0) -> None:
    """Start a rate-limit test early enough in a minute that the window does not end under it."""
    left = seconds_to_window_end(time.time())
    if left < min_left_s:
        time.sleep(left + 0.5)


# --- keys ------------------------------------------------------------------------------------------


def test_http_needs_a_key_and_answers_401_in_openai_shape(routers):
    for i in (0, 1):  # --api-key on A, TESSERA_API_KEY on B
        anonymous = httpx.post(routers.url(i) + "/v1/completions", json={"model": TINY, "prompt": "hi"}, timeout=10)
        assert anonymous.status_code == 401
        error = anonymous.json()["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["code"] == "invalid_api_key"
        with pytest.raises(openai.AuthenticationError) as wrong:
            _complete(routers, i, "sk-wrong-key-0000000000")
        assert wrong.value.status_code == 401 and "sk-wrong-key" not in str(wrong.value)
        assert httpx.get(routers.url(i) + "/v1/models", timeout=10).status_code == 401
        done = _complete(routers, i, ADMIN_KEY)
        assert done.choices[0].text and done.usage.completion_tokens == 4
    # /health stays open; /metrics needs its own key on router A, none on B
    assert httpx.get(routers.url(0) + "/health", timeout=10).status_code == 200
    assert httpx.get(routers.url(0) + "/metrics", timeout=10).status_code == 401
    assert httpx.get(routers.url(0) + "/metrics", headers={"Authorization": f"Bearer {ADMIN_KEY}"}).status_code == 401
    metrics = httpx.get(routers.url(0) + "/metrics", headers={"Authorization": f"Bearer {METRICS_KEY}"}, timeout=10)
    assert metrics.status_code == 200 and "tessera_router" in metrics.text
    assert httpx.get(routers.url(1) + "/metrics", timeout=10).status_code == 200

    # the autoscaler's scraper sends the metrics key (TESSERA_METRICS_API_KEY by default), or counts nothing
    async def scrape(key: str):
        scraper = RouterScraper(key)
        try:
            return (await scraper.scrape([f"127.0.0.1:{routers.http[0]}"]))[f"127.0.0.1:{routers.http[0]}"]
        finally:
            await scraper.close()

    assert asyncio.run(scrape(METRICS_KEY)).received[TINY] >= 1
    assert not asyncio.run(scrape("")).received


def test_tessera_bench_sends_the_key(routers):
    def bench(*key: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tessera.cli", "bench", "--base-url", routers.url(0), "--model", TINY]
            + ["--num-prompts", "3", "--warmup", "0", "--random-input-len", "8", "--random-output-len", "4", *key],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env={**os.environ, "OPENAI_API_KEY": ""},
        )

    keyed = bench("--api-key", ADMIN_KEY)
    assert keyed.returncode == 0, keyed.stderr
    assert re.search(r"Successful requests:\s+3\b", keyed.stdout), keyed.stdout
    anonymous = bench()  # every request refused with 401: counted as failed
    assert re.search(r"Failed requests:\s+3\b", anonymous.stdout), anonymous.stdout


def _grpc_generate(routers: Routers, i: int, key: str | None, priority: int = 0):
    with grpc.insecure_channel(f"127.0.0.1:{routers.grpc[i]}") as ch:
        stub = router_pb2_grpc.RouterStub(ch)
        request = router_pb2.RouterGenerateRequest(
            model=TINY, text="hello", sampling=common_pb2.SamplingParams(max_tokens=3), priority=priority
        )
        metadata = [("authorization", f"Bearer {key}")] if key else None
        return list(stub.Generate(request, metadata=metadata, timeout=30))


def test_grpc_needs_a_key_in_metadata(routers):
    for key in (None, "sk-wrong-key-0000000000"):
        with pytest.raises(grpc.RpcError) as refused:
            _grpc_generate(routers, 0, key)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with grpc.insecure_channel(f"127.0.0.1:{routers.grpc[1]}") as ch:
        with pytest.raises(grpc.RpcError) as refused:
            router_pb2_grpc.RouterStub(ch).ListModels(router_pb2.ListModelsRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    out = _grpc_generate(routers, 1, ADMIN_KEY)
    assert out[-1].finish_reason and out[-1].usage.completion_tokens == 3


# --- tenants in etcd -------------------------------------------------------------------------------


def test_tenant_cli_shows_a_key_once_and_stores_only_its_hash(routers):
    out = _tenant(routers, "put", "acme", "--new-key", "--rpm", "100", "--models", f"{TINY},other")
    assert out.returncode == 0, out.stderr
    key = out.stdout.strip().splitlines()[-1]
    assert key.startswith("sk-") and len(key) > 40

    shown = _tenant(routers, "show", "acme")
    assert shown.returncode == 0 and key not in shown.stdout
    record = _shown(routers, "acme")
    assert record["key_sha256"] == [hashlib.sha256(key.encode()).hexdigest()]
    assert (record["rpm"], record["models"], record["allow_priority"]) == (100, [TINY, "other"], False)

    async def raw() -> bytes:
        connector = EtcdConnector(routers.etcd.endpoint)
        client = await connector.connect()
        try:
            return (await client.get(keys.tenant("acme").encode())).value
        finally:
            await connector.discard(client)

    assert key.encode() not in asyncio.run(raw())

    # put changes only what it is given; the key keeps working
    assert _tenant(routers, "put", "acme", "--tpm", "5000").returncode == 0
    record = _shown(routers, "acme")
    assert (record["rpm"], record["tpm"], len(record["key_sha256"])) == (100, 5000, 1)
    assert "acme" in _tenant(routers, "list").stdout
    refused = _tenant(routers, "put", "acme", "--rpm", "-1")
    assert refused.returncode == 2 and "rpm" in refused.stderr
    assert _shown(routers, "acme")["rpm"] == 100  # nothing stored
    wait_for(lambda: _complete(routers, 1, key).choices[0].text, 15, what="router B to accept acme's key")

    # deleting the tenant stops its key on every router
    deleted = _tenant(routers, "delete", "acme")
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert "acme" not in _tenant(routers, "list").stdout
    assert _tenant(routers, "show", "acme").returncode == 1
    for i in (0, 1):
        wait_for(
            lambda i=i: (
                httpx.get(routers.url(i) + "/v1/models", headers={"Authorization": f"Bearer {key}"}).status_code == 401
            ),
            15,
            what=f"router {i} to forget acme",
        )


def test_a_model_the_tenant_may_not_use_is_403(routers):
    key = _new_tenant(routers, "narrow", "--models", "some-other-model")
    with pytest.raises(openai.PermissionDeniedError) as refused:
        _complete(routers, 0, key)
    error = refused.value.body
    assert refused.value.status_code == 403 and error["param"] == "model" and error["code"] == "model_not_allowed"
    listed = httpx.get(routers.url(1) + "/v1/models", headers={"Authorization": f"Bearer {key}"}).json()
    assert listed["data"] == []  # it does not even see the model


def test_priority_and_headers_are_refused_unless_the_tenant_may_set_them(routers):
    plain = _new_tenant(routers, "plain")
    client = routers.client(0, plain)
    refusals = [
        ({"extra_body": {"priority": 1}}, "priority"),
        ({"extra_headers": {"x-slo-ttft-ms": "500"}}, "x-slo-ttft-ms"),
        ({"extra_headers": {"x-tessera-profile": "round_robin"}}, "x-tessera-profile"),
    ]
    for extra, field in refusals:
        with pytest.raises(openai.PermissionDeniedError) as refused:
            client.completions.create(model=TINY, prompt="hi", max_tokens=2, **extra)
        assert refused.value.body["param"] == field
    with pytest.raises(grpc.RpcError) as refused_grpc:
        _grpc_generate(routers, 1, plain, priority=1)
    assert refused_grpc.value.code() == grpc.StatusCode.PERMISSION_DENIED

    vip = _new_tenant(routers, "vip", "--allow-priority", "--max-priority", "3", "--allow-slo-header")
    client = routers.client(1, vip)
    assert client.completions.create(
        model=TINY, prompt="hi", max_tokens=2, extra_body={"priority": 3}, extra_headers={"x-slo-ttft-ms": "5000"}
    ).choices
    with pytest.raises(openai.PermissionDeniedError, match="above 3"):
        client.completions.create(model=TINY, prompt="hi", max_tokens=2, extra_body={"priority": 4})
    assert _grpc_generate(routers, 0, vip, priority=2)[-1].finish_reason


# --- limits across two routers ---------------------------------------------------------------------


def _assert_rate_limited(exc: openai.RateLimitError) -> None:
    assert exc.status_code == 429
    error = exc.body
    assert error["type"] == "rate_limit_error" and error["code"] == "rate_limit_exceeded"
    retry_after = int(exc.response.headers["retry-after"])
    assert abs(retry_after - seconds_to_window_end(time.time())) <= 2, retry_after


def test_requests_per_minute_hold_across_two_routers(routers):
    key = _new_tenant(routers, "rpm6", "--rpm", "6")
    _fresh_window()
    for n in range(6):  # A, B, A, B, A, B
        assert _complete(routers, n % 2, key).choices[0].text
    for i in (0, 1):
        with pytest.raises(openai.RateLimitError) as refused:
            _complete(routers, i, key)
        _assert_rate_limited(refused.value)
    with pytest.raises(grpc.RpcError) as refused_grpc:
        _grpc_generate(routers, 1, key)
    assert refused_grpc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    # operators see whom the limits refused (router B: an HTTP and a gRPC refusal)
    exported = httpx.get(routers.url(1) + "/metrics", timeout=10).text
    assert 'tessera_router_tenant_refused_total{reason="rate_limited",tenant="rpm6"} 2.0' in exported
    # another tenant is not affected
    assert _complete(routers, 0, ADMIN_KEY).choices


def test_tokens_per_minute_hold_across_two_routers(routers):
    key = _new_tenant(routers, "tpm100", "--tpm", "100")
    _fresh_window()
    prompt = list(range(10, 20))  # 10 prompt tokens + max_tokens 10: each request is charged 20 tokens
    with pytest.raises(openai.RateLimitError, match="more than tenant tpm100's limit"):
        _complete(routers, 0, key, prompt=prompt, max_tokens=95)  # 105 tokens could never fit
    for n in range(5):
        done = _complete(routers, n % 2, key, prompt=prompt, max_tokens=10)
        assert done.usage.prompt_tokens == 10
    with pytest.raises(openai.RateLimitError) as refused:
        _complete(routers, 1, key, prompt=prompt, max_tokens=10)
    _assert_rate_limited(refused.value)


def test_limited_tenants_are_refused_with_503_when_etcd_is_down(routers):
    """Fail closed: without the shared counters nobody can tell whether a limited tenant is within its limit.
    (Last in this module: it stops etcd.)"""
    limited = _new_tenant(routers, "limited", "--rpm", "5")
    unlimited = _new_tenant(routers, "unlimited")
    routers.etcd.kill()
    with pytest.raises(openai.InternalServerError) as refused:
        _complete(routers, 0, limited)
    assert refused.value.status_code == 503 and refused.value.body["code"] == "rate_limiter_unavailable"
    assert _complete(routers, 1, unlimited).choices  # tenants without limits keep being served
