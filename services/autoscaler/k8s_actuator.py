"""Run the desired worker groups on Kubernetes: one Deployment per planned shape, created, kept and removed.

Each round (:meth:`KubernetesActuator.converge`) the actuator reads the worker PodTemplates
(deploy/k8s/worker/) and the Deployments it manages (``app.kubernetes.io/managed-by:
tessera-autoscaler``), renders one Deployment per group with replicas > 0
(:mod:`services.autoscaler.k8s_workload`: resources = TP devices, the model in an annotation,
a name stable for the shape) and then, per Deployment:

- missing: **create** it (``POST .../deployments``);
- more replicas than planned: **drain, then scale down**: pick the pods to go (not ready, then the
  newest), call each one's ``Drain`` RPC and wait for its requests to finish (as the local actuator
  does), mark them with ``controller.kubernetes.io/pod-deletion-cost`` so the ReplicaSet removes
  exactly those, then write the count (``PUT .../deployments/NAME/scale``);
- its rendered spec changed (a new template, image or argument): **update** it (``PUT`` with the
  ``resourceVersion`` just read; a rolling update, each old pod drained by its preStop hook);
- fewer replicas than planned: **scale up**;
- no longer planned (a group at 0, a shape replaced): drain all its pods, then **delete** it;
  a replaced shape only once its successor's pods are all ready (make before break), or after
  RESHAPE_GRACE_S if they cannot start beside it (a full cluster).

Writes carry the ``resourceVersion`` just read, so a concurrent writer (``kubectl scale``, an
HPA) makes the API answer 409 Conflict instead of one write silently losing; we read again and
retry a few times. Only Deployments labelled as ours are ever changed or deleted. The Role in
deploy/k8s/base/autoscaler-rbac.yaml grants exactly these calls (a test holds the two together).
A group that cannot be rendered (no template for its accelerator) keeps whatever runs for it.

Client: the official ``kubernetes`` package. It is synchronous, so each call runs in a thread
(``asyncio.to_thread``); an autoscaler makes a few calls per round.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from services.autoscaler import k8s_workload as wl
from services.autoscaler import worker_labels
from services.autoscaler.actuator import Action, Converged, ScalingError
from services.autoscaler.desired import WorkerGroup
from services.autoscaler.drain import DEFAULT_TIMEOUT_S, drain_worker

log = logging.getLogger("tessera.autoscaler")

CONFLICT_RETRIES = 5
# A reshaped group keeps its old pods until the new ones are ready, but not for ever: on a full
# cluster the new pods wait for the old ones' devices (Pending), so after this the old ones go.
RESHAPE_GRACE_S = 900.0
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
OURS = f"{wl.MANAGED_BY}={wl.MANAGER},{worker_labels.COMPONENT}={worker_labels.WORKER}"
TEMPLATES = f"{worker_labels.COMPONENT}={wl.TEMPLATE_COMPONENT}"
# Lower goes first when a ReplicaSet shrinks; drained pods get this, the rest keep the default 0.
DRAINED_COST = "-1000"
MERGE_PATCH = "application/merge-patch+json"
T = TypeVar("T")
Drain = Callable[[str, float], Awaitable[int]]


class KubernetesActuator:
    """Worker groups as Deployments this autoscaler creates, scales (draining first) and deletes."""

    kind = "k8s"

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        conflict_retries: int = CONFLICT_RETRIES,
        drain_timeout_s: float = DEFAULT_TIMEOUT_S,
        drain: Drain = drain_worker,
        reshape_grace_s: float = RESHAPE_GRACE_S,
    ) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.core = client.CoreV1Api(api_client)
        self.namespace = namespace
        self.conflict_retries = conflict_retries
        self.drain_timeout_s = drain_timeout_s
        self.drain = drain
        self.reshape_grace_s = reshape_grace_s

    @classmethod
    def from_environment(
        cls, namespace: str | None = None, kubeconfig: str | None = None, context: str | None = None
    ) -> KubernetesActuator:
        """In a pod: its service account and namespace. Elsewhere: the kubeconfig (``$KUBECONFIG``,
        ``~/.kube/config``)."""
        cfg = client.Configuration()
        if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
            config.load_incluster_config(client_configuration=cfg)
            if namespace is None and IN_CLUSTER_NAMESPACE.exists():
                namespace = IN_CLUSTER_NAMESPACE.read_text().strip()
        else:
            try:
                config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=cfg)
                if namespace is None:
                    contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
                    chosen = next((c for c in contexts if c["name"] == context), active) if context else active
                    namespace = (chosen.get("context") or {}).get("namespace")
            except config.ConfigException as exc:
                raise ScalingError(f"no usable Kubernetes configuration: {exc}") from None
        return cls(client.ApiClient(cfg), namespace or "default")

    # --- API calls --------------------------------------------------------

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one API call in a thread; turn its failures into errors that say what to do (409 passes)."""
        try:
            return await asyncio.to_thread(fn, *args, **kwargs)
        except ApiException as exc:
            if exc.status == 409:
                raise
            raise ScalingError(self._explain(what, exc)) from None
        except HTTPError as exc:
            raise ScalingError(
                f"cannot reach the Kubernetes API at {self.api_client.configuration.host} to {what}: {exc}"
            ) from None

    def _explain(self, what: str, exc: ApiException) -> str:
        message = _status_message(exc)
        if exc.status == 403:
            return (
                f"not allowed to {what} in namespace {self.namespace}: {message} "
                "(the autoscaler's ServiceAccount needs the Role in deploy/k8s/base/autoscaler-rbac.yaml)"
            )
        if exc.status == 401:
            return f"the Kubernetes API rejected our credentials to {what}: {message}"
        if exc.status == 404:
            return f"cannot {what}: {message}"
        return f"cannot {what}: HTTP {exc.status} {exc.reason}: {message}"

    def _plain(self, obj: Any) -> Any:
        """An API object as the plain JSON the API sent (camelCase keys)."""
        return self.api_client.sanitize_for_serialization(obj)

    async def templates(self) -> list[dict[str, Any]]:
        found = await self._call(
            "list podtemplates", self.core.list_namespaced_pod_template, self.namespace, label_selector=TEMPLATES
        )
        return [self._plain(t) for t in found.items]

    async def managed(self) -> dict[str, dict[str, Any]]:
        """Our worker Deployments by name."""
        found = await self._call(
            "list deployments", self.apps.list_namespaced_deployment, self.namespace, label_selector=OURS
        )
        return {d.metadata.name: self._plain(d) for d in found.items if d.metadata is not None and d.metadata.name}

    # --- converging -------------------------------------------------------

    async def converge(self, groups: list[WorkerGroup]) -> Converged:
        out = Converged(replicas={g.name: 0 for g in groups})
        errors: list[str] = []
        templates = await self.templates()
        existing = await self.managed()
        wanted: dict[str, tuple[WorkerGroup, dict[str, Any]]] = {}
        keep: set[str] = set()  # groups we could not render: what runs for them stays
        for group in groups:
            if group.replicas == 0:
                continue
            try:
                body = wl.render(group, wl.pick_template(templates, group), self.namespace)
            except wl.TemplateError as exc:
                log.warning("k8s: %s", exc)
                errors.append(str(exc))
                keep.add(group.name)
                continue
            wanted[body["metadata"]["name"]] = (group, body)

        for name, (group, body) in wanted.items():
            try:
                await self._keep(existing.get(name), group, body, out)
                out.replicas[group.name] += group.replicas
            except ScalingError as exc:
                log.warning("k8s: group %s: %s", group.name, exc)
                errors.append(f"{group.name}: {exc}")

        replacing = {g.name: n for n, (g, _) in wanted.items()}  # group -> its current shape's Deployment
        for name, current in existing.items():
            group_name = (current["metadata"].get("annotations") or {}).get(wl.GROUP_ANNOTATION, "")
            if name in wanted or group_name in keep:
                continue
            successor = existing.get(replacing.get(group_name, ""))
            if group_name in replacing and not _available(successor) and _age_s(successor) < self.reshape_grace_s:
                # Make before break: a reshaped group keeps its old pods until the new ones serve.
                out.replicas[group_name] += int((current.get("spec") or {}).get("replicas") or 0)
                continue
            try:
                await self._remove(name, current, group_name)
                out.actions.append(Action("stop", group_name, name, "no longer planned"))
            except ScalingError as exc:
                log.warning("k8s: deployment %s: %s", name, exc)
                errors.append(f"{name}: {exc}")
        if errors:
            raise ScalingError("; ".join(errors))
        return out

    async def _keep(
        self, current: dict[str, Any] | None, group: WorkerGroup, body: dict[str, Any], out: Converged
    ) -> None:
        """Make one Deployment match ``body`` at ``group.replicas``."""
        name = body["metadata"]["name"]
        if current is None:
            await self._call(
                f"create deployment {name}",
                self.apps.create_namespaced_deployment,
                self.namespace,
                client.V1Deployment.from_dict(body),
            )
            log.info("k8s: created deployment %s for group %s (%d replicas)", name, group.name, group.replicas)
            out.actions.append(Action("start", group.name, name, f"new shape, {group.replicas} replicas"))
            return
        have = int((current.get("spec") or {}).get("replicas") or 0)
        if have > group.replicas:
            await self._scale_down(name, current, group.replicas)
            out.actions.append(Action("scale", group.name, name, f"{have} -> {group.replicas} replicas"))
        annotations = current["metadata"].get("annotations") or {}
        if annotations.get(wl.SPEC_HASH) != body["metadata"]["annotations"][wl.SPEC_HASH]:
            await self._update(name, body)
            out.actions.append(Action("restart", group.name, name, "template or arguments changed"))
        elif have < group.replicas:
            await self._scale(name, group.replicas)
            out.actions.append(Action("scale", group.name, name, f"{have} -> {group.replicas} replicas"))

    async def _update(self, name: str, body: dict[str, Any]) -> None:
        """Rewrite the Deployment with ``body`` (replicas included), on the resourceVersion just read."""
        for attempt in range(self.conflict_retries + 1):
            current = await self._call(
                f"get deployment {name}", self.apps.read_namespaced_deployment, name, self.namespace
            )
            version = current.metadata.resource_version if current.metadata else None
            fresh = {**body, "metadata": {**body["metadata"], "resourceVersion": version}}
            try:
                await self._call(
                    f"update deployment {name}",
                    self.apps.replace_namespaced_deployment,
                    name,
                    self.namespace,
                    client.V1Deployment.from_dict(fresh),
                )
            except ApiException as exc:  # only 409 gets here
                log.info("k8s: %s changed under us (attempt %d): %s", name, attempt + 1, _status_message(exc))
                continue
            log.info("k8s: updated deployment %s (rolling update)", name)
            return
        raise self._kept_changing(name)

    async def _scale(self, name: str, replicas: int) -> None:
        """Set the replica count through the scale subresource, on the resourceVersion just read."""
        for attempt in range(self.conflict_retries + 1):
            current = await self._call(
                f"get deployments/scale {name}", self.apps.read_namespaced_deployment_scale, name, self.namespace
            )
            if _replicas(current) == replicas:
                return
            body = client.V1Scale(
                metadata=client.V1ObjectMeta(
                    name=name,
                    namespace=self.namespace,
                    resource_version=current.metadata.resource_version if current.metadata else None,
                ),
                spec=client.V1ScaleSpec(replicas=replicas),
            )
            try:
                await self._call(
                    f"update deployments/scale {name}",
                    self.apps.replace_namespaced_deployment_scale,
                    name,
                    self.namespace,
                    body,
                )
            except ApiException as exc:  # only 409 gets here
                log.info("k8s: %s changed under us (attempt %d): %s", name, attempt + 1, _status_message(exc))
                continue
            log.info("k8s: deployment %s scaled from %d to %d", name, _replicas(current), replicas)
            return
        raise self._kept_changing(name)

    def _kept_changing(self, name: str) -> ScalingError:
        return ScalingError(
            f"deployment {name} kept changing under us: {self.conflict_retries + 1} writes "
            "got 409 Conflict; another controller (an HPA?) may be scaling it"
        )

    async def _pods(self, current: Mapping[str, Any]) -> list[dict[str, Any]]:
        selector = ",".join(f"{k}={v}" for k, v in sorted(current["spec"]["selector"]["matchLabels"].items()))
        found = await self._call("list pods", self.core.list_namespaced_pod, self.namespace, label_selector=selector)
        return [self._plain(p) for p in found.items]

    async def _drain_pods(self, pods: list[dict[str, Any]]) -> None:
        """Drain each pod's worker (no new requests, wait for those in flight), all at once."""

        async def one(pod: dict[str, Any]) -> None:
            ip = (pod.get("status") or {}).get("podIP")
            if not ip:
                return  # never started: nothing to drain
            port = wl.worker_grpc_port(pod.get("spec") or {})
            left = await self.drain(f"{ip}:{port}", self.drain_timeout_s)
            if left:
                log.warning("k8s: pod %s still had %d request(s) in flight; its preStop hook drains it again", ip, left)

        await asyncio.gather(*(one(p) for p in pods))

    async def _scale_down(self, name: str, current: Mapping[str, Any], replicas: int) -> None:
        """Drain the pods that are to go, mark them for the ReplicaSet, then lower the count."""
        pods = await self._pods(current)
        have = int(current["spec"].get("replicas") or 0)
        victims = wl.pods_to_remove([_view(p) for p in pods], have - replicas)
        chosen = [p for p in pods if p["metadata"]["name"] in {v.name for v in victims}]
        await self._drain_pods(chosen)
        for pod in chosen:
            pod_name = pod["metadata"]["name"]
            await self._call(
                f"patch pod {pod_name}",
                self.core.patch_namespaced_pod,
                pod_name,
                self.namespace,
                {"metadata": {"annotations": {wl.DELETION_COST: DRAINED_COST}}},
                _content_type=MERGE_PATCH,
            )
        log.info(
            "k8s: drained %s; scaling %s to %d", ", ".join(sorted(v.name for v in victims)) or "nothing", name, replicas
        )
        await self._scale(name, replicas)

    async def _remove(self, name: str, current: Mapping[str, Any], group: str) -> None:
        """Drain every pod of a Deployment no longer planned, then delete it (its pods go with it)."""
        await self._drain_pods(await self._pods(current))
        await self._call(
            f"delete deployment {name}",
            self.apps.delete_namespaced_deployment,
            name,
            self.namespace,
            propagation_policy="Background",
        )
        log.info("k8s: deleted deployment %s (group %s)", name, group or "?")

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)


