"""An in-process stand-in for the Kubernetes API server: Deployments, their scale, pods and PodTemplates.

There is no kube-apiserver here, so the Kubernetes actuator is tested against this HTTP server,
driven by the real ``kubernetes`` client. It implements the documented behaviour the actuator
relies on (API reference for apps/v1 Deployment, autoscaling/v1 Scale, core/v1 Pod and
PodTemplate; "API concepts": resource versions, label selectors, field validation):

- ``GET/POST .../deployments`` (list by label selector, create: 409 AlreadyExists),
  ``GET/PUT/DELETE .../deployments/{name}`` (a ``resourceVersion`` that is not the current one:
  409 Conflict; a changed ``spec.selector``: 422, it is immutable);
- every written Deployment is checked as the API server does: a DNS-1123 name, valid label
  keys and values, a selector that matches the template's labels, and, with
  ``kubernetes-validate`` installed, the apps/v1 schema with unknown fields refused
  (``fieldValidation=Strict``); a failure is 422 Invalid;
- ``GET/PUT/PATCH .../deployments/{name}/scale`` as before (409 on a stale resourceVersion);
- a ReplicaSet controller stand-in keeps each Deployment's pods at its replica count: new pods
  get their own loopback address (127.0.0.N) and are Ready; on scale-down it removes pods in
  the ReplicaSet's documented order (not ready first, then lower
  ``controller.kubernetes.io/pod-deletion-cost``, then the newest); a template change replaces
  every pod; deleting a Deployment deletes its pods (background propagation);
- ``GET .../pods`` (label selector), ``PATCH .../pods/{name}`` (JSON merge patch of metadata);
- ``GET /api/v1/namespaces/{ns}/podtemplates`` (label selector);
- a verb the test forbids: 403 Forbidden, each error a ``Status`` object with the API's wording.

Every request is recorded as (method, verb, resource) the way RBAC names them, so a test can
compare what the actuator did with what its Role grants; ``events`` records pods created and
terminated in order, for tests that check a pod was drained before it went.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

SERVICE_ACCOUNT = "system:serviceaccount:tessera:tessera-autoscaler"
DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
LABEL_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
DELETION_COST = "controller.kubernetes.io/pod-deletion-cost"
RFC1123 = "lower case alphanumeric characters, '-' or '.'"
LABEL_RULE = "consist of alphanumeric characters, '-', '_' or '.', at most 63"
VALIDATE_VERSION = "1.30.0"  # the oldest Kubernetes deploy/k8s claims to run on


@dataclass
class FakeKubeApi:
    """The server's state and knobs; start() serves it on 127.0.0.1 in a thread."""

    deployments: dict[tuple[str, str], dict] = field(default_factory=dict)
    pods: dict[tuple[str, str], dict] = field(default_factory=dict)
    podtemplates: dict[tuple[str, str], dict] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (http method, verb, resource)
    events: list[tuple[float, str, str, str]] = field(default_factory=list)  # (time, event, pod, ip)
    conflicts: int = 0  # 409s answered
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, resource) answered with 403
    interfere: dict[str, int] = field(default_factory=dict)  # name -> writes by "someone else" to come
    vanish_after_list: set[str] = field(default_factory=set)  # deleted right after the next list
    pods_ready: bool = True  # new pods become Ready at once (False: they stay starting)
    schema_check: bool = True  # validate written Deployments with kubernetes-validate when installed
    _rv: Any = field(default_factory=lambda: itertools.count(1000))
    _ips: Any = field(default_factory=lambda: itertools.count(2))
    _clock: Any = field(default_factory=lambda: itertools.count(0))
    _lock: threading.RLock = field(default_factory=threading.RLock)

    # --- seeding and reading, for tests -----------------------------------

    def add(self, name: str, labels: dict[str, str], replicas: int = 1, namespace: str = "tessera") -> dict:
        """A Deployment someone else made (a bare pod template), with its pods."""
        pod_labels = {"app.kubernetes.io/name": name}
        body = {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {
                "replicas": replicas,
                "selector": {"matchLabels": pod_labels},
                "template": {
                    "metadata": {"labels": pod_labels},
                    "spec": {"containers": [{"name": "worker", "image": "tessera:dev"}]},
                },
            },
        }
        with self._lock:
            return self._store_deployment(namespace, body, created=True)

    def add_podtemplate(self, body: dict, namespace: str = "tessera") -> None:
        meta = body["metadata"]
        stored = copy.deepcopy(body)
        stored["metadata"] = {**meta, "namespace": namespace, "resourceVersion": str(next(self._rv))}
        self.podtemplates[(namespace, meta["name"])] = stored

    def replicas(self, name: str, namespace: str = "tessera") -> int:
        return self.deployments[(namespace, name)]["spec"]["replicas"]

    def deployment(self, name: str, namespace: str = "tessera") -> dict:
        return self.deployments[(namespace, name)]

    def pods_of(self, name: str, namespace: str = "tessera") -> list[dict]:
        return sorted(
            (p for (ns, _), p in self.pods.items() if ns == namespace and p["_owner"] == name),
            key=lambda p: p["metadata"]["name"],
        )

    def rbac_seen(self) -> set[tuple[str, str]]:
        return {(verb, resource) for _, verb, resource in self.seen}

    # --- serving ----------------------------------------------------------

    def start(self) -> str:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
                pass

            def do_GET(self) -> None:
                api._handle(self, "GET")

            def do_POST(self) -> None:
                api._handle(self, "POST")

            def do_PUT(self) -> None:
                api._handle(self, "PUT")

            def do_PATCH(self) -> None:
                api._handle(self, "PATCH")

            def do_DELETE(self) -> None:
                api._handle(self, "DELETE")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handle(self, req: BaseHTTPRequestHandler, method: str) -> None:
        url = urlsplit(req.path)
        body = req.rfile.read(int(req.headers.get("Content-Length") or 0))
        with self._lock:
            code, payload = self._route(
                method, url.path, parse_qs(url.query), body, req.headers.get("Content-Type", "")
            )
        data = json.dumps(payload).encode()
        req.send_response(code)
        req.send_header("Content-Type", "application/json")
        req.send_header("Content-Length", str(len(data)))
        req.end_headers()
        req.wfile.write(data)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], body: bytes, content_type: str
    ) -> tuple[int, dict]:
        selector = query.get("labelSelector", [""])[0]
        m = re.fullmatch(r"/apis/apps/v1/namespaces/([^/]+)/deployments(?:/([^/]+))?(/scale)?", path)
        if m:
            ns, name, scale = m.groups()
            if scale and name:
                verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}.get(method)
                if verb is None:
                    return _not_found(method, path)
                return self._scale(verb, method, ns, name, body, content_type)
            if name is None:
                if method == "GET":
                    return self._list_deployments(ns, selector)
                if method == "POST":
                    return self._create(ns, body)
                return _not_found(method, path)
            if method == "GET":
                return self._get(ns, name)
            if method == "PUT":
                return self._replace(ns, name, body)
            if method == "DELETE":
                return self._delete(ns, name)
            return _not_found(method, path)
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/pods(?:/([^/]+))?", path)
        if m:
            ns, name = m.groups()
            if name is None and method == "GET":
                return self._list_pods(ns, selector)
            if name is not None and method == "PATCH":
                return self._patch_pod(ns, name, body, content_type)
            return _not_found(method, path)
        m = re.fullmatch(r"/api/v1/namespaces/([^/]+)/podtemplates", path)
        if m and method == "GET":
            denied = self._deny("GET", "list", "podtemplates", m.group(1), group="")
            if denied:
                return denied
            items = [t for (ns, _), t in sorted(self.podtemplates.items()) if ns == m.group(1)]
            return _list("PodTemplateList", "v1", [t for t in items if _matches(selector, t)], next(self._rv))
        return _not_found(method, path)

    def _deny(
        self, method: str, verb: str, resource: str, namespace: str, name: str = "", group: str = "apps"
    ) -> tuple[int, dict] | None:
        self.seen.append((method, verb, resource))
        if (verb, resource) not in self.forbidden:
            return None
        kind = resource.split("/")[0] + (f".{group}" if group else "")
        what = f'{kind} "{name}"' if name else kind
        return _status(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource '
            f'"{resource}" in API group "{group}" in the namespace "{namespace}"',
        )

    # --- deployments ------------------------------------------------------

    def _list_deployments(self, namespace: str, selector: str) -> tuple[int, dict]:
        denied = self._deny("GET", "list", "deployments", namespace)
        if denied:
            return denied
        try:
            items = [d for (ns, _), d in sorted(self.deployments.items()) if ns == namespace and _matches(selector, d)]
        except ValueError as exc:
            return _status(400, "BadRequest", f"unable to parse requirement: {exc}")
        for d in items:
            if d["metadata"]["name"] in self.vanish_after_list:
                self.vanish_after_list.discard(d["metadata"]["name"])
                del self.deployments[(namespace, d["metadata"]["name"])]
        return _list("DeploymentList", "apps/v1", items, next(self._rv))

    def _get(self, namespace: str, name: str) -> tuple[int, dict]:
        denied = self._deny("GET", "get", "deployments", namespace, name)
        if denied:
            return denied
        d = self.deployments.get((namespace, name))
        return (200, _public(d)) if d else _status(404, "NotFound", f'deployments.apps "{name}" not found', name)

    def _create(self, namespace: str, raw: bytes) -> tuple[int, dict]:
        denied = self._deny("POST", "create", "deployments", namespace)
        if denied:
            return denied
        body = json.loads(raw or b"{}")
        name = (body.get("metadata") or {}).get("name", "")
        if (namespace, name) in self.deployments:
            return _status(409, "AlreadyExists", f'deployments.apps "{name}" already exists', name)
        problem = self._invalid(namespace, body)
        if problem:
            return _status(422, "Invalid", f'Deployment.apps "{name}" is invalid: {problem}', name)
        return 201, _public(self._store_deployment(namespace, body, created=True))

    def _replace(self, namespace: str, name: str, raw: bytes) -> tuple[int, dict]:
        denied = self._deny("PUT", "update", "deployments", namespace, name)
        if denied:
            return denied
        current = self.deployments.get((namespace, name))
        if current is None:
            return _status(404, "NotFound", f'deployments.apps "{name}" not found', name)
        self._someone_else_writes(current)
        body = json.loads(raw or b"{}")
        precondition = str((body.get("metadata") or {}).get("resourceVersion") or "")
        if precondition and precondition != current["metadata"]["resourceVersion"]:
            self.conflicts += 1
            return _conflict(name)
        if (body.get("metadata") or {}).get("name") != name:
            return _status(400, "BadRequest", "the name of the object does not match the name on the URL", name)
        problem = self._invalid(namespace, body)
        if not problem and body["spec"]["selector"] != current["spec"]["selector"]:
            problem = "spec.selector: Invalid value: field is immutable"
        if problem:
            return _status(422, "Invalid", f'Deployment.apps "{name}" is invalid: {problem}', name)
        return 200, _public(self._store_deployment(namespace, body, created=False))

    def _delete(self, namespace: str, name: str) -> tuple[int, dict]:
        denied = self._deny("DELETE", "delete", "deployments", namespace, name)
        if denied:
            return denied
        d = self.deployments.pop((namespace, name), None)
        if d is None:
            return _status(404, "NotFound", f'deployments.apps "{name}" not found', name)
        for pod in self.pods_of(name, namespace):  # background propagation: the garbage collector
            self._terminate(namespace, pod)
        return 200, {"kind": "Status", "apiVersion": "v1", "status": "Success", "details": {"name": name}}

    def _invalid(self, namespace: str, body: dict) -> str:
        """What the API server would refuse in a Deployment ('' if nothing)."""
        meta = body.get("metadata") or {}
        name = meta.get("name") or ""
        if not DNS1123_SUBDOMAIN.match(name) or len(name) > 253:
            return f'metadata.name: Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of {RFC1123}'
        if meta.get("namespace") not in (None, namespace):
            return "metadata.namespace: does not match the namespace of the request"
        spec = body.get("spec") or {}
        template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
        for where, labels in (
            ("metadata.labels", meta.get("labels") or {}),
            ("spec.template.metadata.labels", template_labels),
        ):
            for key, value in labels.items():
                prefix, _, short = key.rpartition("/")
                if (prefix and not DNS1123_SUBDOMAIN.match(prefix)) or not LABEL_NAME.match(short) or len(short) > 63:
                    return f'{where}: Invalid value: "{key}": name part must be a valid label key'
                if not isinstance(value, str) or len(value) > 63 or not LABEL_VALUE.match(value):
                    return f'{where}: Invalid value: "{value}": a valid label must be an empty string or {LABEL_RULE}'
        wanted = (spec.get("selector") or {}).get("matchLabels") or {}
        if not wanted:
            return "spec.selector: Required value"
        if any(template_labels.get(k) != v for k, v in wanted.items()):
            return "spec.template.metadata.labels: Invalid value: `selector` does not match template `labels`"
        if self.schema_check:
            try:
                import kubernetes_validate
            except ImportError:
                return ""
            try:
                kubernetes_validate.validate(
                    {**body, "apiVersion": "apps/v1", "kind": "Deployment"}, VALIDATE_VERSION, strict=True
                )
            except kubernetes_validate.ValidationError as exc:
                return f"{'.'.join(map(str, exc.path))}: {exc.message}"
        return ""

    def _store_deployment(self, namespace: str, body: dict, created: bool) -> dict:
        name = body["metadata"]["name"]
        old = self.deployments.get((namespace, name))
        stored = copy.deepcopy(body)
        stored.pop("status", None)
        meta = stored["metadata"]
        meta["namespace"] = namespace
        meta["resourceVersion"] = str(next(self._rv))
        meta["uid"] = old["metadata"]["uid"] if old else f"uid-{name}"
        meta["creationTimestamp"] = old["metadata"]["creationTimestamp"] if old else _timestamp(next(self._clock))
        meta["generation"] = (old["metadata"]["generation"] + 1) if old else 1
        stored["spec"].setdefault("replicas", 1)
        self.deployments[(namespace, name)] = stored
        self._sync_pods(namespace, stored)
        return stored

    def _someone_else_writes(self, d: dict) -> None:
        name = d["metadata"]["name"]
        for _ in range(self.interfere.get(name, 0)):
            d["spec"]["replicas"] += 1
            d["metadata"]["resourceVersion"] = str(next(self._rv))
        self.interfere.pop(name, None)

    # --- the ReplicaSet controller, in short -------------------------------

    def _sync_pods(self, namespace: str, d: dict) -> None:
        name = d["metadata"]["name"]
        template = d["spec"]["template"]
        template_hash = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()[:10]
        pods = self.pods_of(name, namespace)
        for pod in pods:
            if pod["_template_hash"] != template_hash:  # a rollout: every old pod is replaced
                self._terminate(namespace, pod)
        pods = [p for p in self.pods_of(name, namespace) if p["_template_hash"] == template_hash]
        want = d["spec"]["replicas"]
        for _ in range(want - len(pods)):
            self._new_pod(namespace, name, template, template_hash)
        if len(pods) > want:

            def rank(p: dict) -> tuple:
                cost = int((p["metadata"].get("annotations") or {}).get(DELETION_COST, "0"))
                return (_ready(p), cost, -int(p["_seq"]))

            for pod in sorted(pods, key=rank)[: len(pods) - want]:
                self._terminate(namespace, pod)
        pods = self.pods_of(name, namespace)
        d["status"] = {
            "replicas": len(pods),
            "readyReplicas": sum(1 for p in pods if _ready(p)),
            "observedGeneration": d["metadata"]["generation"],
        }

    def make_ready(self) -> None:
        """Every pod's engine finished loading: Ready, and counted so in its Deployment's status."""
        with self._lock:
            for pod in self.pods.values():
                pod["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
            for (ns, _), d in self.deployments.items():
                self._sync_pods(ns, d)

    def _new_pod(self, namespace: str, owner: str, template: dict, template_hash: str) -> None:
        seq = next(self._clock)
        suffix = hashlib.sha256(f"{owner}{seq}".encode()).hexdigest()[:5]
        name = f"{owner}-{template_hash}-{suffix}"
        ip = f"127.0.0.{next(self._ips)}"
        meta = copy.deepcopy(template.get("metadata") or {})
        pod = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                **meta,
                "name": name,
                "namespace": namespace,
                "uid": f"uid-{name}",
                "resourceVersion": str(next(self._rv)),
                "creationTimestamp": _timestamp(seq),
                "labels": {**(meta.get("labels") or {}), "pod-template-hash": template_hash},
            },
            "spec": copy.deepcopy(template.get("spec") or {}),
            "status": {
                "phase": "Running",
                "podIP": ip,
                "conditions": [{"type": "Ready", "status": "True" if self.pods_ready else "False"}],
            },
            "_owner": owner,
            "_template_hash": template_hash,
            "_seq": seq,
        }
        self.pods[(namespace, name)] = pod
        self.events.append((time.monotonic(), "created", name, ip))

    def _terminate(self, namespace: str, pod: dict) -> None:
        self.pods.pop((namespace, pod["metadata"]["name"]), None)
        self.events.append((time.monotonic(), "terminated", pod["metadata"]["name"], pod["status"]["podIP"]))

    # --- pods -------------------------------------------------------------

    def _list_pods(self, namespace: str, selector: str) -> tuple[int, dict]:
        denied = self._deny("GET", "list", "pods", namespace, group="")
        if denied:
            return denied
        items = [p for (ns, _), p in sorted(self.pods.items()) if ns == namespace and _matches(selector, p)]
        return _list("PodList", "v1", [_public(p) for p in items], next(self._rv))

    def _patch_pod(self, namespace: str, name: str, raw: bytes, content_type: str) -> tuple[int, dict]:
        denied = self._deny("PATCH", "patch", "pods", namespace, name, group="")
        if denied:
            return denied
        pod = self.pods.get((namespace, name))
        if pod is None:
            return _status(404, "NotFound", f'pods "{name}" not found', name)
        if "merge-patch" not in content_type and "strategic-merge-patch" not in content_type:
            return _status(
                415, "UnsupportedMediaType", f"the body of the request was in an unknown format: {content_type}"
            )
        patch = json.loads(raw or b"{}")
        for key, value in ((patch.get("metadata") or {}).get("annotations") or {}).items():
            annotations = pod["metadata"].setdefault("annotations", {})
            if value is None:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        pod["metadata"]["resourceVersion"] = str(next(self._rv))
        return 200, _public(pod)

    # --- deployments/scale ------------------------------------------------

    def _scale(
        self, verb: str, method: str, namespace: str, name: str, body: bytes, content_type: str
    ) -> tuple[int, dict]:
        denied = self._deny(method, verb, "deployments/scale", namespace, name)
        if denied:
            return denied
        d = self.deployments.get((namespace, name))
        if d is None:
            return _status(404, "NotFound", f'deployments.apps "{name}" not found', name)
        if verb == "get":
            return 200, _scale(d)
        self._someone_else_writes(d)
        try:
            replicas, precondition = _requested(json.loads(body or b"{}"), content_type, d)
        except (ValueError, KeyError, TypeError) as exc:
            return _status(400, "BadRequest", f"bad {verb} body: {exc}", name)
        if precondition and precondition != d["metadata"]["resourceVersion"]:
            self.conflicts += 1
            return _conflict(name)
        if not isinstance(replicas, int) or replicas < 0:
            return _status(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas}: must be greater than or equal to 0",
                name,
            )
        d["spec"]["replicas"] = replicas
        d["metadata"]["resourceVersion"] = str(next(self._rv))
        self._sync_pods(namespace, d)
        return 200, _scale(d)


