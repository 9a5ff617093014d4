"""The Kubernetes actuator, through the official client, against the documented API behaviour.

The API server is tests/support/fake_kube_api.py (there is no kube-apiserver here);
what is asserted is what an operator notices: the Deployment's replicas
change, a concurrent write is retried and ours wins, and a missing Deployment
or a missing permission gives an error that says what to fix.
"""

from __future__ import annotations

import pytest

pytest.importorskip("kubernetes", reason="the kubernetes client is a dev dependency: pip install -e '.[dev]'")

from kubernetes import client

from services.autoscaler.actuator import Actuator, ScalingError
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.k8s_actuator import KubernetesActuator
from tests.support.fake_kube_api import FakeKubeApi, worker_labels, write_kubeconfig

NS = "tessera"


@pytest.fixture
def api():
    fake = FakeKubeApi()
    fake.add("worker-smollm2-h100-mixed", worker_labels("smollm2", "mixed", "h100-sxm", "nvidia"), replicas=1)
    fake.add("worker-smollm2-h100-decode", worker_labels("smollm2", "decode", "h100-sxm", "nvidia"), replicas=0)
    fake.add("worker-smollm2-mi300x-decode", worker_labels("smollm2", "decode", "mi300x", "amd"), replicas=0)
    fake.add("router", {"app.kubernetes.io/component": "router"}, replicas=2)
    fake.add("worker-smollm2-h100-mixed", worker_labels("smollm2", "mixed", "h100-sxm", "nvidia"), namespace="other")
    host = fake.start()
    fake.host = host
    yield fake
    fake.stop()


@pytest.fixture
async def actuator(api):
    act = KubernetesActuator(client.ApiClient(client.Configuration(host=api.host)), NS)
    yield act
    await act.close()


MIXED = WorkerGroup(name="smollm2", model="smollm2", replicas=3)


async def test_it_is_a_scaling_actuator(actuator):
    assert isinstance(actuator, Actuator)


async def test_scale_changes_the_deployments_replicas(api, actuator):
    assert await actuator.replicas(MIXED) == 1
    await actuator.scale(MIXED, 3)
    assert api.replicas("worker-smollm2-h100-mixed") == 3
    assert await actuator.replicas(MIXED) == 3
    assert api.replicas("worker-smollm2-h100-mixed", namespace="other") == 1  # only its own namespace
    await actuator.scale(MIXED, 0)
    assert api.replicas("worker-smollm2-h100-mixed") == 0


async def test_converge_sets_every_group_and_writes_only_what_differs(api, actuator):
    decode = WorkerGroup(name="decode-nvidia", model="smollm2", role="decode", accelerator="nvidia", replicas=2)
    done = await actuator.converge([MIXED, decode])
    assert {(a.group, a.reason) for a in done.actions} == {
        ("smollm2", "1 -> 3 replicas"),
        ("decode-nvidia", "0 -> 2 replicas"),
    }
    assert done.replicas == {"smollm2": 3, "decode-nvidia": 2}
    assert api.replicas("worker-smollm2-h100-decode") == 2 and api.replicas("worker-smollm2-mi300x-decode") == 0
    writes = sum(1 for method, _, _ in api.seen if method == "PUT")
    assert (await actuator.converge([MIXED, decode])).actions == []
    assert sum(1 for method, _, _ in api.seen if method == "PUT") == writes


async def test_a_concurrent_write_is_retried_with_a_fresh_resource_version_and_ours_wins(api, actuator):
    api.interfere["worker-smollm2-h100-mixed"] = 1  # someone scales it between our read and our write
    await actuator.scale(MIXED, 4)
    assert api.conflicts == 1
    assert api.replicas("worker-smollm2-h100-mixed") == 4


async def test_a_deployment_that_keeps_changing_gives_up_with_a_clear_error(api):
    act = KubernetesActuator(client.ApiClient(client.Configuration(host=api.host)), NS, conflict_retries=2)
    original_route = api._route

    def always_interfere(*args, **kwargs):
        api.interfere["worker-smollm2-h100-mixed"] = 1
        return original_route(*args, **kwargs)

    api._route = always_interfere
    with pytest.raises(ScalingError, match="kept changing under us: 3 writes got 409 Conflict"):
        await act.scale(MIXED, 7)
    assert api.conflicts == 3
    await act.close()


async def test_a_missing_deployment_says_which_labels_it_looked_for(actuator):
    group = WorkerGroup(name="llama", model="llama3-8b", replicas=1)
    with pytest.raises(
        ScalingError,
        match=r"no Deployment in namespace tessera is labelled .*"
        r"tessera.ai/model=llama3-8b,tessera.ai/role=mixed",
    ):
        await actuator.scale(group, 1)


async def test_a_deployment_deleted_after_listing_gives_the_apis_not_found(api, actuator):
    api.vanish_after_list.add("worker-smollm2-h100-mixed")
    with pytest.raises(ScalingError, match='deployments.apps "worker-smollm2-h100-mixed" not found'):
        await actuator.scale(MIXED, 2)


async def test_ambiguous_groups_ask_for_an_accelerator(api, actuator):
    decode = WorkerGroup(name="decode", model="smollm2", role="decode", replicas=1)
    with pytest.raises(ScalingError, match="worker-smollm2-h100-decode, worker-smollm2-mi300x-decode"):
        await actuator.replicas(decode)
    amd = WorkerGroup(name="decode-amd", model="smollm2", role="decode", accelerator="mi300x", replicas=1)
    await actuator.scale(amd, 1)
    assert api.replicas("worker-smollm2-mi300x-decode") == 1


async def test_a_forbidden_write_names_the_missing_permission(api, actuator):
    api.forbidden.add(("update", "deployments/scale"))
    with pytest.raises(ScalingError, match=r'cannot update resource "deployments/scale".*autoscaler-rbac.yaml'):
        await actuator.scale(MIXED, 2)
    assert api.replicas("worker-smollm2-h100-mixed") == 1


async def test_an_unreachable_api_says_where_it_tried(api):
    cfg = client.Configuration(host="http://127.0.0.1:9")
    cfg.retries = 0
    act = KubernetesActuator(client.ApiClient(cfg), NS)
    with pytest.raises(ScalingError, match=r"cannot reach the Kubernetes API at http://127.0.0.1:9"):
        await act.replicas(MIXED)
    await act.close()


async def test_from_environment_uses_the_kubeconfigs_namespace(api, tmp_path, monkeypatch):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    kubeconfig = write_kubeconfig(tmp_path / "config", api.host, "other")
    act = KubernetesActuator.from_environment(kubeconfig=kubeconfig)
    assert act.namespace == "other"
    await act.scale(MIXED, 2)
    assert api.replicas("worker-smollm2-h100-mixed", namespace="other") == 2
    assert api.replicas("worker-smollm2-h100-mixed") == 1
    await act.close()
