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

from services.autoscaler import k8s_workload as wl
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
    ["docker-compose.yaml", "docker-compose.tenstorrent.yaml"],
]
OVERLAYS = ["cpu", "nvidia", "amd"]
# The oldest Kubernetes these manifests claim to run on, and the newest the validator knows.
K8S_VERSIONS = ["1.30.0", "1.37.0"]
WORKER_DRAIN_ON_SIGTERM_S = 30  # services/worker/main.py DRAIN_TIMEOUT_S


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

EXAMPLES = ["examples/llama-3.1-8b"]
KUSTOMIZATIONS = [f"overlays/{o}" for o in OVERLAYS] + EXAMPLES
CRD_KINDS = {"HTTPRoute", "InferencePool"}  # checked against the vendored CRDs (test_gateway_manifests.py)
_rendered: dict[str, list[dict]] = {}


def render(path: str) -> list[dict]:
    """``kubectl kustomize deploy/k8s/<path>``: what ``kubectl apply -k`` would send."""
    if path not in _rendered:
        result = subprocess.run(
            [KUBECTL, "kustomize", str(ROOT / "deploy/k8s" / path)], capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        _rendered[path] = [d for d in yaml.safe_load_all(result.stdout) if d]
    return _rendered[path]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def desired_groups(docs: list[dict]) -> list[WorkerGroup]:
    desired = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("tessera-desired"))
    return [WorkerGroup.from_dict(g) for g in yaml.safe_load(desired["data"]["desired.yaml"])["groups"]]


