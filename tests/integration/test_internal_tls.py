"""Closed internal APIs: `tessera up --tls` serves end to end over mTLS, and the internal services refuse
callers without a certificate or with the wrong role (simulated workers, real router, scheduler, autoscaler)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import aetcd
import aetcd.exceptions
import grpc
import httpx
import pytest

from tessera.runtime.etcd import keys
from tessera.runtime.etcd.records import identity_to_json
from tessera.runtime.etcd.tls import EtcdTLS, TLSClient
from tessera.runtime.rpc.certs import CertFiles, LocalCA
from tessera.runtime.rpc.tls import ENV_CA, ENV_CERT, ENV_KEY
from tessera.v1 import common_pb2 as pb
from tessera.v1 import router_pb2, router_pb2_grpc, scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc
from tests.support.harness import tessera_up, wait_for


def _files(tls_dir: Path, role: str) -> CertFiles:
    return CertFiles(tls_dir / "ca.pem", tls_dir / f"{role}.pem", tls_dir / f"{role}-key.pem")


def _flags(tls_dir: Path, role: str) -> list[str]:
    """A command's flags for gRPC and etcd with ``role``'s certificate."""
    return _files(tls_dir, role).flags() + _files(tls_dir, role).etcd_flags()


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory):
    """`tessera up --tls` with two simulated workers, etcd included: (HTTP port, the directory of its CA and
    certificates, etcd's endpoint)."""
    log_dir = tmp_path_factory.mktemp("tls-up")
    with tessera_up(log_dir, "--tls", "--accelerators", "cpu:2") as (_, port, lines):
        etcd = next(line.split("--etcd")[1].split()[0] for line in lines if "tessera status --etcd" in line)
        yield port, log_dir / "tls", etcd


def _status(tls_dir: Path, etcd: str, role: str = "cli") -> dict:
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--json", "--etcd", etcd, *_flags(tls_dir, role)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _channel(address: str, tls_dir: Path, client: CertFiles | None) -> grpc.Channel:
    creds = grpc.ssl_channel_credentials(
        (tls_dir / "ca.pem").read_bytes(),
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None,
    )
    return grpc.secure_channel(address, creds)


def _code(call) -> grpc.StatusCode:
    try:
        call()
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def test_a_request_completes_end_to_end_over_mtls(tls_cluster):
    port, tls_dir, etcd = tls_cluster
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/completions",
        json={"model": "tiny-llama", "prompt": "hello", "max_tokens": 8},
        timeout=60,
    )
    assert r.status_code == 200, r.text
    assert r.json()["usage"]["completion_tokens"] == 8
    status = _status(tls_dir, etcd)  # the cli role may list workers and read the plan
    assert [w["healthy"] for w in status["workers"]] == [True, True]
    assert status["plan"] is not None
    assert len((tls_dir / "worker-http-key").read_text().strip()) >= 32  # for the workers' vLLM HTTP APIs


def test_the_report_stream_is_for_worker_certificates_only(tls_cluster):
    _, tls_dir, etcd = tls_cluster
    scheduler = next(s["address"] for s in _status(tls_dir, etcd)["services"] if s["kind"] == "scheduler")
    hello = scheduler_pb2.WorkerReport(
        hello=pb.WorkerIdentity(id="impostor", model="tiny-llama", address="127.0.0.1:1")
    )

    def report(client: CertFiles | None) -> grpc.StatusCode:
        with _channel(scheduler, tls_dir, client) as ch:
            return _code(lambda: scheduler_pb2_grpc.SchedulerStub(ch).ReportLoad(iter([hello]), timeout=10))

    assert report(None) == grpc.StatusCode.UNAVAILABLE  # no client certificate: the handshake fails
    for role in ("router", "cli", "autoscaler"):
        assert report(_files(tls_dir, role)) == grpc.StatusCode.PERMISSION_DENIED, role
    stranger = LocalCA(tls_dir.parent / "stranger-ca").issue("worker")  # a worker certificate from another CA
    assert report(stranger) == grpc.StatusCode.UNAVAILABLE
    assert "impostor" not in {w["identity"]["id"] for w in _list_workers(scheduler, tls_dir)}


