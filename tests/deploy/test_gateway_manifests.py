"""Tessera's Gateway API objects against the upstream CRD schemas vendored in tests/deploy/schemas/.

The HTTPRoute to the router (deploy/k8s/gateway/) and the 8B example's InferencePool and its
HTTPRoute (deploy/k8s/examples/llama-3.1-8b/) are validated with jsonschema against the served
version's ``openAPIV3Schema``, with unknown fields refused (as ``kubectl apply --validate=strict``
does). Then: the pool selects the worker pods the autoscaler would create and targets their
OpenAI port, and the routes point at what exists.
"""

from __future__ import annotations

import copy
import re

import pytest

from tests.deploy.test_deploy_manifests import needs_kubectl, of_kind, render, worker_deployments
from tests.support.crds import CRDS, validate

GATEWAY_KINDS = {k for k in CRDS if k[0].startswith(("gateway.", "inference."))}


def gateway_objects() -> list[dict]:
    return [d for d in render("examples/llama-3.1-8b") if (d["apiVersion"], d["kind"]) in GATEWAY_KINDS]


@needs_kubectl
def test_httproutes_and_the_inferencepool_validate_against_the_vendored_crds():
    docs = gateway_objects()
    assert sorted(d["kind"] for d in docs) == ["HTTPRoute", "HTTPRoute", "InferencePool"]
    for doc in docs:
        validate(doc)


@needs_kubectl
@pytest.mark.parametrize(
    "kind, spoil, message",
    [
        ("InferencePool", lambda s: s.update(targetPort=[{"number": 8000}]), "'targetPort' was unexpected"),
        ("InferencePool", lambda s: s.pop("targetPorts"), "'targetPorts' is a required property"),
        (
            "InferencePool",
            lambda s: s["targetPorts"].__setitem__(0, {"number": 70000}),
            "70000 is greater than the maximum",
        ),
        ("InferencePool", lambda s: s["endpointPickerRef"].update(failureMode="FailSoft"), "'FailSoft' is not one of"),
        ("HTTPRoute", lambda s: s["rules"][0]["matches"][0]["path"].update(type="Glob"), "'Glob' is not one of"),
        ("HTTPRoute", lambda s: s["rules"][0].update(backend=[]), "'backend' was unexpected"),
    ],
)
def test_the_schema_check_would_catch_a_broken_object(kind, spoil, message):
    doc = copy.deepcopy(next(d for d in gateway_objects() if d["kind"] == kind))
    spoil(doc["spec"])
    with pytest.raises(AssertionError, match=re.escape(message)):
        validate(doc)


@needs_kubectl
def test_the_inferencepool_selects_the_mixed_workers_openai_port():
    docs = render("examples/llama-3.1-8b")
    (pool,) = of_kind(docs, "InferencePool")
    wanted = pool["spec"]["selector"]["matchLabels"]
    selected = [
        d
        for d in worker_deployments(docs)
        if all(d["spec"]["template"]["metadata"]["labels"].get(k) == v for k, v in wanted.items())
    ]
    assert [d["spec"]["template"]["metadata"]["labels"]["tessera.ai/role"] for d in selected] == ["mixed"]
    container = selected[0]["spec"]["template"]["spec"]["containers"][0]
    http = next(p["containerPort"] for p in container["ports"] if p["name"] == "http")
    assert pool["spec"]["targetPorts"] == [{"number": http}]
    assert f"--http-port={http}" in container["args"]
    # CEL rule of the CRD (not evaluated by jsonschema): a Service picker needs a port
    ref = pool["spec"]["endpointPickerRef"]
    assert ref.get("kind", "Service") != "Service" or "port" in ref


@needs_kubectl
def test_the_routes_point_at_the_router_service_and_the_pool():
    docs = render("examples/llama-3.1-8b")
    routes = {d["metadata"]["name"]: d for d in of_kind(docs, "HTTPRoute")}
    (to_router,) = routes["tessera-router"]["spec"]["rules"][0]["backendRefs"]
    router = next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == "router")
    assert to_router["name"] == "router" and to_router["port"] in {p["port"] for p in router["spec"]["ports"]}
    (to_pool,) = routes["llama-3-1-8b-pool"]["spec"]["rules"][0]["backendRefs"]
    (pool,) = of_kind(docs, "InferencePool")
    assert (to_pool["group"], to_pool["kind"], to_pool["name"]) == (
        "inference.networking.k8s.io",
        "InferencePool",
        pool["metadata"]["name"],
    )
