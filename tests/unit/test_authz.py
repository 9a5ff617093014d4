"""Internal APIs: who may call what (the allow list), roles from certificates, and the servers enforcing both."""

from __future__ import annotations

import argparse

import grpc
import pytest

from services.scheduler.view import ClusterView
from services.worker.load import LoadTracker
from services.worker.servicer import WorkerServicer
from tessera.runtime.rpc import certs as certs_module
from tessera.runtime.rpc import tls
from tessera.runtime.rpc.authz import POLICY, ROLES, allowed, role_from_pem, role_from_uris
from tessera.runtime.rpc.certs import LOOPBACK_HOSTS, CertFiles, LocalCA, make_cluster_certs, server_hosts
from tessera.runtime.rpc.server import ServiceBinding, channel, start_server
from tessera.v1 import common_pb2 as pb
from tessera.v1 import worker_pb2, worker_pb2_grpc

DRAIN = "/tessera.v1.Worker/Drain"
GENERATE = "/tessera.v1.Worker/Generate"
REPORT = "/tessera.v1.Scheduler/ReportLoad"


@pytest.mark.parametrize(
    ("method", "may"),
    [
        (DRAIN, {"autoscaler", "cli"}),
        (GENERATE, {"router"}),
        (REPORT, {"worker"}),
        ("/tessera.v1.Scheduler/PlaceStream", {"router"}),
    ],
)
def test_each_control_call_is_open_to_its_roles_only(method, may):
    assert {role for role in ROLES if allowed(method, role)} == may


def test_no_role_and_unknown_methods_are_refused():
    assert not allowed(DRAIN, None)
    assert not allowed("/tessera.v1.Worker/SomethingNew", "autoscaler")
    assert not allowed("/grpc.health.v1.Health/Check", None)


def test_health_and_reflection_are_open_to_every_role():
    for role in ROLES:
        assert allowed("/grpc.health.v1.Health/Check", role)
        assert allowed("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo", role)


def test_every_method_of_the_internal_services_is_in_the_policy():
    from tessera.v1 import autoscaler_pb2, scheduler_pb2, worker_pb2

    for module in (scheduler_pb2, worker_pb2, autoscaler_pb2):
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                assert f"/{service.full_name}/{method.name}" in POLICY, method.full_name


def test_the_role_comes_from_the_spiffe_uri():
    assert role_from_uris(["https://example.com", "spiffe://tessera/worker"]) == "worker"
    assert role_from_uris(["spiffe://tessera/root"]) is None  # not a role
    assert role_from_uris(["spiffe://other/worker"]) is None  # not our trust domain


def test_roles_from_issued_certificates(tmp_path):
    ca = LocalCA(tmp_path)
    assert role_from_pem(ca.issue("router").cert.read_bytes()) == "router"
    assert role_from_pem(ca.issue("x", uri="spiffe://elsewhere/router").cert.read_bytes()) is None
    assert role_from_pem(b"not a certificate") is None


def _args(**kw) -> argparse.Namespace:
    base = {"tls_ca": "", "tls_cert": "", "tls_key": "", "tls_server_name": "", "insecure": False}
    return argparse.Namespace(**{**base, **kw})


def test_plaintext_is_refused_beyond_loopback_unless_insecure(tmp_path):
    try:
        tls.configure(_args(), "127.0.0.1")  # the default: works with no configuration
        tls.configure(_args(), "localhost")
        for host in ("0.0.0.0", "10.1.2.3", ""):
            with pytest.raises(tls.TLSConfigError, match="without TLS"):
                tls.configure(_args(), host)
        tls.configure(_args(insecure=True), "0.0.0.0")
        files = make_cluster_certs(tmp_path)["worker"]
        assert tls.configure(_args(tls_ca=str(files.ca), tls_cert=str(files.cert), tls_key=str(files.key)), "0.0.0.0")
        with pytest.raises(tls.TLSConfigError, match="--tls-key missing"):
            tls.configure(_args(tls_ca=str(files.ca), tls_cert=str(files.cert)), "127.0.0.1")
    finally:
        tls.set_active(None)


def test_with_tls_a_worker_needs_both_registration_and_stream():
    ident = pb.WorkerIdentity(id="w1", model="m", address="127.0.0.1:1")
    strict = ClusterView(require_stream=True)
    strict.registered(ident)
    assert not strict.workers["w1"].healthy  # etcd alone: anyone who can write to etcd
    strict.stream_opened(ident)
    assert strict.workers["w1"].healthy
    only_stream = ClusterView(require_stream=True)
    only_stream.stream_opened(pb.WorkerIdentity(id="w2", model="m"))
    assert not only_stream.workers["w2"].healthy  # a stream alone: not registered
    loose = ClusterView()
    loose.registered(ident)
    assert loose.workers["w1"].healthy  # without TLS, as before


# -- the servers ------------------------------------------------------------------------------------------


@pytest.fixture
def certs(tmp_path) -> dict[str, CertFiles]:
    return make_cluster_certs(tmp_path / "ca")


@pytest.fixture
async def tls_worker(certs):
    """A Worker service (no engine) behind mTLS, as the worker serves it: (its address, its load tracker)."""
    tls.set_active(
        tls.TLSConfig.from_files(str(certs["worker"].ca), str(certs["worker"].cert), str(certs["worker"].key))
    )
    tracker = LoadTracker()
    servicer = WorkerServicer(None, tracker, pb.WorkerIdentity(id="w1"))
    server = await start_server([ServiceBinding(worker_pb2_grpc.add_WorkerServicer_to_server, servicer, "w")])
    yield f"localhost:{server.port}", tracker
    await server.stop(0)
    tls.set_active(None)


