"""What services write under /tessera/v1/services/<kind>/<id>: where to reach them."""

from __future__ import annotations

import json
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
