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
from tessera.runtime.rpc.authz import POLICY, ROLE_DOMAIN, ROLES, allowed, role_from_pem, role_from_uris
from tessera.runtime.rpc.certs import LOOPBACK_HOSTS, CertFiles, LocalCA, make_cluster_certs, server_hosts
from tessera.runtime.rpc.server import RunningServer, ServiceBinding, channel, start_server
from tessera.v1 import common_pb2 as pb
from tessera.v1 import scheduler_pb2, scheduler_pb2_grpc, worker_pb2, worker_pb2_grpc

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
    base = {"tls_ca": "", "tls_cert": "", "tls_key": "", "tls_role_domain": "", "insecure": False}
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


# -- the client checks the server's role -------------------------------------------------------------------


class _Scheduler(scheduler_pb2_grpc.SchedulerServicer):
    """A scheduler that knows no workers: what matters here is who may answer as one."""

    async def ListWorkers(self, request, context):
        return scheduler_pb2.ListWorkersResponse()


async def _scheduler_serving_with(files: CertFiles) -> RunningServer:
    tls.set_active(tls.TLSConfig.from_files(str(files.ca), str(files.cert), str(files.key)))
    return await start_server([ServiceBinding(scheduler_pb2_grpc.add_SchedulerServicer_to_server, _Scheduler(), "s")])


async def _list_workers_as_router(address: str, router: CertFiles, domain: str = ROLE_DOMAIN) -> grpc.StatusCode:
    """ListWorkers over the channel the router opens to a scheduler (``channel(address, "scheduler")``)."""
    tls.set_active(tls.TLSConfig.from_files(str(router.ca), str(router.cert), str(router.key), domain))
    async with channel(address, "scheduler") as ch:
        try:
            await scheduler_pb2_grpc.SchedulerStub(ch).ListWorkers(scheduler_pb2.ListWorkersRequest(), timeout=5)
        except grpc.aio.AioRpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


async def test_the_router_refuses_a_worker_certificate_in_place_of_the_scheduler(tmp_path):
    """A worker's certificate is of our CA and valid for this address; served where etcd says a scheduler
    is (anyone holding a cluster certificate can write that), it must not receive the router's placements."""
    certs = make_cluster_certs(tmp_path / "ca")
    servers = [await _scheduler_serving_with(certs[role]) for role in ("worker", "scheduler", "autoscaler")]
    try:
        impostor, scheduler, autoscaler = (f"127.0.0.1:{s.port}" for s in servers)
        assert await _list_workers_as_router(scheduler, certs["router"]) == grpc.StatusCode.OK
        assert await _list_workers_as_router(impostor, certs["router"]) == grpc.StatusCode.UNAVAILABLE  # handshake
        assert await _list_workers_as_router(autoscaler, certs["router"]) == grpc.StatusCode.UNAVAILABLE
        # The role name replaces the address: the same server dialed by another of its names still passes.
        assert await _list_workers_as_router(scheduler.replace("127.0.0.1", "localhost"), certs["router"]) == (
            grpc.StatusCode.OK
        )
    finally:
        for s in servers:
            await s.stop(0)
        tls.set_active(None)


async def test_role_names_live_in_the_configured_domain(tmp_path):
    """A deployment's own CA may put its roles under its own domain (--tls-role-domain); a certificate
    naming the role in another domain, or naming the role only in its SPIFFE URI, does not pass."""
    ca = LocalCA(tmp_path / "ca")
    router = ca.issue("router")
    mine = ca.issue("scheduler", domain="tessera.prod.example")
    uri_only = ca.issue("sched", uri="spiffe://tessera/scheduler")  # the role for servers, no role name for clients
    servers = [await _scheduler_serving_with(files) for files in (mine, uri_only)]
    try:
        at_mine, at_uri_only = (f"127.0.0.1:{s.port}" for s in servers)
        assert await _list_workers_as_router(at_mine, router, "tessera.prod.example") == grpc.StatusCode.OK
        assert await _list_workers_as_router(at_mine, router) == grpc.StatusCode.UNAVAILABLE
        assert await _list_workers_as_router(at_uri_only, router) == grpc.StatusCode.UNAVAILABLE
    finally:
        for s in servers:
            await s.stop(0)
        tls.set_active(None)


def test_a_channel_must_name_a_known_role(tmp_path):
    files = make_cluster_certs(tmp_path / "ca")["router"]
    config = tls.TLSConfig.from_files(str(files.ca), str(files.cert), str(files.key))
    assert config.channel_options("worker") == [("grpc.ssl_target_name_override", "worker.tessera.internal")]
    with pytest.raises(ValueError):
        config.channel_options("etcd")


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
