"""The autoscaler service on a platform that owns its workers: it holds each group's replica count there.

`tessera autoscaler --actuator k8s` runs for real (etcd leader election, the
official Kubernetes client) against the fake API server of tests/support/fake_kube_api.py.
"""

from __future__ import annotations

import pytest

pytest.importorskip("kubernetes", reason="the Kubernetes client is in the dev and k8s extras")

from tests.support.fake_kube_api import FakeKubeApi, worker_labels, write_kubeconfig
from tests.support.harness import ServiceProcess, wait_for


def test_the_autoscaler_scales_worker_deployments_to_the_desired_counts(local_etcd, tmp_path):
    api = FakeKubeApi()
    api.add("worker-smollm2-h100-mixed", worker_labels("smollm2", "mixed", "h100-sxm", "nvidia"), replicas=1)
    api.add("worker-smollm2-h100-prefill", worker_labels("smollm2", "prefill", "h100-sxm", "nvidia"), replicas=0)
    api.add("worker-smollm2-a100-decode", worker_labels("smollm2", "decode", "a100-80gb-sxm", "nvidia"), replicas=3)
    host = api.start()
    kubeconfig = write_kubeconfig(tmp_path / "kubeconfig", host, "tessera")
    desired = tmp_path / "desired.yaml"
    desired.write_text(
        "groups:\n"
        "  - {name: mixed, model: smollm2, replicas: 2}\n"
        "  - {name: prefill, model: smollm2, role: prefill, replicas: 1, accelerator: h100-sxm}\n"
        "  - {name: decode, model: smollm2, role: decode, replicas: 2, accelerator: a100-80gb-sxm}\n"
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
        wanted = {"worker-smollm2-h100-mixed": 2, "worker-smollm2-h100-prefill": 1, "worker-smollm2-a100-decode": 2}
        wait_for(
            lambda: {name: api.replicas(name) for name in wanted} == wanted,
            30,
            interval=0.2,
            what="the worker Deployments to reach the desired counts",
        )
        # Someone scales a Deployment by hand: the autoscaler puts it back.
        api.add("worker-smollm2-h100-mixed", worker_labels("smollm2", "mixed", "h100-sxm", "nvidia"), replicas=5)
        wait_for(
            lambda: api.replicas("worker-smollm2-h100-mixed") == 2,
            30,
            interval=0.2,
            what="the autoscaler to restore the count",
        )
    finally:
        code = autoscaler.stop()
        api.stop()
    assert code == 0
    # Stopping the autoscaler leaves the workers to the platform.
    assert api.replicas("worker-smollm2-a100-decode") == 2