def _list_workers(scheduler: str, tls_dir: Path) -> list[dict]:
    from google.protobuf import json_format

    with _channel(scheduler, tls_dir, _files(tls_dir, "cli")) as ch:
        resp = scheduler_pb2_grpc.SchedulerStub(ch).ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=10)
    return [json_format.MessageToDict(w, preserving_proto_field_name=True) for w in resp.workers]


def test_workers_refuse_drain_and_generate_from_the_wrong_roles(tls_cluster):
    port, tls_dir, etcd = tls_cluster
    worker = _status(tls_dir, etcd)["workers"][0]["address"]

    def drain(client: CertFiles | None) -> grpc.StatusCode:
        with _channel(worker, tls_dir, client) as ch:
            return _code(lambda: worker_pb2_grpc.WorkerStub(ch).Drain(worker_pb2.DrainRequest(), timeout=10))

    def generate(client: CertFiles | None) -> grpc.StatusCode:
        req = worker_pb2.GenerateRequest(request_id="x", prompt_token_ids=[1, 2, 3])
        with _channel(worker, tls_dir, client) as ch:
            return _code(lambda: list(worker_pb2_grpc.WorkerStub(ch).Generate(req, timeout=10)))

    assert drain(None) == grpc.StatusCode.UNAVAILABLE
    assert generate(None) == grpc.StatusCode.UNAVAILABLE
    for role in ("router", "worker", "scheduler"):
        assert drain(_files(tls_dir, role)) == grpc.StatusCode.PERMISSION_DENIED, role
    for role in ("autoscaler", "worker", "cli"):
        assert generate(_files(tls_dir, role)) == grpc.StatusCode.PERMISSION_DENIED, role
    # Nothing was drained: both workers still take requests.
    assert all(w["healthy"] for w in _status(tls_dir, etcd)["workers"])
    r = httpx.post(
        f"http://127.0.0.1:{port}/v1/completions",
        json={"model": "tiny-llama", "prompt": "again", "max_tokens": 4},
        timeout=60,
    )
    assert r.status_code == 200, r.text


def test_the_drain_command_needs_the_cli_role(tls_cluster):
    _, tls_dir, etcd = tls_cluster
    worker = _status(tls_dir, etcd)["workers"][0]["address"]
    refused = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "drain", worker, "--timeout", "5", *_files(tls_dir, "worker").flags()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 1 and "refused Drain" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    drained = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "drain", worker, "--timeout", "10", *_files(tls_dir, "cli").flags()],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert drained.returncode == 0, drained.stderr
    scheduler = next(s["address"] for s in _status(tls_dir, etcd)["services"] if s["kind"] == "scheduler")
    wait_for(
        lambda: any(
            w["identity"]["address"] == worker and w.get("load", {}).get("draining")
            for w in _list_workers(scheduler, tls_dir)
        ),
        30,
        what="the scheduler to see the worker draining",
    )


def test_an_internal_service_without_tls_refuses_a_non_loopback_address(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "scheduler", "--host", "0.0.0.0", "--etcd", "127.0.0.1:1"],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if k not in (ENV_CA, ENV_CERT, ENV_KEY)},
    )
    assert out.returncode == 2
    errors = [line for line in (out.stdout + out.stderr).splitlines() if line.strip()]
    assert len(errors) == 1 and "without TLS" in errors[0] and "--insecure" in errors[0], errors


async def _etcd_workers(endpoint: str, credentials: grpc.ChannelCredentials | None) -> int:
    """How many workers are registered, read by a client with these credentials (None: plaintext)."""
    host, port = endpoint.rsplit(":", 1)
    if credentials is None:
        client = aetcd.Client(host=host, port=int(port), timeout=3)
    else:
        client = TLSClient(credentials, host=host, port=int(port), timeout=3)
    await client.connect()
    try:
        return len(list(await client.get_prefix(keys.WORKERS.encode())))
    finally:
        await client.close()


