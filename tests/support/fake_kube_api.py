"""A small in-process stand-in for the Kubernetes API server: Deployments and their scale subresource.

There is no kube-apiserver here, so the Kubernetes actuator is tested against
this server, driven by the real ``kubernetes`` client. It implements the
documented behaviour the actuator relies on (API reference, apps/v1
Deployment and autoscaling/v1 Scale; "API concepts: resource versions"):

- ``GET  .../namespaces/{ns}/deployments?labelSelector=k=v,k2=v2``: a DeploymentList
  of the matches (equality-based selectors: ``=``, ``==``, ``!=``, ``k``, ``!k``);
- ``GET  .../deployments/{name}/scale``: an autoscaling/v1 Scale whose
  ``metadata.resourceVersion`` is the Deployment's;
- ``PUT  .../deployments/{name}/scale``: with a ``resourceVersion`` that is not
  the current one, 409 Conflict and nothing changes; without one, an
  unconditional update (Deployments allow it); otherwise the new replicas and a
  new, larger resourceVersion;
- ``PATCH .../deployments/{name}/scale``: merge or strategic-merge patch of
  ``spec.replicas`` (a ``metadata.resourceVersion`` in it is a precondition),
  or a JSON patch;
- a missing Deployment: 404 NotFound; a verb the test forbids: 403 Forbidden,
  each as a ``Status`` object with the API server's wording.

Every request is recorded as (verb, resource) the way RBAC names them, so a
test can compare what the actuator did with what its Role grants.
"""

from __future__ import annotations

import itertools
import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

PREFIX = "/apis/apps/v1/namespaces/"
SERVICE_ACCOUNT = "system:serviceaccount:tessera:tessera-autoscaler"


@dataclass
class Deployment:
    namespace: str
    name: str
    labels: dict[str, str]
    replicas: int
    resource_version: int
    uid: str


@dataclass
class FakeKubeApi:
    """The server's state and knobs; start() serves it on 127.0.0.1 in a thread."""

    deployments: dict[tuple[str, str], Deployment] = field(default_factory=dict)
    seen: list[tuple[str, str, str]] = field(default_factory=list)  # (http method, verb, resource)
    conflicts: int = 0  # 409s answered
    forbidden: set[tuple[str, str]] = field(default_factory=set)  # (verb, resource) answered with 403
    interfere: dict[str, int] = field(default_factory=dict)  # name -> writes by "someone else" to come
    vanish_after_list: set[str] = field(default_factory=set)  # deleted right after the next list
    _rv: Any = field(default_factory=lambda: itertools.count(1000))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, name: str, labels: dict[str, str], replicas: int = 1, namespace: str = "tessera") -> None:
        self.deployments[(namespace, name)] = Deployment(
            namespace, name, labels, replicas, next(self._rv), f"uid-{name}"
        )

    def replicas(self, name: str, namespace: str = "tessera") -> int:
        return self.deployments[(namespace, name)].replicas

    def rbac_seen(self) -> set[tuple[str, str]]:
        return {(verb, resource) for _, verb, resource in self.seen}

    def start(self) -> str:
        api = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # quiet: pytest shows failures, not access logs
                pass

            def do_GET(self) -> None:
                api._handle(self, "GET")

            def do_PUT(self) -> None:
                api._handle(self, "PUT")

            def do_PATCH(self) -> None:
                api._handle(self, "PATCH")

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    # --- request handling -------------------------------------------------

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
        if not path.startswith(PREFIX):
            return _status(404, "NotFound", f"the server could not find the requested resource ({path})")
        parts = path[len(PREFIX) :].split("/")
        if len(parts) == 2 and parts[1] == "deployments" and method == "GET":
            return self._list(parts[0], query.get("labelSelector", [""])[0])
        if len(parts) == 4 and parts[1] == "deployments" and parts[3] == "scale":
            verb = {"GET": "get", "PUT": "update", "PATCH": "patch"}[method]
            return self._scale(verb, method, parts[0], parts[2], body, content_type)
        return _status(404, "NotFound", f"the server could not find the requested resource ({method} {path})")

    def _deny(self, method: str, verb: str, resource: str, namespace: str, name: str = "") -> tuple[int, dict] | None:
        self.seen.append((method, verb, resource))
        if (verb, resource) not in self.forbidden:
            return None
        what = f'deployments.apps "{name}"' if name else "deployments.apps"
        return _status(
            403,
            "Forbidden",
            f'{what} is forbidden: User "{SERVICE_ACCOUNT}" cannot {verb} resource '
            f'"{resource}" in API group "apps" in the namespace "{namespace}"',
        )

    def _list(self, namespace: str, selector: str) -> tuple[int, dict]:
        denied = self._deny("GET", "list", "deployments", namespace)
        if denied:
            return denied
        try:
            match = _selector(selector)
        except ValueError as exc:
            return _status(400, "BadRequest", f"unable to parse requirement: {exc}")
        items = [d for (ns, _), d in sorted(self.deployments.items()) if ns == namespace and match(d.labels)]
        for d in items:
            if d.name in self.vanish_after_list:
                self.vanish_after_list.discard(d.name)
                del self.deployments[(namespace, d.name)]
        return 200, {
            "kind": "DeploymentList",
            "apiVersion": "apps/v1",
            "metadata": {"resourceVersion": str(next(self._rv))},
            "items": [_deployment(d) for d in items],
        }

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
        for _ in range(self.interfere.get(name, 0)):  # someone else wrote since our read
            d.replicas, d.resource_version = d.replicas + 1, next(self._rv)
        self.interfere.pop(name, None)
        try:
            replicas, precondition = _requested(json.loads(body or b"{}"), content_type, d)
        except (ValueError, KeyError, TypeError) as exc:
            return _status(400, "BadRequest", f"bad {verb} body: {exc}", name)
        if precondition and precondition != str(d.resource_version):
            self.conflicts += 1
            return _status(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on deployments.apps "{name}": the object '
                "has been modified; please apply your changes to the latest version and "
                "try again",
                name,
            )
        if not isinstance(replicas, int) or replicas < 0:
            return _status(
                422,
                "Invalid",
                f'Scale.autoscaling "{name}" is invalid: spec.replicas: Invalid value: '
                f"{replicas}: must be greater than or equal to 0",
                name,
            )
        d.replicas, d.resource_version = replicas, next(self._rv)
        return 200, _scale(d)


