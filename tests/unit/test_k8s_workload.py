"""The Deployment the Kubernetes actuator writes for a group, as plain data (no API server)."""

from __future__ import annotations

import re

import pytest

from services.autoscaler import k8s_workload as wl
from services.autoscaler.desired import WorkerGroup

DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def template(vendor: str, accelerator: str | None = None, resource: str | None = "nvidia.com/gpu") -> dict:
    labels = {"app.kubernetes.io/component": "worker-template", "tessera.ai/vendor": vendor}
    if accelerator:
        labels["tessera.ai/accelerator"] = accelerator
    annotations = {"tessera.ai/accelerator-node-label": "tessera.ai/accelerator"}
    if resource:
        annotations["tessera.ai/device-resource"] = resource
    return {
        "metadata": {"name": f"tessera-worker-{accelerator or vendor}", "labels": labels, "annotations": annotations},
        "template": {
            "metadata": {"labels": {"app.kubernetes.io/component": "worker"}},
            "spec": {
                "containers": [
                    {"name": "worker", "image": "w", "args": ["worker"], "resources": {"requests": {"cpu": 8}}}
                ]
            },
        },
    }


def group(**kw) -> WorkerGroup:
    return WorkerGroup(**{"name": "g", "model": "meta-llama/Llama-3.1-8B-Instruct", "accelerator": "h100-sxm", **kw})


def test_names_are_dns_labels_that_fit_a_pod_name_and_stay_put_for_a_shape():
    long = group(name="x" * 30 + "-" + "y" * 70)
    for g in (group(), long, group(name="a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q-r-s-t-u-v-w-x-y-z")):
        name = wl.deployment_name(g)
        assert DNS1123_LABEL.match(name) and len(name) <= wl.NAME_MAX, name
        assert wl.deployment_name(WorkerGroup(**g.__dict__)) == name
        assert wl.deployment_name(WorkerGroup(**{**g.__dict__, "replicas": 7})) == name  # a count is not a shape
    assert wl.deployment_name(group(engine_args={"tensor_parallel_size": 2})) != wl.deployment_name(group())
    assert wl.deployment_name(group(role="decode")) != wl.deployment_name(group())


def test_tp_devices_node_selector_and_the_model_annotation():
    d = wl.render(group(engine_args={"tensor_parallel_size": 4}, replicas=3), template("nvidia"), "ns")
    pod = d["spec"]["template"]
    container = pod["spec"]["containers"][0]
    assert container["resources"] == {"requests": {"cpu": "8"}, "limits": {"nvidia.com/gpu": "4"}}
    assert pod["spec"]["nodeSelector"] == {"tessera.ai/accelerator": "h100-sxm"}
    assert pod["metadata"]["annotations"]["tessera.ai/model"] == "meta-llama/Llama-3.1-8B-Instruct"
    assert pod["metadata"]["labels"]["tessera.ai/model"] == "meta-llama-llama-3.1-8b-instruct"
    assert pod["metadata"]["labels"]["tessera.ai/tp"] == "4"
    assert d["spec"]["replicas"] == 3 and d["metadata"]["namespace"] == "ns"
    assert container["args"][:1] == ["worker"] and "--tensor-parallel-size" in container["args"]


def test_a_vendor_wide_group_gets_no_part_selector_and_cpus_no_device():
    d = wl.render(group(accelerator="nvidia"), template("nvidia"), "ns")
    assert "nodeSelector" not in d["spec"]["template"]["spec"]
    cpu = wl.render(group(accelerator="cpu"), template("cpu", resource=None), "ns")
    assert "limits" not in cpu["spec"]["template"]["spec"]["containers"][0]["resources"]


def test_a_parts_own_template_wins_over_its_vendors():
    vendor, part = (
        template("tenstorrent", resource="tenstorrent.com/n300"),
        template("tenstorrent", "blackhole-p150", "tenstorrent.com/blackhole"),
    )
    assert wl.pick_template([vendor, part], group(accelerator="blackhole-p150")) is part
    assert wl.pick_template([vendor, part], group(accelerator="wormhole-n300")) is vendor
    with pytest.raises(wl.TemplateError, match="tessera.ai/vendor=amd"):
        wl.pick_template([vendor, part], group(accelerator="mi300x"))
    with pytest.raises(wl.TemplateError, match="name its accelerator"):
        wl.pick_template([vendor], group(accelerator="auto"))


def test_the_spec_hash_ignores_the_count_and_sees_everything_else():
    t = template("nvidia")
    base = wl.render(group(replicas=1), t, "ns")
    assert (
        wl.render(group(replicas=5), t, "ns")["metadata"]["annotations"][wl.SPEC_HASH]
        == base["metadata"]["annotations"][wl.SPEC_HASH]
    )
    t["template"]["spec"]["containers"][0]["image"] = "w:2"
    assert (
        wl.render(group(), t, "ns")["metadata"]["annotations"][wl.SPEC_HASH]
        != base["metadata"]["annotations"][wl.SPEC_HASH]
    )


def test_scale_down_takes_marked_then_unready_then_newest_pods():
    pods = [
        wl.PodView("old", "10.0.0.1", True, "2025-01-01T00:00:00Z"),
        wl.PodView("new", "10.0.0.2", True, "2025-01-01T00:05:00Z"),
        wl.PodView("unready", "10.0.0.3", False, "2025-01-01T00:01:00Z"),
        wl.PodView("drained", "10.0.0.4", True, "2025-01-01T00:00:30Z", deletion_cost=-1000),
    ]
    assert [p.name for p in wl.pods_to_remove(pods, 3)] == ["drained", "unready", "new"]
    assert wl.pods_to_remove(pods, 0) == []
