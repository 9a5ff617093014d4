"""The planner's fleet, placed on Kubernetes by the actuator, against the documented API behaviour.

The API server is tests/support/fake_kube_api.py (an HTTP server; there is no kube-apiserver
here) driven by the official client, holding the repository's worker PodTemplates
(deploy/k8s/worker, rendered by ``kubectl kustomize``). Pods the fake's ReplicaSet stand-in
creates have their own loopback addresses, where small gRPC servers answer Drain, so a test can
see a pod drained before it went. What is asserted is what an operator sees: which Deployments
exist, with which devices, selectors and arguments, and which pods go on a scale-down.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

pytest.importorskip("kubernetes", reason="the kubernetes client is a dev dependency: pip install -e '.[dev]'")

from kubernetes import client

from services.autoscaler import k8s_workload as wl
from services.autoscaler.actuator import Actuator, ScalingError
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.k8s_actuator import KubernetesActuator
from services.autoscaler.model_autoscaler import groups_for
from tessera.planning.fleet import InstanceType
from tessera.planning.slo_policy import parse_slo_policy
from tests.support.fake_drain_workers import FakeDrainWorkers
from tests.support.fake_kube_api import FakeKubeApi, write_kubeconfig
from tests.support.paths import REPO

NS = "tessera"
HUB_ID = "meta-llama/Llama-3.1-8B-Instruct"
KUBECTL = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
POLICY = parse_slo_policy(f"""
model: llama3-8b
targets: {{ttft: {{percentile: 90, ms: 500}}, tpot: {{percentile: 90, ms: 50}}}}
inventory: {{h100: {{free: 16}}, mi300x: {{free: 8}}}}
roles: [mixed, prefill, decode]
tp: [1, 2]
deployment: {{worker_model: {HUB_ID}, engine_args: {{max_model_len: 8192}}}}
""")
PREFILL = InstanceType("h100-sxm", 2, "prefill")
DECODE = InstanceType("mi300x", 1, "decode")
MIXED = InstanceType("h100-sxm", 1, "mixed")


def worker_templates() -> list[dict]:
    if KUBECTL is None:
        pytest.skip("kubectl not installed (pip install -e '.[dev]')")
    out = subprocess.run(
        [KUBECTL, "kustomize", str(REPO / "deploy/k8s/worker")], capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture
async def cluster():
    api = FakeKubeApi()
    workers = FakeDrainWorkers(api.events)
    port = await workers.start()
    for template in worker_templates():
        for c in template["template"]["spec"]["containers"]:
            for p in c["ports"]:  # the pods' Drain port is where the fake workers listen
                if p["name"] == "grpc":
                    p["containerPort"] = port
        api.add_podtemplate(template)
    api.add("router", {"app.kubernetes.io/component": "router"}, replicas=2)  # not ours: never touched
    host = api.start()
    act = KubernetesActuator(client.ApiClient(client.Configuration(host=host)), NS, drain_timeout_s=10)
    yield api, act, workers
    await act.close()
    api.stop()
    await workers.stop()


def plan(counts: dict[InstanceType, int]) -> list[WorkerGroup]:
    """What the SLO planner hands the controller for these counts."""
    return groups_for(POLICY, counts)


def ours(api: FakeKubeApi) -> dict[str, dict]:
    return {
        name: d
        for (ns, name), d in api.deployments.items()
        if ns == NS and d["metadata"]["labels"].get(wl.MANAGED_BY) == wl.MANAGER
    }


def by_group(api: FakeKubeApi) -> dict[str, dict]:
    return {d["metadata"]["annotations"][wl.GROUP_ANNOTATION]: d for d in ours(api).values()}


def worker(d: dict) -> dict:
    return next(c for c in d["spec"]["template"]["spec"]["containers"] if c["name"] == "worker")


def writes(api: FakeKubeApi) -> list[tuple[str, str, str]]:
    return [s for s in api.seen if s[0] in ("POST", "PUT", "PATCH", "DELETE")]


async def test_it_is_an_actuator(cluster):
    _, act, _ = cluster
    assert isinstance(act, Actuator)


async def test_a_heterogeneous_plan_becomes_exactly_those_deployments(cluster):
    api, act, _ = cluster
    groups = plan({PREFILL: 1, DECODE: 2, MIXED: 1})
    done = await act.converge(groups)
    assert done.replicas == {g.name: g.replicas for g in groups}
    assert sorted(a.kind for a in done.actions) == ["start"] * 3

    found = by_group(api)
    assert set(found) == {g.name for g in groups}
    assert api.replicas("router") == 2 and len(ours(api)) == 3
    expected = {
        PREFILL: ("nvidia.com/gpu", "2", "nvidia"),
        DECODE: ("amd.com/gpu", "1", "amd"),
        MIXED: ("nvidia.com/gpu", "1", "nvidia"),
    }
    for itype, (resource, count, vendor) in expected.items():
        group = next(g for g in groups if g.role == itype.role and g.accelerator == itype.accelerator)
        d = found[group.name]
        name = d["metadata"]["name"]
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", name) and len(name) <= 47, name
        pod = d["spec"]["template"]
        container = worker(d)
        assert container["resources"]["limits"][resource] == count  # TP devices from the vendor's plugin
        assert set(container["resources"]["limits"]) == {resource}
        assert pod["spec"]["nodeSelector"]["tessera.ai/accelerator"] == itype.accelerator
        assert any(t["key"] == resource for t in pod["spec"]["tolerations"])
        # the hub id rides in an annotation the pod reads; labels carry its hash
        assert pod["metadata"]["annotations"][wl.MODEL_ANNOTATION] == HUB_ID
        assert pod["metadata"]["labels"][wl.MODEL_HASH] == wl.model_hash(HUB_ID)
        assert pod["metadata"]["labels"]["tessera.ai/vendor"] == vendor
        # the selector picks this shape's pods and nothing else
        selector = d["spec"]["selector"]["matchLabels"]
        assert all(pod["metadata"]["labels"][k] == v for k, v in selector.items())
        assert {x["metadata"]["labels"][wl.SHAPE] for x in found.values()} >= {selector[wl.SHAPE]}
        args = " ".join(container["args"])
        assert f"--role {itype.role}" in args and "--model=$(TESSERA_MODEL)" in args
        assert "--max-model-len 8192" in args  # a worker flag: the simulated engine reads it too
        assert ("--tensor-parallel-size 2" in args) == (itype.tp == 2)
        assert len(api.pods_of(name)) == group.replicas
    assert len({d["spec"]["selector"]["matchLabels"][wl.SHAPE] for d in found.values()}) == 3


async def test_the_same_plan_again_writes_nothing_and_names_are_stable(cluster):
    api, act, _ = cluster
    groups = plan({PREFILL: 1, DECODE: 2})
    await act.converge(groups)
    names = set(ours(api))
    before = len(writes(api))
    assert (await act.converge(plan({PREFILL: 1, DECODE: 2}))).actions == []
    assert len(writes(api)) == before and set(ours(api)) == names
    assert names == {wl.deployment_name(g) for g in groups}


async def test_a_new_plan_scales_with_drains_and_deletes_what_it_no_longer_has(cluster):
    api, act, workers = cluster
    await act.converge(plan({PREFILL: 1, DECODE: 3, MIXED: 1}))
    start = by_group(api)
    decode_name = next(
        d["metadata"]["name"] for d in start.values() if d["metadata"]["labels"]["tessera.ai/role"] == "decode"
    )
    prefill_name = next(
        d["metadata"]["name"] for d in start.values() if d["metadata"]["labels"]["tessera.ai/role"] == "prefill"
    )
    decode_pods = api.pods_of(decode_name)
    newest = max(decode_pods, key=lambda p: p["_seq"])
    prefill_pod = api.pods_of(prefill_name)[0]

    done = await act.converge(plan({DECODE: 2, MIXED: 2}))

    after = by_group(api)
    assert prefill_name not in ours(api)  # no longer planned: deleted
    assert {d["metadata"]["name"] for d in after.values()} == {decode_name} | {
        d["metadata"]["name"] for d in start.values() if d["metadata"]["labels"]["tessera.ai/role"] == "mixed"
    }
    assert api.replicas(decode_name) == 2
    assert {p["metadata"]["name"] for p in api.pods_of(decode_name)} == {
        p["metadata"]["name"] for p in decode_pods if p is not newest
    }  # the newest decode pod went, as the local actuator chooses
    assert sum(len(api.pods_of(n)) for n in ours(api)) == 4
    # each pod that went was drained (Drain answered 0 in flight) before it was terminated
    for pod in (newest, prefill_pod):
        ip = pod["status"]["podIP"]
        drained = next(t for t, e, _, at in api.events if e == "drained" and at == ip)
        gone = next(t for t, e, name, _ in api.events if e == "terminated" and name == pod["metadata"]["name"])
        assert drained < gone, pod["metadata"]["name"]
    assert workers.drained() == {newest["status"]["podIP"], prefill_pod["status"]["podIP"]}
    assert sorted((a.kind, a.reason) for a in done.actions) == [
        ("scale", "1 -> 2 replicas"),
        ("scale", "3 -> 2 replicas"),
        ("stop", "no longer planned"),
    ]


async def test_new_engine_arguments_are_a_new_shape_and_a_template_edit_is_a_rolling_update(cluster):
    api, act, _ = cluster
    (group,) = plan({MIXED: 1})
    await act.converge([group])
    (old,) = ours(api)
    changed = WorkerGroup(**{**group.__dict__, "engine_args": {**group.engine_args, "max_num_batched_tokens": 4096}})
    api.pods_ready = False  # the new shape's engine takes a while to load
    await act.converge([changed])
    new = wl.deployment_name(changed)
    assert set(ours(api)) == {old, new}  # make before break: the old pods serve until the new ones do
    await act.converge([changed])
    assert set(ours(api)) == {old, new}
    api.make_ready()
    api.pods_ready = True
    done = await act.converge([changed])
    assert set(ours(api)) == {new} and [(a.kind, a.instance) for a in done.actions] == [("stop", old)]

    template = api.podtemplates[(NS, "tessera-worker-nvidia")]
    template["template"]["spec"]["containers"][0]["image"] = "registry.example/tessera:gpu-2"
    pods_before = {p["metadata"]["name"] for p in api.pods_of(new)}
    done = await act.converge([changed])
    assert [(a.kind, a.instance) for a in done.actions] == [("restart", new)]
    assert worker(api.deployment(new))["image"] == "registry.example/tessera:gpu-2"
    assert {p["metadata"]["name"] for p in api.pods_of(new)}.isdisjoint(pods_before)
    assert ("PUT", "update", "deployments") in api.seen


async def test_a_reshape_that_cannot_start_beside_the_old_pods_replaces_them_after_the_grace(cluster):
    api, act, _ = cluster
    (group,) = plan({MIXED: 1})
    await act.converge([group])
    (old,) = ours(api)
    changed = WorkerGroup(**{**group.__dict__, "engine_args": {"max_model_len": 4096}})
    api.pods_ready = False  # the new pods wait for devices the old ones hold
    await act.converge([changed])
    await act.converge([changed])
    new = wl.deployment_name(changed)
    assert set(ours(api)) == {old, new}
    created = time.time() - act.reshape_grace_s - 60  # ... for longer than the grace
    api.deployment(new)["metadata"]["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
    done = await act.converge([changed])
    assert set(ours(api)) == {new} and [(a.kind, a.instance) for a in done.actions] == [("stop", old)]


async def test_a_concurrent_scale_is_retried_with_a_fresh_resource_version_and_ours_wins(cluster):
    api, act, _ = cluster
    (group,) = plan({MIXED: 1})
    await act.converge([group])
    (name,) = ours(api)
    api.interfere[name] = 1  # someone scales it between our read and our write
    await act.converge(plan({MIXED: 4}))
    assert api.conflicts == 1 and api.replicas(name) == 4


async def test_a_forbidden_create_names_the_missing_permission_and_other_groups_proceed(cluster):
    api, act, _ = cluster
    await act.converge(plan({MIXED: 1}))
    api.forbidden.add(("create", "deployments"))
    with pytest.raises(ScalingError, match=r'cannot create resource "deployments".*autoscaler-rbac.yaml'):
        await act.converge(plan({MIXED: 2, DECODE: 1}))
    assert [d["spec"]["replicas"] for d in ours(api).values()] == [2]


async def test_a_group_without_a_template_says_which_to_add_and_keeps_what_runs(cluster):
    api, act, _ = cluster
    tt = WorkerGroup(
        name="tt", model="tiny", accelerator="wormhole-n300", replicas=1, engine_args={"tensor_parallel_size": 2}
    )
    await act.converge([tt])
    (name,) = ours(api)
    assert worker(api.deployment(name))["resources"]["limits"] == {"tenstorrent.com/n300": "2"}
    del api.podtemplates[(NS, "tessera-worker-tenstorrent")]
    with pytest.raises(ScalingError, match=r"tessera.ai/vendor=tenstorrent.*apply deploy/k8s/worker"):
        await act.converge([WorkerGroup(**{**tt.__dict__, "replicas": 2})])
    assert list(ours(api)) == [name] and api.replicas(name) == 1


async def test_blackhole_cards_get_their_own_resource(cluster):
    api, act, _ = cluster
    bh = WorkerGroup(name="bh", model="tiny", accelerator="blackhole-p150", replicas=1)
    await act.converge([bh])
    (name,) = ours(api)
    assert worker(api.deployment(name))["resources"]["limits"] == {"tenstorrent.com/blackhole": "1"}


async def test_an_unreachable_api_says_where_it_tried():
    cfg = client.Configuration(host="http://127.0.0.1:9")
    cfg.retries = 0
    act = KubernetesActuator(client.ApiClient(cfg), NS)
    with pytest.raises(ScalingError, match=r"cannot reach the Kubernetes API at http://127.0.0.1:9"):
        await act.converge(plan({MIXED: 1}))
    await act.close()


async def test_from_environment_uses_the_kubeconfigs_namespace(cluster, tmp_path, monkeypatch):
    api, _, _ = cluster
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    for t in list(api.podtemplates.values()):
        api.add_podtemplate(t, namespace="other")
    host = f"http://127.0.0.1:{api._server.server_address[1]}"
    act = KubernetesActuator.from_environment(kubeconfig=write_kubeconfig(tmp_path / "config", host, "other"))
    assert act.namespace == "other"
    await act.converge(plan({MIXED: 2}))
    assert [d["spec"]["replicas"] for (ns, _), d in api.deployments.items() if ns == "other"] == [2]
    assert ours(api) == {}
    await act.close()


async def test_the_fake_api_refuses_what_the_real_one_would(cluster):
    """The checks above mean something: an unknown field, a bad name or a selector that misses are 422."""
    api, act, _ = cluster
    (group,) = plan({MIXED: 1})
    body = wl.render(group, api.podtemplates[(NS, "tessera-worker-nvidia")], NS)
    pytest.importorskip("kubernetes_validate")
    bad = {**body, "spec": {**body["spec"], "replicas": 1, "replica": 2}}
    assert "replica" in api._invalid(NS, bad)
    assert "RFC 1123" in api._invalid(NS, {**body, "metadata": {**body["metadata"], "name": "Llama/8B"}})
    wrong = {**body, "spec": {**body["spec"], "selector": {"matchLabels": {"tessera.ai/shape": "other"}}}}
    assert "does not match" in api._invalid(NS, wrong)
    assert api._invalid(NS, body) == ""