def _requested(body: Any, content_type: str, d: Deployment) -> tuple[Any, str]:
    """(replicas wanted, resourceVersion precondition or '') from a PUT or PATCH body."""
    if "json-patch" in content_type:
        replicas = d.replicas
        for op in body:
            if op["op"] in ("replace", "add") and op["path"] == "/spec/replicas":
                replicas = op["value"]
        return replicas, ""
    if body.get("kind", "Scale") != "Scale" and "patch" not in content_type:
        raise ValueError(f"expected a Scale, got {body.get('kind')}")
    meta = body.get("metadata") or {}
    if meta.get("name") not in (None, d.name):
        raise ValueError(f"the name of the object ({meta['name']}) does not match the name on the URL ({d.name})")
    return (body.get("spec") or {}).get("replicas", d.replicas), str(meta.get("resourceVersion") or "")


def _selector(text: str):
    tests = []
    for term in filter(None, (t.strip() for t in text.split(","))):
        if " in " in term or " notin " in term or "(" in term:
            raise ValueError(f"set-based selector {term!r} is not supported by this fake")
        if "!=" in term:
            k, v = term.split("!=", 1)
            tests.append(lambda lab, k=k, v=v: lab.get(k) != v)
        elif "=" in term:
            k, v = term.replace("==", "=").split("=", 1)
            tests.append(lambda lab, k=k, v=v: lab.get(k) == v)
        elif term.startswith("!"):
            tests.append(lambda lab, k=term[1:]: k not in lab)
        else:
            tests.append(lambda lab, k=term: k in lab)
    return lambda labels: all(t(labels) for t in tests)


def _meta(d: Deployment) -> dict:
    return {
        "name": d.name,
        "namespace": d.namespace,
        "uid": d.uid,
        "resourceVersion": str(d.resource_version),
        "creationTimestamp": "2025-01-01T00:00:00Z",
        "labels": dict(d.labels),
    }


def _deployment(d: Deployment) -> dict:
    pod = {"app.kubernetes.io/name": d.name}
    return {
        "metadata": _meta(d),
        "spec": {
            "replicas": d.replicas,
            "selector": {"matchLabels": pod},
            "template": {
                "metadata": {"labels": pod},
                "spec": {"containers": [{"name": "worker", "image": "tessera:dev"}]},
            },
        },
        "status": {"replicas": d.replicas, "readyReplicas": d.replicas},
    }


def _scale(d: Deployment) -> dict:
    meta = _meta(d)
    del meta["labels"]
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": meta,
        "spec": {"replicas": d.replicas},
        "status": {"replicas": d.replicas, "selector": f"app.kubernetes.io/name={d.name}"},
    }


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


def worker_labels(model: str, role: str, accelerator: str, vendor: str) -> dict[str, str]:
    """The labels deploy/k8s puts on a worker Deployment (services/autoscaler/worker_labels.py)."""
    return {
        "app.kubernetes.io/component": "worker",
        "tessera.ai/model": model,
        "tessera.ai/role": role,
        "tessera.ai/accelerator": accelerator,
        "tessera.ai/vendor": vendor,
    }