def _ready(pod: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in pod["status"].get("conditions") or [])


def _requested(body: Any, content_type: str, d: dict) -> tuple[Any, str]:
    """(replicas wanted, resourceVersion precondition or '') from a PUT or PATCH body."""
    if "json-patch" in content_type:
        replicas = d["spec"]["replicas"]
        for op in body:
            if op["op"] in ("replace", "add") and op["path"] == "/spec/replicas":
                replicas = op["value"]
        return replicas, ""
    if body.get("kind", "Scale") != "Scale" and "patch" not in content_type:
        raise ValueError(f"expected a Scale, got {body.get('kind')}")
    meta = body.get("metadata") or {}
    if meta.get("name") not in (None, d["metadata"]["name"]):
        raise ValueError(
            f"the name of the object ({meta['name']}) does not match the name on the URL ({d['metadata']['name']})"
        )
    return (body.get("spec") or {}).get("replicas", d["spec"]["replicas"]), str(meta.get("resourceVersion") or "")


def _matches(text: str, obj: dict) -> bool:
    """Equality-based label selectors (``=``, ``==``, ``!=``, ``k``, ``!k``) on ``obj``'s labels."""
    labels = (obj.get("metadata") or {}).get("labels") or {}
    for term in filter(None, (t.strip() for t in text.split(","))):
        if " in " in term or " notin " in term or "(" in term:
            raise ValueError(f"set-based selector {term!r} is not supported by this fake")
        if "!=" in term:
            k, v = term.split("!=", 1)
            if labels.get(k) == v:
                return False
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            if labels.get(k) != v:
                return False
        elif term.startswith("!"):
            if term[1:] in labels:
                return False
        elif term not in labels:
            return False
    return True