def _available(deployment: Mapping[str, Any] | None) -> bool:
    """All the Deployment's replicas are ready (as of the listing this round began with)."""
    if deployment is None:
        return False
    want = int((deployment.get("spec") or {}).get("replicas") or 0)
    return int((deployment.get("status") or {}).get("readyReplicas") or 0) >= want


def _age_s(deployment: Mapping[str, Any] | None) -> float:
    """Seconds since the Deployment was created (0 for one not listed yet: it was just created)."""
    created = ((deployment or {}).get("metadata") or {}).get("creationTimestamp")
    if not created:
        return 0.0
    when = datetime.fromisoformat(str(created).replace("Z", "+00:00"))
    return (datetime.now(UTC) - when).total_seconds()


def _view(pod: Mapping[str, Any]) -> wl.PodView:
    meta, status = pod.get("metadata") or {}, pod.get("status") or {}
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
    try:
        cost = int((meta.get("annotations") or {}).get(wl.DELETION_COST, "0"))
    except ValueError:
        cost = 0
    return wl.PodView(meta.get("name", ""), status.get("podIP") or "", ready, meta.get("creationTimestamp") or "", cost)


def _replicas(scale: client.V1Scale) -> int:
    """The count a scale subresource holds (an absent spec or count is 0)."""
    return (scale.spec.replicas if scale.spec is not None else 0) or 0


def _status_message(exc: ApiException) -> str:
    """The API's own words: a Status object's message, else the raw reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
