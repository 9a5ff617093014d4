"""The autoscaler service on a platform that owns its workers: it makes Kubernetes run its groups.

`tessera autoscaler --actuator k8s` runs for real (etcd leader election, the official Kubernetes
client) against the fake API server of tests/support/fake_kube_api.py, which holds the
repository's worker PodTemplates (deploy/k8s/worker).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubernetes", reason="the Kubernetes client is in the dev and k8s extras")

from services.autoscaler import k8s_workload as wl
from tests.support.fake_kube_api import FakeKubeApi, write_kubeconfig
from tests.support.harness import ServiceProcess, wait_for
from tests.support.paths import REPO

KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")


def counts(api: FakeKubeApi) -> dict[str, int]:
    """Group -> replicas of the Deployments the autoscaler made."""
    return {
        d["metadata"]["annotations"][wl.GROUP_ANNOTATION]: d["spec"]["replicas"]
        for d in api.deployments.values()
        if d["metadata"]["labels"].get(wl.MANAGED_BY) == wl.MANAGER
    }


@pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (pip install -e '.[dev]')")
def test_the_autoscaler_creates_and_holds_one_deployment_per_group(local_etcd, tmp_path):
    rendered = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "deploy/k8s/worker")], capture_output=True, text=True, timeout=60
    )
    assert rendered.returncode == 0, rendered.stderr
    api = FakeKubeApi()
    for template in yaml.safe_load_all(rendered.stdout):
        api.add_podtemplate(template)
    host = api.start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", host, "tessera")
    desired = tmp_path / "desired.yaml"
    desired.write_text(
        "groups:\n"
        "  - {name: mixed, model: smollm2, replicas: 2, accelerator: cpu}\n"
        "  - {name: prefill, model: smollm2, role: prefill, replicas: 1, accelerator: h100-sxm,"
        " engine_args: {tensor_parallel_size: 2}}\n"
        "  - {name: decode, model: smollm2, role: decode, replicas: 2, accelerator: mi300x}\n"
    )
    autoscaler = ServiceProcess(
        "autoscaler",
        [
            "autoscaler",
            "--etcd",
            local_etcd.endpoint,
            "--lease-ttl",
            "2",
            "--actuator",
            "k8s",
            "--kubeconfig",
            kubeconfig,
            "--desired",
            str(desired),
        ],
        tmp_path,
    ).start()
    try:
        wanted = {"mixed": 2, "prefill": 1, "decode": 2}
        wait_for(lambda: counts(api) == wanted, 30, interval=0.2, what="one Deployment per group at its count")
        prefill = next(
            d for d in api.deployments.values() if d["metadata"]["labels"].get("tessera.ai/role") == "prefill"
        )
        limits = prefill["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert limits == {"nvidia.com/gpu": "2"}
        # Someone scales a Deployment by hand: the autoscaler puts it back (draining what it removes).
        (_, name) = next(k for k, d in api.deployments.items() if d is prefill)
        with api._lock:  # as `kubectl scale --replicas 4` would: the ReplicaSet adds pods
            api.deployments[("tessera", name)]["spec"]["replicas"] = 4
            api._sync_pods("tessera", api.deployments[("tessera", name)])
        wait_for(lambda: api.replicas(name) == 1, 30, interval=0.2, what="the autoscaler to restore the count")
    finally:
        code = autoscaler.stop()
        api.stop()
    assert code == 0
    # Stopping the autoscaler leaves the workers to the platform.
    assert counts(api) == wanted
    assert len(api.pods_of(name)) == 1