def _public(obj: dict) -> dict:
    """The object as the API returns it (without this fake's bookkeeping)."""
    return {k: v for k, v in obj.items() if not k.startswith("_")}


def _list(kind: str, api_version: str, items: list[dict], rv: int) -> tuple[int, dict]:
    return 200, {
        "kind": kind,
        "apiVersion": api_version,
        "metadata": {"resourceVersion": str(rv)},
        "items": [_public(i) for i in items],
    }


# Creation times must be about now when the object is created, not when this module loaded: the
# actuator replaces a shape whose successor has not started for RESHAPE_GRACE_S (15 min), and in
# `make test` the compose test's image build alone runs 12-17 min between collection and these tests.


def _timestamp(seq: int) -> str:
    """Now, plus the object's sequence number in seconds: distinct and ordered (both only grow), about now."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(int(time.time()) + seq))


def _scale(d: dict) -> dict:
    meta = {k: d["metadata"][k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")}
    selector = ",".join(f"{k}={v}" for k, v in sorted(d["spec"]["selector"]["matchLabels"].items()))
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": d["spec"]["replicas"]},
        "status": {"replicas": d["spec"]["replicas"], "selector": selector},
    }


def _conflict(name: str) -> tuple[int, dict]:
    return _status(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on deployments.apps "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again",
        name,
    )


def _not_found(method: str, path: str) -> tuple[int, dict]:
    return _status(404, "NotFound", f"the server could not find the requested resource ({method} {path})")


def _status(code: int, reason: str, message: str, name: str = "") -> tuple[int, dict]:
    details = {"name": name, "group": "apps", "kind": "deployments"} if name else {}
    return code, {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }


def write_kubeconfig(path: Any, host: str, namespace: str) -> str:
    """A kubeconfig whose current context points the real client at `host`, in `namespace`."""
    from pathlib import Path

    Path(path).write_text(f"""
apiVersion: v1
kind: Config
clusters: [{{name: fake, cluster: {{server: "{host}"}}}}]
users: [{{name: me, user: {{token: not-checked}}}}]
contexts: [{{name: ctx, context: {{cluster: fake, user: me, namespace: {namespace}}}}}]
current-context: ctx
""")
    return str(path)
