"""What the Kubernetes actuator writes for a worker group: a Deployment stamped from a PodTemplate.

Pure: plain dicts in (the group, the cluster's worker PodTemplates), plain dicts out (the
Deployment), no API calls; the actuator (:mod:`services.autoscaler.k8s_actuator`) does the I/O.

One Deployment runs one planned shape: (group, model, accelerator, TP, role, engine, engine
arguments). Its name is the group name cut to fit plus a hash of the shape, so the same shape
always gets the same name (a restarted autoscaler finds its Deployments again) and a new shape
(the planner changed the prefill chunk, say) gets a new Deployment beside the old one.

The pod comes from the PodTemplate of the group's accelerator (labelled
``tessera.ai/accelerator``) or, failing that, of its vendor (``tessera.ai/vendor``); see
deploy/k8s/worker/. The template says, in annotations, what only it can know:

- ``tessera.ai/device-resource``: the extended resource its device plugin advertises
  (``nvidia.com/gpu``, ``amd.com/gpu``, ``tenstorrent.com/n300``); the pod's limit is the TP degree;
- ``tessera.ai/accelerator-node-label``: the node label whose value must be the catalog part
  (``tessera.ai/accelerator: h100-sxm``), so an H100 plan never lands on an A100 node.

The model id goes in an annotation (``meta-llama/Llama-3.1-8B-Instruct`` has a ``/``, which no
label value may hold); labels carry a hash of it for selection, and a readable, lossy form.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from services.autoscaler import worker_labels
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.worker_command import shape_flags, tensor_parallel
from tessera.engine_model.catalog import accelerators

MANAGED_BY = "app.kubernetes.io/managed-by"
MANAGER = "tessera-autoscaler"
TEMPLATE_COMPONENT = "worker-template"
SHAPE = "tessera.ai/shape"
GROUP = "tessera.ai/group"
MODEL_HASH = "tessera.ai/model-hash"
TP = "tessera.ai/tp"
SPEC_HASH = "tessera.ai/spec-hash"
MODEL_ANNOTATION = "tessera.ai/model"
GROUP_ANNOTATION = "tessera.ai/group"
DEVICE_RESOURCE = "tessera.ai/device-resource"
NODE_LABEL = "tessera.ai/accelerator-node-label"
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
WORKER_CONTAINER = "worker"
# Pod names are the Deployment's, a ReplicaSet hash (10) and a suffix (5), with dashes: 47 keeps
# them within a 63-character DNS label, which is also the pod's hostname.
NAME_MAX = 47


class TemplateError(ValueError):
    """No usable PodTemplate for a group; the message says which to add."""


def short_hash(data: object, n: int = 10) -> str:
    """A stable hex digest of ``data`` (canonical JSON): same input, same hash, on any host."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:n]


def model_hash(model: str) -> str:
    """The label that stands for a model id (which may not fit a label value)."""
    return short_hash(model, 16)


def shape(group: WorkerGroup) -> dict[str, Any]:
    """What makes two groups' pods interchangeable: everything but the replica count."""
    return {
        "group": group.name,
        "model": group.model,
        "accelerator": group.accelerator,
        "role": group.role,
        "engine": group.engine,
        "engine_args": group.engine_args,
    }


def deployment_name(group: WorkerGroup) -> str:
    """A DNS-1123 label, stable for the group's shape: ``<group, cut to fit>-<shape hash>``."""
    digest = short_hash(shape(group), 8)
    stem = group.name[: NAME_MAX - len(digest) - 1].rstrip("-")
    return f"{stem}-{digest}"


def vendor_of(group: WorkerGroup) -> str:
    """The vendor whose template runs ``group``: its accelerator's catalog vendor, or the vendor it names."""
    if group.accelerator in worker_labels.VENDORS:
        return group.accelerator
    if group.accelerator == "auto":
        raise TemplateError(f"group {group.name}: name its accelerator (a catalog part or a vendor) to run it here")
    try:
        return accelerators.find(group.accelerator).vendor
    except ValueError as exc:
        raise TemplateError(f"group {group.name}: {exc}") from None


def pick_template(templates: Sequence[Mapping[str, Any]], group: WorkerGroup) -> Mapping[str, Any]:
    """The PodTemplate for ``group``: one labelled with its accelerator, else one labelled with its vendor."""
    vendor = vendor_of(group)

    def labelled(key: str, value: str) -> list[Mapping[str, Any]]:
        return [t for t in templates if (t.get("metadata", {}).get("labels") or {}).get(key) == value]

    accel = worker_labels.label_value(group.accelerator)
    found = labelled(worker_labels.ACCELERATOR, accel) or [
        t
        for t in labelled(worker_labels.VENDOR, vendor)
        if worker_labels.ACCELERATOR not in (t["metadata"].get("labels") or {})
    ]
    if len(found) != 1:
        names = ", ".join(sorted(t["metadata"]["name"] for t in found)) or "none"
        raise TemplateError(
            f"group {group.name}: need exactly one worker PodTemplate labelled "
            f"{worker_labels.ACCELERATOR}={accel} or {worker_labels.VENDOR}={vendor} "
            f"(found: {names}); apply deploy/k8s/worker"
        )
    return found[0]


