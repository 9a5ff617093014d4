"""Scale the worker Deployments of ``deploy/k8s/`` through the Kubernetes API.

Each desired group maps to the one Deployment in the namespace whose labels
match it (:mod:`services.autoscaler.worker_labels`); its replica count lives in
the Deployment's ``scale`` subresource, which is all this actuator touches:

- find: ``GET  /apis/apps/v1/namespaces/{ns}/deployments?labelSelector=...``  (list deployments)
- read: ``GET  /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``      (get deployments/scale)
- set:  ``PUT  /apis/apps/v1/namespaces/{ns}/deployments/{name}/scale``      (update deployments/scale)

The write is a read-modify-write with the ``resourceVersion`` just read, so
a concurrent writer (a person running ``kubectl scale``, another tool) makes
the API answer 409 Conflict instead of one write silently losing; we then read
again and retry, a few times, skipping the write if the count is already
right. The Role in ``deploy/k8s/base/autoscaler-rbac.yaml`` grants exactly
these three verbs and nothing else (a test holds the two together).

Draining is the pod's job, since the ReplicaSet, not the autoscaler, picks
which pod goes: each worker pod has a preStop hook that runs
``python -m services.autoscaler.drain`` and a terminationGracePeriodSeconds
that covers it plus the worker's own SIGTERM drain.

Client: the official ``kubernetes`` package (kubernetes-client/python), as the
issue asks. It is synchronous, so each call runs in a thread
(``asyncio.to_thread``); an autoscaler makes a few calls per reconcile round,
which a thread serves without blocking the event loop. ``kubernetes_asyncio``
would avoid the thread but is a community port, not the official client.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError

from services.autoscaler import worker_labels
from services.autoscaler.actuator import ReplicaCountActuator, ScalingError
from services.autoscaler.desired import WorkerGroup

log = logging.getLogger("tessera.autoscaler")

CONFLICT_RETRIES = 5
IN_CLUSTER_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
T = TypeVar("T")


class KubernetesActuator(ReplicaCountActuator):
    """Worker groups as labelled Deployments, scaled through their scale subresource."""

    kind = "k8s"

    def __init__(self, api_client: client.ApiClient, namespace: str, conflict_retries: int = CONFLICT_RETRIES) -> None:
        self.api_client = api_client
        self.apps = client.AppsV1Api(api_client)
        self.namespace = namespace
        self.conflict_retries = conflict_retries

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

    async def _call(self, what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run one API call in a thread; turn its failures into errors that say what to do."""
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

    async def deployment_for(self, group: WorkerGroup) -> str:
        """The one Deployment labelled for ``group``; a clear error for none or several."""
        wanted = worker_labels.selector_string(worker_labels.selector(group))
        found = await self._call(
            "list deployments", self.apps.list_namespaced_deployment, self.namespace, label_selector=wanted
        )
        return worker_labels.only_match(
            [d.metadata.name for d in found.items if d.metadata is not None and d.metadata.name],
            group,
            f"no Deployment in namespace {self.namespace} is labelled {wanted}: apply "
            f"deploy/k8s (an overlay with group {group.name}'s model and role)",
        )

    async def _read_scale(self, name: str) -> client.V1Scale:
        return await self._call(
            f"get deployments/scale {name}", self.apps.read_namespaced_deployment_scale, name, self.namespace
        )

    async def replicas(self, group: WorkerGroup) -> int:
        scale = await self._read_scale(await self.deployment_for(group))
        return _replicas(scale)

    async def scale(self, group: WorkerGroup, replicas: int) -> None:
        if replicas < 0:
            raise ScalingError(f"group {group.name}: replicas must be >= 0, not {replicas}")
        name = await self.deployment_for(group)
        for attempt in range(self.conflict_retries + 1):
            current = await self._read_scale(name)
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
                log.info(
                    "k8s: %s changed under us (attempt %d): %s; reading it again",
                    name,
                    attempt + 1,
                    _status_message(exc),
                )
                continue
            log.info("k8s: deployment %s scaled from %d to %d", name, _replicas(current), replicas)
            return
        raise ScalingError(
            f"deployment {name} kept changing under us: {self.conflict_retries + 1} writes "
            "got 409 Conflict; another controller (an HPA?) may be scaling it"
        )

    async def close(self) -> None:
        await asyncio.to_thread(self.api_client.close)


def _replicas(scale: client.V1Scale) -> int:
    """The count a scale subresource holds (an absent spec or count is 0)."""
    return (scale.spec.replicas if scale.spec is not None else 0) or 0


def _status_message(exc: ApiException) -> str:
    """The API's own words: a Status object's message, else the raw reason."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except (ValueError, AttributeError):
        return str(exc.reason)