async def test_etcd_serves_registrations_to_certificates_of_the_cluster_only(tls_cluster, tmp_path):
    _, tls_dir, etcd = tls_cluster
    cli = _files(tls_dir, "cli")
    assert await _etcd_workers(etcd, EtcdTLS(str(cli.ca), str(cli.cert), str(cli.key)).credentials()) == 2
    with pytest.raises(aetcd.exceptions.ConnectionFailedError):  # plaintext: no TLS handshake
        await _etcd_workers(etcd, None)
    with pytest.raises(aetcd.exceptions.ConnectionFailedError):  # TLS without a client certificate
        await _etcd_workers(etcd, grpc.ssl_channel_credentials(cli.ca.read_bytes()))
    stranger = LocalCA(tmp_path / "stranger").issue("cli")
    with pytest.raises(aetcd.exceptions.ConnectionFailedError):  # a certificate from another CA
        await _etcd_workers(
            etcd,
            grpc.ssl_channel_credentials(cli.ca.read_bytes(), stranger.key.read_bytes(), stranger.cert.read_bytes()),
        )
    # The command line says so in one line, too.
    out = subprocess.run(
        [sys.executable, "-m", "tessera.cli", "status", "--etcd", etcd, *cli.flags()],
        capture_output=True,
        text=True,
        timeout=60,
        env={k: v for k, v in os.environ.items() if not k.startswith("TESSERA_ETCD_")},
    )
    assert out.returncode == 1 and "cannot read the cluster from etcd" in out.stderr, out.stderr


def test_the_router_api_is_public_over_tls(tls_cluster):
    """The front door: a client with only the CA (no certificate of its own) may call the Router API."""
    _, tls_dir, etcd = tls_cluster
    router = next(s["address"] for s in _status(tls_dir, etcd)["services"] if s["kind"] == "router")
    with _channel(router, tls_dir, None) as ch:
        models = router_pb2_grpc.RouterStub(ch).ListModels(router_pb2.ListModelsRequest(), timeout=10)
    assert [m.id for m in models.models] == ["tiny-llama"]
    with grpc.insecure_channel(router) as ch:  # but not in plaintext
        assert _code(lambda: router_pb2_grpc.RouterStub(ch).ListModels(router_pb2.ListModelsRequest(), timeout=5)) == (
            grpc.StatusCode.UNAVAILABLE
        )


async def test_a_registration_in_etcd_alone_does_not_make_a_worker_placeable(tls_cluster):
    """Anyone who can write to etcd could register a worker; with TLS the scheduler also wants its report stream."""
    port, tls_dir, etcd = tls_cluster
    cli = _files(tls_dir, "cli")
    host, etcd_port = etcd.rsplit(":", 1)
    client = TLSClient(EtcdTLS(str(cli.ca), str(cli.cert), str(cli.key)).credentials(), host=host, port=int(etcd_port))
    await client.connect()
    impostor = pb.WorkerIdentity(id="impostor-etcd", model="tiny-llama", address="127.0.0.1:9", engine="sim")
    await client.put(keys.worker(impostor.id).encode(), identity_to_json(impostor))
    try:
        scheduler = next(s["address"] for s in _status(tls_dir, etcd)["services"] if s["kind"] == "scheduler")
        seen = wait_for(
            lambda: [w for w in _list_workers(scheduler, tls_dir) if w["identity"]["id"] == impostor.id],
            30,
            what="the scheduler to see the registration",
        )
        assert not seen[0].get("healthy") and seen[0].get("registered")
        # Requests keep going to the real workers only (the impostor's address would refuse them).
        async with httpx.AsyncClient(timeout=60) as http:
            for _ in range(6):
                r = await http.post(
                    f"http://127.0.0.1:{port}/v1/completions",
                    json={"model": "tiny-llama", "prompt": "who serves", "max_tokens": 2},
                )
                assert r.status_code == 200, r.text
    finally:
        await client.delete(keys.worker(impostor.id).encode())
        await client.close()
