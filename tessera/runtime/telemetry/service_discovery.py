"""Prometheus HTTP service discovery from the etcd registry: every service's metrics endpoint.

Prometheus' ``http_sd_configs`` fetches a JSON list of target groups
(``[{"targets": ["host:port"], "labels": {...}}]``) and scrapes what it names. Every
Tessera process registers its ``metrics_address`` in etcd already (workers under
``workers/``, routers, schedulers and autoscalers under ``services/<kind>/``), so the
document is a rendering of that registry: metric ports can stay ``0`` (any free port) and a
worker the autoscaler starts is scraped within one SD refresh.

Labels named ``__meta_tessera_*`` are for relabeling only (Prometheus drops them after it);
the series a worker exports already carry ``accelerator`` and ``vendor`` themselves.
"""

from __future__ import annotations

import json
from collections.abc import Iterable

from tessera.runtime.etcd.records import ServiceRecord, identity_from_json
from tessera.runtime.rpc.enums import role_name

KINDS = ("router", "scheduler", "autoscaler", "worker")
CONTENT_TYPE = "application/json"


def target_groups(workers: Iterable[bytes], services: Iterable[bytes], kind: str | None = None) -> list[dict]:
    """Target groups for the workers' and services' registrations (raw etcd values), one per process.

    ``kind`` keeps one service kind (a Prometheus job per kind, so routers can be scraped with
    their metrics key). A value that does not parse is skipped: one bad key must not blind
    monitoring to the rest.
    """
    groups: list[dict] = []
    if kind in (None, "worker"):
        for raw in workers:
            try:
                w = identity_from_json(raw)
            except Exception:  # noqa: BLE001 - json_format.ParseError is no ValueError
                continue
            if not w.metrics_address:
                continue
            labels = {
                "__meta_tessera_kind": "worker",
                "__meta_tessera_id": w.id,
                "__meta_tessera_model": w.model,
                "__meta_tessera_role": role_name(w.role),
                "__meta_tessera_accelerator": w.accelerator,
                "__meta_tessera_vendor": w.vendor,
                "__meta_tessera_group": w.group,
                "__meta_tessera_engine": w.engine,
            }
            groups.append({"targets": [w.metrics_address], "labels": labels})
    for raw in services:
        try:
            s = ServiceRecord.from_json(raw)
        except (ValueError, TypeError, AttributeError):  # not JSON, or not an object of the right fields
            continue
        if not s.metrics_address or s.kind not in KINDS or (kind is not None and s.kind != kind):
            continue
        groups.append(
            {"targets": [s.metrics_address], "labels": {"__meta_tessera_kind": s.kind, "__meta_tessera_id": s.id}}
        )
    groups.sort(key=lambda g: (g["labels"]["__meta_tessera_kind"], g["targets"][0]))
    return groups


def document(workers: Iterable[bytes], services: Iterable[bytes], kind: str | None = None) -> bytes:
    return json.dumps(target_groups(workers, services, kind)).encode()
