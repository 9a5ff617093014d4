"""The labels that tie a desired worker group to a compose service, and that Kubernetes workers carry.

The compose actuator finds "the service that runs this group" by these labels; the Kubernetes
actuator creates its Deployments (services/autoscaler/k8s_workload.py) with the same labels, so
dashboards and selectors read both alike:

===========================  ===================================================
``tessera.ai/model``         the model as groups name it (``smollm2``, ``tiny``)
``tessera.ai/role``          ``mixed`` | ``prefill`` | ``decode``
``tessera.ai/accelerator``   a catalog accelerator (``h100-sxm``, ``mi300x``, ``cpu``)
``tessera.ai/vendor``        ``nvidia`` | ``amd`` | ``tenstorrent`` | ``cpu``
===========================  ===================================================

A group matches on model and role always. Its ``accelerator`` narrows the
match: ``auto`` adds nothing (the one unit of that model and role, whatever it
runs on), a vendor name matches ``tessera.ai/vendor`` (any NVIDIA part), any
other name matches ``tessera.ai/accelerator`` (exactly that part: what the
planner picks from the catalog). Values are made valid label values by
:func:`label_value`, so a model named by a path or hub id still has a label.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from services.autoscaler.actuator import ScalingError
from services.autoscaler.desired import WorkerGroup
from tessera.engine_model.catalog.vendors import vendor_names

MODEL = "tessera.ai/model"
ROLE = "tessera.ai/role"
ACCELERATOR = "tessera.ai/accelerator"
VENDOR = "tessera.ai/vendor"
COMPONENT = "app.kubernetes.io/component"
WORKER = "worker"

# A group's accelerator that names a vendor (a vendors.yaml key) matches any part of that vendor.
VENDORS = frozenset(vendor_names())

_INVALID = re.compile(r"[^a-z0-9._-]+")


def label_value(text: str) -> str:
    """``text`` as a Kubernetes label value: lowercase, ``[a-z0-9._-]``, alphanumeric ends, at most 63 chars."""
    value = _INVALID.sub("-", text.lower())[:63]
    return value.strip("-._")


def selector(group: WorkerGroup) -> dict[str, str]:
    """The labels a worker unit must carry to run ``group``."""
    wanted = {COMPONENT: WORKER, MODEL: label_value(group.model), ROLE: group.role}
    if group.accelerator in VENDORS:
        wanted[VENDOR] = group.accelerator
    elif group.accelerator != "auto":
        wanted[ACCELERATOR] = label_value(group.accelerator)
    return wanted


def selector_string(labels: Mapping[str, str]) -> str:
    """An equality-based label selector, as the Kubernetes API and kubectl take it."""
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items()))


def matches(labels: Mapping[str, str], group: WorkerGroup) -> bool:
    return all(labels.get(k) == v for k, v in selector(group).items())


def only_match(found: list[str], group: WorkerGroup, missing: str) -> str:
    """The one unit in ``found`` that runs ``group``: ``missing`` explains none; several are ambiguous."""
    if not found:
        raise ScalingError(missing)
    if len(found) > 1:
        raise ScalingError(
            f"several worker units match group {group.name} ({', '.join(sorted(found))}): "
            "name its accelerator or vendor in the desired state"
        )
    return found[0]
