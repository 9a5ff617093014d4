"""Fixtures that stand up real Tessera clusters: etcd, scheduler, router, autoscaler and vLLM workers."""

from __future__ import annotations

import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from tessera.runtime.etcd.server import LocalEtcd
from tessera.runtime.net import free_port
from tests.support.harness import RUN_ID, ServiceProcess, kill_run_processes, wait_for
from tests.support.models import SMOLLM2, TINY, TINY_PD
from tests.support.otlp_collector import OtlpCollector

CLUSTER_START_TIMEOUT_S = 420


def pytest_collection_modifyitems(config, items):
    """Disruptive tests (killing workers, restarting etcd) run after everything else."""
    items.sort(key=lambda item: 1 if item.get_closest_marker("disruptive") else 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "disruptive: kills or restarts parts of the shared cluster; runs last")


@dataclass
class Cluster:
    etcd: LocalEtcd
    scheduler: ServiceProcess
    router: ServiceProcess
    autoscaler: ServiceProcess
    http_port: int
    grpc_port: int
    collector: OtlpCollector
    log_dir: Path
    env: dict[str, str]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def grpc_address(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def models(self) -> dict[str, int]:
        with urllib.request.urlopen(self.base_url + "/v1/models", timeout=5) as resp:
            return {m["id"]: m["workers"] for m in json.loads(resp.read())["data"]}

    def logs(self) -> str:
        return "\n".join(f"--- {s.name} ---\n{s.log_tail()}" for s in (self.scheduler, self.router, self.autoscaler))


def _test_env(collector: OtlpCollector) -> dict[str, str]:
    return {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "HF_HUB_OFFLINE": "1",
        "TESSERA_TEST_RUN": RUN_ID,
    }


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """etcd + scheduler + router + autoscaler keeping 2 tiny workers, 1 SmolLM2 worker and a tiny prefill/decode
    pair (all real vLLM)."""
    log_dir = tmp_path_factory.mktemp("cluster")
    collector = OtlpCollector().start()
    etcd = LocalEtcd(
        client_port=free_port(), data_dir=str(log_dir / "etcd-data"), log_path=str(log_dir / "etcd.log")
    ).start()
    env = _test_env(collector)
    desired = log_dir / "desired.yaml"
    desired.write_text(
        "groups:\n"
        "  - {name: tiny, model: tiny, replicas: 2}\n"
        "  - {name: smollm2, model: smollm2, replicas: 1, engine_args: {max_model_len: 2048}}\n"
        # The same tiny weights as a prefill/decode pair under another name (test_disaggregation.py).
        f"  - {{name: tiny-prefill, model: tiny, role: prefill, replicas: 1,\n"
        f"     engine_args: {{served_model_name: {TINY_PD}}}}}\n"
        f"  - {{name: tiny-decode, model: tiny, role: decode, replicas: 1,\n"
        f"     engine_args: {{served_model_name: {TINY_PD}}}}}\n"
    )
    http_port, grpc_port = free_port(), free_port()
    common = ["--etcd", etcd.endpoint, "--lease-ttl", "3"]
    scheduler = ServiceProcess("scheduler", ["scheduler", *common, "--port", "0"], log_dir, env).start()
    router = ServiceProcess(
        "router", ["router", *common, "--port", str(http_port), "--grpc-port", str(grpc_port)], log_dir, env
    ).start()
    autoscaler = ServiceProcess(
        "autoscaler",
        [
            "autoscaler",
            *common,
            "--desired",
            str(desired),
            "--worker-log-dir",
            str(log_dir / "workers"),
            "--autoscaler-id",
            "autoscaler-a",
        ],
        log_dir,
        env,
    ).start()
    c = Cluster(etcd, scheduler, router, autoscaler, http_port, grpc_port, collector, log_dir, env)
    try:
        wait_for(
            lambda: (
                c.models().get(TINY, 0) >= 2 and c.models().get(SMOLLM2, 0) >= 1 and c.models().get(TINY_PD, 0) >= 2
            ),
            CLUSTER_START_TIMEOUT_S,
            interval=1.0,
            what="2 tiny workers, 1 SmolLM2 worker and a tiny prefill/decode pair to register",
        )
    except TimeoutError:
        print(c.logs())
        raise
    yield c
    for s in (router, autoscaler, scheduler):
        s.stop()
    etcd.stop(wipe=True)
    collector.stop()
    kill_run_processes()


@pytest.fixture(scope="session")
def openai_client(cluster):
    import openai

    return openai.OpenAI(base_url=cluster.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


@pytest.fixture()
def local_etcd(tmp_path):
    """A private etcd for tests of the etcd layer itself."""
    etcd = LocalEtcd(
        client_port=free_port(), data_dir=str(tmp_path / "etcd"), log_path=str(tmp_path / "etcd.log")
    ).start()
    yield etcd
    etcd.stop(wipe=True)


def pytest_sessionfinish(session, exitstatus):
    kill_run_processes()
