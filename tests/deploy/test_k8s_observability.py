"""deploy/k8s/observability/: the Prometheus Operator and Grafana sidecar form of the observability pack.

Rendered with ``kubectl kustomize``; the PodMonitors and the PrometheusRule are validated against
the Prometheus Operator's CRDs vendored in tests/deploy/schemas/, the rest against the Kubernetes
schemas. Then what a user would notice: each PodMonitor selects the pods the control plane and the
autoscaler create, on a port they expose; the rules are alerts.yml's (promtool accepts them); the
dashboards are grafana/*.json; and the files are what build_k8s.py writes.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from tests.deploy.test_deploy_manifests import K8S_VERSIONS, needs_kubectl, of_kind, render, worker_deployments
from tests.support.crds import CRDS, validate
from tests.support.paths import REPO
from tests.support.prometheus import binaries

OBSERVABILITY = REPO / "deploy/observability"


def pack() -> list[dict]:
    return render("observability")


@needs_kubectl
def test_every_object_validates_against_its_schema():
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="kubernetes-validate is a dev dependency")
    kinds = set()
    for doc in pack():
        kinds.add(doc["kind"])
        if (doc["apiVersion"], doc["kind"]) in CRDS:
            validate(doc)
        else:
            for version in K8S_VERSIONS:
                kubernetes_validate.validate(doc, version, strict=True)
    assert kinds == {"PodMonitor", "PrometheusRule", "ConfigMap", "NetworkPolicy"}


@needs_kubectl
def test_the_crd_check_would_catch_a_broken_podmonitor():
    (monitor, *_) = of_kind(pack(), "PodMonitor")
    broken = yaml.safe_load(yaml.safe_dump(monitor))
    broken["spec"]["podMetricsEndpoints"][0]["portt"] = "metrics"
    with pytest.raises(AssertionError, match="portt"):
        validate(broken)


@needs_kubectl
def test_each_kind_of_pod_is_scraped_on_a_port_it_exposes():
    """Every Tessera pod that serves metrics (router, scheduler, autoscaler, each worker Deployment
    the actuator stamps) is selected by exactly one PodMonitor, on a named port of its container."""
    monitors = of_kind(pack(), "PodMonitor")
    cluster = render("overlays/cpu")
    pods = [d["spec"]["template"] for d in of_kind(cluster, "Deployment") + worker_deployments(cluster)]
    scraped = set()
    for pod in pods:
        labels = pod["metadata"]["labels"]
        ports = {p["name"] for c in pod["spec"]["containers"] for p in c.get("ports", [])}
        matching = [m for m in monitors if m["spec"]["selector"]["matchLabels"].items() <= labels.items()]
        if labels.get("app.kubernetes.io/component") == "etcd":
            assert not matching  # etcd's own metrics are etcd's business
            continue
        assert len(matching) == 1, labels
        (endpoint,) = matching[0]["spec"]["podMetricsEndpoints"]
        assert endpoint["port"] in ports, (labels, ports)
        scraped.add(labels["app.kubernetes.io/component"])
    assert scraped == {"router", "scheduler", "autoscaler", "worker"}


@needs_kubectl
def test_the_monitoring_namespace_reaches_metrics_ports_only():
    (policy,) = [p for p in of_kind(pack(), "NetworkPolicy") if p["metadata"]["name"] == "metrics-from-monitoring"]
    (rule,) = policy["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"tessera.ai/monitoring": "true"}}}]
    assert rule["ports"] == [{"port": 9090, "protocol": "TCP"}]


@needs_kubectl
def test_the_rules_are_alerts_yml_and_promtool_accepts_them(tmp_path):
    (rule,) = of_kind(pack(), "PrometheusRule")
    assert rule["spec"]["groups"] == yaml.safe_load((OBSERVABILITY / "alerts.yml").read_text())["groups"]
    (tmp_path / "rules.yml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    out = subprocess.run([binaries()[1], "check", "rules", str(tmp_path / "rules.yml")], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


@needs_kubectl
def test_the_dashboards_are_grafana_json_for_the_sidecar():
    maps = [m for m in of_kind(pack(), "ConfigMap") if m["metadata"]["labels"].get("grafana_dashboard") == "1"]
    files = {name: text for m in maps for name, text in m["data"].items()}
    assert files == {p.name: p.read_text() for p in (OBSERVABILITY / "grafana").glob("*.json")}


def test_the_files_are_what_the_script_writes():
    out = subprocess.run(
        [sys.executable, str(OBSERVABILITY / "build_k8s.py"), "--check"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
