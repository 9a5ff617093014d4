"""Names <-> protobuf enums for roles and finish reasons (the names in ARCHITECTURE.md).

Vendors are not here: the contract carries them as strings, the keys of vendors.yaml.
"""

from __future__ import annotations

from tessera.v1 import common_pb2 as pb

ROLES: dict[str, pb.Role] = {"mixed": pb.ROLE_MIXED, "prefill": pb.ROLE_PREFILL, "decode": pb.ROLE_DECODE}
FINISH_REASONS: dict[str, pb.FinishReason] = {
    "stop": pb.FINISH_REASON_STOP,
    "length": pb.FINISH_REASON_LENGTH,
    "abort": pb.FINISH_REASON_ABORT,
    "error": pb.FINISH_REASON_ERROR,
}


def role_value(name: str) -> pb.Role:
    try:
        return ROLES[name]
    except KeyError:
        raise ValueError(f"unknown role {name!r}; expected one of {', '.join(ROLES)}") from None


def role_name(value: int) -> str:
    return next((k for k, v in ROLES.items() if v == value), "mixed")


def finish_reason_value(name: str) -> pb.FinishReason:
    """OpenAI's finish_reason string to the enum; unknown reasons count as a stop."""
    return FINISH_REASONS.get(name, pb.FINISH_REASON_STOP)


def finish_reason_name(value: int) -> str | None:
    """The enum to OpenAI's string; None while a stream is unfinished."""
    return next((k for k, v in FINISH_REASONS.items() if v == value), None)