def worker_deployments(docs: list[dict]) -> list[dict]:
    """The Deployments the autoscaler creates for this kustomization's desired groups (at >= 1 replica)."""
    templates = of_kind(docs, "PodTemplate")
    out = []
    for group in desired_groups(docs):
        group = WorkerGroup.from_dict({**group.__dict__, "replicas": max(group.replicas, 1)})
        out.append(wl.render(group, wl.pick_template(templates, group), "tessera"))
    return out


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    specs = [
        (d["metadata"]["name"], d["spec"]["template"]["spec"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet")
    ]
    return specs + [(d["metadata"]["name"], d["template"]["spec"]) for d in of_kind(docs, "PodTemplate")]


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_rendered_object_and_every_worker_deployment_validates_strictly(path):
    """All of ``kubectl kustomize`` and the Deployments the actuator would make from it, against the API schemas."""
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
    docs = render(path)
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
        "PodTemplate",
        "PersistentVolumeClaim",
        "PodDisruptionBudget",
        "NetworkPolicy",
    } <= kinds
    generated = worker_deployments(docs)
    assert generated
    for version in K8S_VERSIONS:
        for doc in [*docs, *generated]:
            if doc["kind"] not in CRD_KINDS:
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
def test_the_8b_example_places_a_hub_id_on_two_vendors():
    docs = render("examples/llama-3.1-8b")
    found = {d["metadata"]["annotations"][wl.GROUP_ANNOTATION]: d for d in worker_deployments(docs)}
    assert set(found) == {"llama-8b-h100-tp2-prefill", "llama-8b-mi300x-decode", "llama-8b-h100-mixed"}
    prefill = found["llama-8b-h100-tp2-prefill"]["spec"]["template"]
    assert prefill["metadata"]["annotations"][wl.MODEL_ANNOTATION] == "meta-llama/Llama-3.1-8B-Instruct"
    assert prefill["spec"]["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": "2"}
    assert prefill["spec"]["nodeSelector"] == {"tessera.ai/accelerator": "h100-sxm"}
    decode = found["llama-8b-mi300x-decode"]["spec"]["template"]
    assert decode["spec"]["containers"][0]["resources"]["limits"] == {"amd.com/gpu": "1"}
    assert decode["spec"]["containers"][0]["image"] == "tessera:rocm"
    assert prefill["spec"]["containers"][0]["image"] == "tessera:gpu"


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_worker_pods_read_their_model_and_group_drain_and_probe(path):
    for d in worker_deployments(render(path)):
        name, pod = d["metadata"]["name"], d["spec"]["template"]
        container = pod["spec"]["containers"][0]
        # the pod reads model and group from its own annotations: they must be on the template
        for env in container["env"]:
            field = env.get("valueFrom", {}).get("fieldRef", {}).get("fieldPath", "")
            if field.startswith("metadata.annotations["):
                assert field[len("metadata.annotations['") : -2] in pod["metadata"]["annotations"], (name, field)
        grpc_port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        assert container["readinessProbe"]["grpc"]["port"] == grpc_port
        assert container["startupProbe"]["grpc"]["port"] == grpc_port
        hook = " ".join(container["lifecycle"]["preStop"]["exec"]["command"])
        assert f'services.autoscaler.drain "$POD_IP:{grpc_port}"' in hook
        drain_s = float(hook.split("--timeout")[1].split()[0])
        assert drain_s <= DEFAULT_TIMEOUT_S
        assert pod["spec"]["terminationGracePeriodSeconds"] > drain_s + WORKER_DRAIN_ON_SIGTERM_S
        volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
        shm = next(m for m in container["volumeMounts"] if m["mountPath"] == "/dev/shm")
        assert volumes[shm["name"]]["emptyDir"]["medium"] == "Memory"
        cache = next(m for m in container["volumeMounts"] if m["mountPath"] == "/cache")
        assert volumes[cache["name"]]["persistentVolumeClaim"]["claimName"] == "tessera-model-cache"
        token = next(e for e in container["env"] if e["name"] == "HF_TOKEN")
        assert token["valueFrom"]["secretKeyRef"]["name"] == "hf-token"


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_every_pod_runs_unprivileged(path):
    docs = render(path)
    for name, spec in pod_specs(docs) + [
        (d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in worker_deployments(docs)
    ]:
        assert spec["securityContext"]["runAsNonRoot"] is True, name
        assert spec["securityContext"]["runAsUser"] != 0, name
        for container in spec["containers"]:
            sc = container["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["capabilities"]["drop"] == ["ALL"], name
            assert not sc.get("privileged"), name


@needs_kubectl
def test_network_policies_keep_etcd_and_internal_grpc_inside_the_namespace():
    """Evaluate the policies as a CNI does (union of allows over the policies that select a pod)."""
    docs = render("overlays/nvidia")
    policies = of_kind(docs, "NetworkPolicy")
    pods = {
        "etcd": {"app.kubernetes.io/name": "etcd", "app.kubernetes.io/component": "etcd"},
        "scheduler": {"app.kubernetes.io/name": "scheduler", "app.kubernetes.io/component": "scheduler"},
        "autoscaler": {"app.kubernetes.io/name": "autoscaler", "app.kubernetes.io/component": "autoscaler"},
        "router": {"app.kubernetes.io/name": "router", "app.kubernetes.io/component": "router"},
        "worker": worker_deployments(docs)[0]["spec"]["template"]["metadata"]["labels"],
    }

    def allowed(target: str, port: int, same_namespace: bool, ns_labels: dict[str, str]) -> bool:
        selecting = [p for p in policies if _selects(p["spec"]["podSelector"], pods[target])]
        assert selecting, f"{target} is selected by no policy: open to everyone"
        for policy in selecting:
            for rule in policy["spec"].get("ingress") or []:
                ports = {p["port"] for p in rule.get("ports") or []}
                if ports and port not in ports:
                    continue
                peers = rule.get("from")
                if not peers:
                    return True
                for peer in peers:
                    if "podSelector" in peer and "namespaceSelector" not in peer and same_namespace:
                        return True
                    if "namespaceSelector" in peer and _selects(peer["namespaceSelector"], ns_labels):
                        return True
        return False

    outside, gateway = {"kubernetes.io/metadata.name": "default"}, {"tessera.ai/inference-gateway": "true"}
    for target, port in [
        ("etcd", 2379),
        ("etcd", 2380),
        ("scheduler", 50052),
        ("autoscaler", 50053),
        ("worker", 50051),
    ]:
        assert allowed(target, port, True, {}), (target, port)
        assert not allowed(target, port, False, outside), (target, port)
        assert not allowed(target, port, False, gateway), (target, port)
    assert allowed("router", 8000, False, outside) and allowed("router", 50051, False, outside)
    assert allowed("worker", 8000, False, gateway) and not allowed("worker", 8000, False, outside)
    assert not allowed("worker", 9090, False, outside)


def _selects(selector: dict, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items())


@needs_kubectl
def test_disruption_budgets_cover_workers_and_routers():
    docs = render("overlays/cpu")
    budgets = {d["metadata"]["name"]: d["spec"] for d in of_kind(docs, "PodDisruptionBudget")}
    worker_pod = worker_deployments(docs)[0]["spec"]["template"]["metadata"]["labels"]
    assert _selects(budgets["tessera-workers"]["selector"], worker_pod)
    assert budgets["tessera-workers"]["unhealthyPodEvictionPolicy"] == "AlwaysAllow"
    router = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "router")
    assert _selects(budgets["tessera-router"]["selector"], router["spec"]["template"]["metadata"]["labels"])


@needs_kubectl
@pytest.mark.parametrize("path", KUSTOMIZATIONS)
def test_the_autoscaler_reads_this_desired_state_and_every_group_has_a_template(path):
    docs = render(path)
    groups = desired_groups(docs)
    assert groups and len(worker_deployments(docs)) == len(groups)
    autoscaler = next(d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == "autoscaler")
    volumes = autoscaler["spec"]["template"]["spec"]["volumes"]
    desired = next(d for d in of_kind(docs, "ConfigMap") if d["metadata"]["name"].startswith("tessera-desired"))
    assert any(v.get("configMap", {}).get("name") == desired["metadata"]["name"] for v in volumes)
    assert "--actuator=k8s" in autoscaler["spec"]["template"]["spec"]["containers"][0]["args"]


@needs_kubectl
async def test_the_autoscalers_role_allows_exactly_what_the_kubernetes_actuator_calls():
    pytest.importorskip("kubernetes", reason="the kubernetes client is a dev dependency")
    from kubernetes import client

    from services.autoscaler.k8s_actuator import KubernetesActuator
    from tests.support.fake_kube_api import FakeKubeApi

    docs = render("overlays/nvidia")
    (role,) = of_kind(docs, "Role")
    granted = {(verb, resource) for rule in role["rules"] for resource in rule["resources"] for verb in rule["verbs"]}

    api = FakeKubeApi()
    for template in of_kind(docs, "PodTemplate"):
        api.add_podtemplate(template)
    host = api.start()

    async def no_worker_to_drain(address: str, timeout_s: float) -> int:
        return 0

    actuator = KubernetesActuator(
        client.ApiClient(client.Configuration(host=host)), "tessera", drain=no_worker_to_drain
    )
    try:
        group = WorkerGroup(name="g", model="smollm2", role="decode", accelerator="h100-sxm", replicas=2)
        await actuator.converge([group])  # create
        ((_, name),) = api.deployments
        api.interfere[name] = 1
        await actuator.converge([WorkerGroup(**{**group.__dict__, "replicas": 5})])  # scale up, after a conflict
        await actuator.converge([WorkerGroup(**{**group.__dict__, "replicas": 1})])  # drain and scale down
        api.podtemplates[("tessera", "tessera-worker-nvidia")]["template"]["spec"]["containers"][0]["image"] = "x:2"
        await actuator.converge([WorkerGroup(**{**group.__dict__, "replicas": 1})])  # update
        await actuator.converge([])  # delete
        assert api.deployments == {}
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