def labels_for(group: WorkerGroup, vendor: str) -> dict[str, str]:
    """The labels of a group's Deployment and pods (selection, dashboards, the InferencePool)."""
    return {
        "app.kubernetes.io/name": "tessera-worker",
        "app.kubernetes.io/part-of": "tessera",
        worker_labels.COMPONENT: worker_labels.WORKER,
        MANAGED_BY: MANAGER,
        SHAPE: short_hash(shape(group)),
        GROUP: worker_labels.label_value(group.name),
        worker_labels.MODEL: worker_labels.label_value(group.model),
        MODEL_HASH: model_hash(group.model),
        worker_labels.ROLE: group.role,
        worker_labels.ACCELERATOR: worker_labels.label_value(group.accelerator),
        worker_labels.VENDOR: vendor,
        TP: str(tensor_parallel(group)),
    }


def render(group: WorkerGroup, template: Mapping[str, Any], namespace: str) -> dict[str, Any]:
    """The Deployment that runs ``group`` (at ``group.replicas``) from ``template`` (a PodTemplate)."""
    vendor = vendor_of(group)
    meta = template.get("metadata") or {}
    knobs = meta.get("annotations") or {}
    pod = copy.deepcopy(dict(template.get("template") or {}))
    spec = pod.setdefault("spec", {})
    containers = spec.get("containers") or []
    worker = next((c for c in containers if c.get("name") == WORKER_CONTAINER), None)
    if worker is None:
        raise TemplateError(f"PodTemplate {meta.get('name')}: no container named {WORKER_CONTAINER!r}")
    tp = tensor_parallel(group)

    worker["args"] = [*(worker.get("args") or []), *shape_flags(group)]
    resources = worker.setdefault("resources", {})
    device = knobs.get(DEVICE_RESOURCE)
    if device:
        resources.setdefault("limits", {})[device] = tp
        if device in (resources.get("requests") or {}):
            resources["requests"][device] = tp
    for kind in ("requests", "limits"):  # quantities are strings in the API's types
        if kind in resources:
            resources[kind] = {k: str(v) for k, v in resources[kind].items()}
    node_label = knobs.get(NODE_LABEL)
    if node_label and group.accelerator not in worker_labels.VENDORS:  # "nvidia": any part will do
        spec.setdefault("nodeSelector", {})[node_label] = worker_labels.label_value(group.accelerator)

    labels = labels_for(group, vendor)
    annotations = {MODEL_ANNOTATION: group.model, GROUP_ANNOTATION: group.name}
    pod_meta = pod.setdefault("metadata", {})
    pod_meta["labels"] = {**(pod_meta.get("labels") or {}), **labels}
    pod_meta["annotations"] = {**(pod_meta.get("annotations") or {}), **annotations}
    deployment: dict[str, Any] = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {
            "name": deployment_name(group),
            "namespace": namespace,
            "labels": labels,
            "annotations": dict(annotations),
        },
        "spec": {
            "replicas": group.replicas,
            "selector": {"matchLabels": {worker_labels.COMPONENT: worker_labels.WORKER, SHAPE: labels[SHAPE]}},
            # One pod at a time, never below the planned count: a replacement is ready before its
            # predecessor drains. (New shapes get new Deployments; rollouts only follow template edits.)
            "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}},
            "revisionHistoryLimit": 2,
            "template": pod,
        },
    }
    deployment["metadata"]["annotations"][SPEC_HASH] = spec_hash(deployment)
    return deployment


def spec_hash(deployment: Mapping[str, Any]) -> str:
    """What the Deployment says apart from its replica count and this hash: changed, it is rewritten."""
    body = copy.deepcopy(dict(deployment))
    body["spec"] = {k: v for k, v in body["spec"].items() if k != "replicas"}
    body["metadata"] = {
        **body["metadata"],
        "annotations": {k: v for k, v in (body["metadata"].get("annotations") or {}).items() if k != SPEC_HASH},
    }
    return short_hash(body, 16)


@dataclass(frozen=True)
class PodView:
    """What choosing pods to remove needs of one pod."""

    name: str
    ip: str
    ready: bool
    created: str  # RFC 3339, as the API gives it: sorts in time order
    deletion_cost: int = 0


def pods_to_remove(pods: Sequence[PodView], n: int) -> list[PodView]:
    """The ``n`` pods a scale-down takes: already marked ones, then not-ready ones, then the newest.

    The same order as the local actuator (unready and newest first: the least proven go), and a
    pod already drained for an earlier, failed scale-down goes before any that still serves.
    """
    if n <= 0:
        return []
    newest_first = sorted(pods, key=lambda p: p.created, reverse=True)
    ranked = sorted(newest_first, key=lambda p: (p.deletion_cost, p.ready))
    return ranked[:n]


def worker_grpc_port(pod_spec: Mapping[str, Any], default: int = 50051) -> int:
    """The worker container's port named ``grpc``: where its Drain RPC answers."""
    for container in pod_spec.get("containers") or []:
        if container.get("name") == WORKER_CONTAINER:
            for port in container.get("ports") or []:
                if port.get("name") == "grpc":
                    return int(port["containerPort"])
    return default