def _channel(address: str, ca: CertFiles, client: CertFiles | None) -> grpc.aio.Channel:
    creds = grpc.ssl_channel_credentials(
        ca.ca.read_bytes(),
        client.key.read_bytes() if client else None,
        client.cert.read_bytes() if client else None,
    )
    return grpc.aio.secure_channel(address, creds)


async def _drain(address: str, ca: CertFiles, client: CertFiles | None) -> grpc.StatusCode:
    async with _channel(address, ca, client) as ch:
        try:
            await worker_pb2_grpc.WorkerStub(ch).Drain(worker_pb2.DrainRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_drain_needs_the_autoscaler_or_cli_role(tls_worker, certs, tmp_path):
    address, tracker = tls_worker
    for role in ("router", "worker", "scheduler"):
        assert await _drain(address, certs["worker"], certs[role]) == grpc.StatusCode.PERMISSION_DENIED, role
    assert not tracker.draining
    assert await _drain(address, certs["worker"], None) == grpc.StatusCode.UNAVAILABLE  # no certificate: no handshake
    stranger = LocalCA(tmp_path / "other").issue("autoscaler")
    assert await _drain(address, certs["worker"], stranger) == grpc.StatusCode.UNAVAILABLE  # another CA's
    assert not tracker.draining
    assert await _drain(address, certs["worker"], certs["cli"]) == grpc.StatusCode.OK
    assert tracker.draining


async def test_generate_needs_the_router_role(tls_worker, certs):
    address, _ = tls_worker
    async with _channel(address, certs["worker"], certs["autoscaler"]) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            async for _ in worker_pb2_grpc.WorkerStub(ch).Generate(worker_pb2.GenerateRequest(), timeout=5):
                pass
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_a_certificate_without_a_role_is_unauthenticated(tls_worker, certs):
    address, _ = tls_worker
    # etcd's certificate: signed by the cluster CA, but it names no role.
    async with _channel(address, certs["worker"], certs["etcd"]) as ch:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await worker_pb2_grpc.WorkerStub(ch).GetInfo(worker_pb2.GetInfoRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED


# -- the client checks the server's address -----------------------------------------------------------------


async def _get_info_as_router(address: str, router: CertFiles, server_name: str = "") -> grpc.StatusCode:
    """GetInfo over the channel every service opens (``rpc.server.channel``), as the router."""
    tls.set_active(tls.TLSConfig.from_files(str(router.ca), str(router.cert), str(router.key), server_name))
    async with channel(address) as ch:
        try:
            await worker_pb2_grpc.WorkerStub(ch).GetInfo(worker_pb2.GetInfoRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_a_client_refuses_a_cluster_certificate_issued_for_another_address(tmp_path):
    """A certificate of our own CA, naming the right role, but for another machine: stolen from a worker
    elsewhere, it must not let this address pass for that worker. The server name is the escape hatch."""
    ca = LocalCA(tmp_path / "ca")
    router = ca.issue("router")
    servers = []
    try:
        for hosts in (("10.0.0.7", "worker-7.tessera.internal"), ("127.0.0.1",)):
            files = ca.issue("worker", hosts)
            tls.set_active(tls.TLSConfig.from_files(str(files.ca), str(files.cert), str(files.key)))
            servicer = WorkerServicer(None, LoadTracker(), pb.WorkerIdentity(id="w"))
            servers.append(
                await start_server([ServiceBinding(worker_pb2_grpc.add_WorkerServicer_to_server, servicer, "w")])
            )
        elsewhere, here = (f"127.0.0.1:{s.port}" for s in servers)
        assert await _get_info_as_router(here, router) == grpc.StatusCode.OK  # the same call, the right address
        assert await _get_info_as_router(elsewhere, router) == grpc.StatusCode.UNAVAILABLE  # handshake refused
        assert await _get_info_as_router(elsewhere.replace("127.0.0.1", "localhost"), router) == (
            grpc.StatusCode.UNAVAILABLE
        )
        # Pod IPs cannot be known when certificates are made: every server carries one name and
        # channels check that instead (TESSERA_TLS_SERVER_NAME); a certificate without it still fails.
        assert await _get_info_as_router(elsewhere, router, "worker-7.tessera.internal") == grpc.StatusCode.OK
        assert await _get_info_as_router(here, router, "worker-7.tessera.internal") == grpc.StatusCode.UNAVAILABLE
    finally:
        for s in servers:
            await s.stop(0)
        tls.set_active(None)


def test_certificates_name_the_addresses_servers_are_reached_by(monkeypatch):
    assert server_hosts("127.0.0.1") == LOOPBACK_HOSTS
    assert server_hosts("10.1.2.3") == (*LOOPBACK_HOSTS, "10.1.2.3")
    assert server_hosts("[fd00::5]") == (*LOOPBACK_HOSTS, "fd00::5")
    # Every interface: this machine's names and their addresses (the resolver faked: no lookup leaves the host).
    monkeypatch.setattr(certs_module.socket, "gethostname", lambda: "gpu-7")
    monkeypatch.setattr(certs_module.socket, "getfqdn", lambda: "gpu-7.lab.example")
    monkeypatch.setattr(
        certs_module.socket,
        "getaddrinfo",
        lambda name, port: [(0, 0, 0, "", ("192.0.2.7", 0))] if name == "gpu-7" else [],
    )
    assert server_hosts("0.0.0.0") == (*LOOPBACK_HOSTS, "gpu-7", "gpu-7.lab.example", "192.0.2.7")
