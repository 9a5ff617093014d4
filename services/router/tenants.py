"""Who is calling: tenants mirrored from etcd, and the Principal a request runs as.

``tessera tenant put`` stores a TenantRecord per tenant under /tessera/v1/config/tenants/;
every router mirrors that prefix and finds a caller's tenant by the SHA-256 of its API key.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.records import TenantRecord
from tessera.runtime.etcd.watch import PrefixMirror

log = logging.getLogger("tessera.router")

NO_CEILING = 2**31 - 1  # priorities are int32 on the wire
DEFAULT_TENANT = "default"  # what a key given with --api-key / TESSERA_API_KEY runs as


@dataclass(frozen=True)
class Principal:
    """The authenticated caller of one request, as the rest of the router sees it.

    `tenant` is "" when the router is open (no keys, no tenants). Limits of 0 are unlimited;
    an empty `models` allows every model.
    """

    tenant: str
    max_priority: int = NO_CEILING
    may_set_priority: bool = True
    may_set_slo: bool = True
    may_set_profile: bool = True
    models: frozenset[str] = frozenset()
    rpm: int = 0
    tpm: int = 0

    @property
    def limited(self) -> bool:
        return self.rpm > 0 or self.tpm > 0

    def may_use(self, model: str) -> bool:
        return not self.models or model in self.models


ANONYMOUS = Principal(tenant="")  # an open router: everything allowed, nothing limited
DEFAULT = Principal(tenant=DEFAULT_TENANT)  # a --api-key key: everything allowed, nothing limited


def principal_of(record: TenantRecord) -> Principal:
    return Principal(
        tenant=record.name,
        max_priority=record.max_priority if record.allow_priority else 0,
        may_set_priority=record.allow_priority,
        may_set_slo=record.allow_slo_header,
        may_set_profile=record.allow_profile_header,
        models=frozenset(record.models),
        rpm=record.rpm,
        tpm=record.tpm,
    )


class TenantDirectory:
    """The tenants in etcd, kept current by a watch; `by_key_hash` finds a key's tenant."""

    def __init__(self, connector: EtcdConnector) -> None:
        self.by_key_hash: dict[str, Principal] = {}
        self._records: dict[str, TenantRecord] = {}
        # No resync grace: a tenant deleted while etcd was away must not keep working afterwards.
        self.mirror = PrefixMirror(connector, keys.TENANTS, on_change=self._changed, resync_grace_s=0)

    @property
    def synced(self) -> bool:
        return self.mirror.synced.is_set()

    @property
    def configured(self) -> bool:
        """Whether any tenant exists (then every request needs a key)."""
        return bool(self._records)

    def start(self) -> None:
        self.mirror.start()

    async def close(self) -> None:
        await self.mirror.close()

    def _changed(self, key: str, value: bytes | None) -> None:
        name = key.removeprefix(keys.TENANTS)
        if value is None:
            self._records.pop(name, None)
            log.info("tenant %s deleted", name)
        else:
            try:
                record = TenantRecord.from_json(value)
            except (ValueError, TypeError) as exc:
                # A broken record is dropped, so its keys stop working rather than keep old rights.
                self._records.pop(name, None)
                log.warning("tenant %s: refused its record (%s); its keys no longer authenticate", name, exc)
            else:
                self._records[name] = record
                log.info("tenant %s: %d key(s), rpm=%d, tpm=%d", name, len(record.key_sha256), record.rpm, record.tpm)
        self.by_key_hash = {h: principal_of(r) for r in self._records.values() for h in r.key_sha256}
