"""Kubernetes objects of custom kinds checked against the upstream CRD schemas vendored in tests/deploy/schemas/.

The served version's ``openAPIV3Schema``, with unknown fields refused as ``kubectl apply
--validate=strict`` would refuse them; ObjectMeta is left to the API server.
"""

from __future__ import annotations

import copy

import pytest
import yaml

from tests.support.paths import REPO

jsonschema = pytest.importorskip("jsonschema", reason="jsonschema is a dev dependency")

SCHEMAS = REPO / "tests/deploy/schemas"
CRDS = {
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.yaml",
    ("inference.networking.k8s.io/v1", "InferencePool"): "inference.networking.k8s.io_inferencepools.yaml",
    ("monitoring.coreos.com/v1", "PodMonitor"): "monitoring.coreos.com_podmonitors.yaml",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "monitoring.coreos.com_prometheusrules.yaml",
}


def strict(schema: dict) -> dict:
    """The schema with unknown fields refused wherever it lists the fields (structural schemas prune them)."""
    schema = copy.deepcopy(schema)

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if (
                "properties" in node
                and "additionalProperties" not in node
                and not node.get("x-kubernetes-preserve-unknown-fields")
            ):
                node["additionalProperties"] = False
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(schema)
    return schema


def crd_validator(api_version: str, kind: str) -> jsonschema.Draft7Validator:
    crd = yaml.safe_load((SCHEMAS / CRDS[(api_version, kind)]).read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    (served,) = [v for v in crd["spec"]["versions"] if v["name"] == version and v["served"]]
    schema = strict(served["schema"]["openAPIV3Schema"])
    schema["properties"]["metadata"] = {"type": "object"}  # ObjectMeta: checked by the API server, not the CRD
    return jsonschema.Draft7Validator(schema)


def validate(doc: dict) -> None:
    errors = sorted(crd_validator(doc["apiVersion"], doc["kind"]).iter_errors(doc), key=lambda e: list(e.path))
    assert not errors, [f"{'.'.join(map(str, e.path))}: {e.message}" for e in errors]
