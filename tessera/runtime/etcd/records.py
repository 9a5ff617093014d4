"""Records kept in etcd: services (where to reach them, under services/<kind>/<id>) and tenants."""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from dataclasses import asdict, dataclass, field

from google.protobuf import json_format

from tessera.v1 import common_pb2 as pb


@dataclass
class ServiceRecord:
    id: str
    kind: str  # "router" | "scheduler" | "autoscaler"
    address: str = ""  # gRPC host:port
    http_address: str = ""  # HTTP host:port, if any
    metrics_address: str = ""
    started_at_unix_ms: int = 0
    extra: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> ServiceRecord:
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


def identity_to_json(identity: pb.WorkerIdentity) -> bytes:
    return json_format.MessageToJson(identity, indent=None, preserving_proto_field_name=True).encode()


def identity_from_json(raw: bytes) -> pb.WorkerIdentity:
    return json_format.Parse(raw, pb.WorkerIdentity(), ignore_unknown_fields=True)


TENANT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
API_KEY_PREFIX = "sk-"


def hash_api_key(key: str) -> str:
    """What etcd keeps of an API key: its SHA-256, hex. The key itself is never stored."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    """A fresh key, OpenAI-style: ``sk-`` and 256 random bits (43 URL-safe characters)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


@dataclass
class TenantRecord:
    """One tenant under /tessera/v1/config/tenants/<name>: who it is, what it may use and how much.

    Limits of 0 mean unlimited; an empty `models` means every model. The `allow_*` flags say
    whether its clients may set a request's priority, the x-slo-ttft-ms header and the
    x-tessera-profile header; all off by default (the router refuses such a request with 403).
    """

    name: str
    key_sha256: list[str] = field(default_factory=list)
    models: list[str] = field(default_factory=list)
    rpm: int = 0  # requests per minute, across all routers
    tpm: int = 0  # tokens per minute (prompt + max_tokens, charged at admission), across all routers
    max_priority: int = 0  # the highest `priority` its clients may ask for (when allow_priority)
    allow_priority: bool = False
    allow_slo_header: bool = False
    allow_profile_header: bool = False

    def __post_init__(self) -> None:
        if not TENANT_NAME.match(self.name):
            raise ValueError(f"bad tenant name {self.name!r}: letters, digits, '.', '_', '-' (at most 64)")
        if self.rpm < 0 or self.tpm < 0:
            raise ValueError("rpm and tpm must be >= 0 (0: unlimited)")
        for h in self.key_sha256:
            if len(h) != 64 or any(c not in "0123456789abcdef" for c in h):
                raise ValueError(f"tenant {self.name}: key_sha256 entries must be SHA-256 hex digests")

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), indent=2).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> TenantRecord:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("a tenant record is a JSON object")
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})
