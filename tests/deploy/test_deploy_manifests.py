"""The deployment files: the compose files validate, the Kubernetes overlays render and validate
against the API schemas, and they agree with the actuators that scale them.

Tools: ``docker-compose`` 1.29 (``make setup`` puts it in ``.venv/compose``: it pins PyYAML<6, so it
cannot share the project's venv), ``kubectl`` for ``kubectl kustomize`` and ``kubernetes-validate``
(both from the dev extra). A test skips, saying why, only where its tool is missing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from services.autoscaler import worker_labels
from services.autoscaler.compose_actuator import worker_services
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.drain import DEFAULT_TIMEOUT_S
from tests.support.paths import REPO

ROOT = REPO
COMPOSE_DIR = ROOT / "deploy/compose"
COMPOSE_SETS = [
    ["docker-compose.yaml"],
    ["docker-compose.yaml", "docker-compose.nvidia.yaml"],
    ["docker-compose.yaml", "docker-compose.amd.yaml"],
]
OVERLAYS = ["cpu", "nvidia", "amd"]
# The oldest Kubernetes these manifests claim to run on, and the newest the validator knows.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
WORKER_DRAIN_ON_SIGTERM_S = 30  # services/worker/main.py DRAIN_TIMEOUT_S
GPU_RESOURCE = {"nvidia": "nvidia.com/gpu", "amd": "amd.com/gpu"}


def _tool(name: str, *candidates: Path) -> str | None:
    for path in candidates:
        if path.is_file() and os.access(path, os.X_OK):
            return str(path)
    return shutil.which(name)


VENV_BIN = Path(sys.executable).parent
DOCKER_COMPOSE = os.environ.get("TESSERA_DOCKER_COMPOSE") or _tool(
    "docker-compose", VENV_BIN.parent / "compose/bin/docker-compose", ROOT / ".venv/compose/bin/docker-compose"
)
KUBECTL = _tool("kubectl", VENV_BIN / "kubectl")

needs_compose = pytest.mark.skipif(
    DOCKER_COMPOSE is None, reason="docker-compose 1.29 not installed (make setup installs it into .venv/compose)"
)
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl not installed (pip install -e '.[dev]')")


# --- docker compose -------------------------------------------------------


def compose(files: list[str], *args: str) -> subprocess.CompletedProcess:
    argv = [DOCKER_COMPOSE]
    for f in files:
        argv += ["-f", f]
    return subprocess.run([*argv, *args], cwd=COMPOSE_DIR, capture_output=True, text=True, timeout=60)


@needs_compose
@pytest.mark.parametrize("files", COMPOSE_SETS, ids=lambda fs: "+".join(fs))
def test_compose_files_validate_with_docker_compose_config(files):
    result = compose(files, "config")
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert {"etcd", "scheduler", "router", "autoscaler"} <= set(services)
    workers = {n: s for n, s in services.items() if (s.get("labels") or {}).get(worker_labels.COMPONENT) == "worker"}
    assert workers, "no worker services"
    for name, service in workers.items():
        labels = service["labels"]
        assert {worker_labels.MODEL, worker_labels.ROLE, worker_labels.ACCELERATOR, worker_labels.VENDOR} <= set(labels)
        # compose's stop timeout must cover the worker's own drain on SIGTERM
        assert _seconds(service["stop_grace_period"]) > WORKER_DRAIN_ON_SIGTERM_S, name
        assert f"--group {name.removeprefix('worker-')}" in " ".join(service["command"]), name


@needs_compose
def test_docker_compose_1_29_rejects_newer_spec_keys(tmp_path):
    """The check above is strict: the same tool refuses a top-level ``name:`` (compose v2 only)."""
    (tmp_path / "c.yaml").write_text("name: x\nservices:\n  a:\n    image: busybox\n")
    assert compose([str(tmp_path / "c.yaml")], "config").returncode != 0


def test_the_compose_autoscaler_is_the_compose_actuator_on_this_file():
    spec = yaml.safe_load((COMPOSE_DIR / "docker-compose.yaml").read_text())["services"]["autoscaler"]
    command = " ".join(spec["command"])
    assert "--actuator=compose" in command and "--compose-file=/deploy/compose/docker-compose.yaml" in command
    assert "/var/run/docker.sock:/var/run/docker.sock" in spec["volumes"]
    assert set(worker_services([str(COMPOSE_DIR / "docker-compose.yaml")])) == {
        "worker-smollm2-cpu-mixed",
        "worker-smollm2-cpu-prefill",
        "worker-smollm2-cpu-decode",
    }


def _seconds(text: str) -> float:
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


# --- Kubernetes -----------------------------------------------------------

_rendered: dict[str, list[dict]] = {}


def render(overlay: str) -> list[dict]:
    if overlay not in _rendered:
        result = subprocess.run(
            [KUBECTL, "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        _rendered[overlay] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return _rendered[overlay]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def workers(docs: list[dict]) -> list[dict]:
    return [
        d
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["labels"].get(worker_labels.COMPONENT) == worker_labels.WORKER
    ]


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_the_kubernetes_api_schemas(overlay):
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
    docs = render(overlay)
    kinds = {d["kind"] for d in docs}
    assert {
        "Namespace",
        "StatefulSet",
        "Service",
        "Deployment",
        "ServiceAccount",
        "Role",
        "RoleBinding",
        "ConfigMap",
    } <= kinds
    for version in K8S_VERSIONS:
        for doc in docs:
            kubernetes_validate.validate(doc, version, strict=True)


def test_the_schema_check_would_catch_a_broken_object():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
    broken = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "x"},
        "spec": {"replicas": "two", "selector": {}, "template": {"spec": {"containers": []}}},
    }
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSIONS[0], strict=True)


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_worker_deployments_carry_the_labels_drain_and_probe(overlay):
    found = workers(render(overlay))
    assert {d["metadata"]["labels"][worker_labels.ROLE] for d in found} == {"mixed", "prefill", "decode"}
    for d in found:
        name, labels = d["metadata"]["name"], d["metadata"]["labels"]
        for key in (worker_labels.MODEL, worker_labels.ROLE, worker_labels.ACCELERATOR, worker_labels.VENDOR):
            assert labels.get(key), f"{name} lacks {key}"
            assert d["spec"]["selector"]["matchLabels"][key] == labels[key]  # one Deployment per label set
        assert labels[worker_labels.VENDOR] == overlay
        assert "replicas" not in d["spec"], f"{name}: re-applying would reset what the autoscaler set"
        pod = d["spec"]["template"]
        container = pod["spec"]["containers"][0]
        # the pod reads model, role and group from its own labels: they must be on the template
        for env in container["env"]:
            path = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
            if path.startswith("metadata.labels["):
                assert path[len("metadata.labels['") : -2] in pod["metadata"]["labels"], (name, path)
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        assert container["readinessProbe"]["grpc"]["port"] == grpc_port
        hook = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert f'services.autoscaler.drain "$POD_IP:{grpc_port}"' in hook
        drain_s = float(hook.split("--timeout")[1].split()[0])
        assert drain_s <= DEFAULT_TIMEOUT_S
        assert pod["spec"]["terminationGracePeriodSeconds"] > drain_s + WORKER_DRAIN_ON_SIGTERM_S
        if overlay in GPU_RESOURCE:
            assert container["resources"]["limits"][GPU_RESOURCE[overlay]] == 1


@needs_kubectl
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_desired_group_finds_exactly_one_worker_deployment(overlay):
    docs = render(overlay)
    desired = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("tessera-desired"))
    groups = [WorkerGroup.from_dict(g) for g in yaml.safe_load(desired["data"]["desired.yaml"])["groups"]]
    assert groups
    for group in groups:
        matching = [
            d["metadata"]["name"] for d in workers(docs) if worker_labels.matches(d["metadata"]["labels"], group)
        ]
        assert matching == [f"worker-{group.name}"], group
        deployment = next(d for d in workers(docs) if d["metadata"]["name"] == matching[0])
        assert deployment["spec"]["template"]["metadata"]["labels"]["tessera.ai/group"] == group.name
    autoscaler = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "autoscaler")
    volumes = autoscaler["spec"]["template"]["spec"]["volumes"]
    assert any(v.get("configMap", {}).get("name") == desired["metadata"]["name"] for v in volumes)


@needs_kubectl
async def test_the_autoscalers_role_allows_exactly_what_the_kubernetes_actuator_calls():
    pytest.importorskip("kubernetes", reason="the kubernetes client is a dev dependency")
    from kubernetes import client

    from services.autoscaler.k8s_actuator import KubernetesActuator
    from tests.support.fake_kube_api import FakeKubeApi

    docs = render("nvidia")
    (role,) = of_kind(docs, "Role")
    granted = {(verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}
    assert all(rule["apiGroups"] == ["apps"] for rule in role["rules"])

    api = FakeKubeApi()
    for d in workers(docs):
        api.add(d["metadata"]["name"], d["metadata"]["labels"], replicas=1)
    host = api.start()
    actuator = KubernetesActuator(client.ApiClient(client.Configuration(host=host)), "tessera")
    try:
        group = WorkerGroup(name="g", model="smollm2", role="decode", accelerator="nvidia", replicas=2)
        api.interfere["worker-smollm2-nvidia-decode"] = 1
        assert await actuator.replicas(group) == 1
        await actuator.scale(group, 2)
        assert api.replicas("worker-smollm2-nvidia-decode") == 2
    finally:
        await actuator.close()
        api.stop()
    assert api.rbac_seen() == granted

    (binding,) = of_kind(docs, "RoleBinding")
    autoscaler = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "autoscaler")
    account = autoscaler["spec"]["template"]["spec"]["serviceAccountName"]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": role["metadata"]["name"],
    }
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": account, "namespace": "tessera"}]
    assert "--actuator=k8s" in autoscaler["spec"]["template"]["spec"]["containers"][0]["args"]
