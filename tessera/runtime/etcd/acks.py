"""Services' verdicts on the documents they watch, so whoever wrote one learns whether it took effect.

A scheduler that loads (or refuses) a placement profile, and an autoscaler that
loads (or refuses) an SLO policy, records ``Ack(service, revision, accepted,
reason)`` under ``/tessera/v1/acks/<document>/<service id>``, under a lease of
its own: a service that dies takes its verdicts with it, so a stale "accepted"
never outlives the process that gave it. ``tessera profile put`` and
``tessera slo put`` read them back (``summarize``) after writing.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.registration import DEFAULT_TTL_S, LeasedKeys


@dataclass(frozen=True)
class Ack:
    service: str  # the service's id (its registration under services/<kind>/)
    kind: str  # "scheduler" | "autoscaler"
    revision: int  # the document's mod_revision the verdict is about
    accepted: bool
    reason: str = ""  # why it was refused

    def to_json(self) -> bytes:
        return json.dumps(asdict(self)).encode()

    @classmethod
    def from_json(cls, raw: bytes) -> Ack:
        data = json.loads(raw)
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class Acknowledger:
    """One service's verdicts, kept under one lease for as long as the service runs."""

    def __init__(self, connector: EtcdConnector, kind: str, service_id: str, ttl: int = DEFAULT_TTL_S) -> None:
        self.kind, self.service_id = kind, service_id
        self._keys = LeasedKeys(connector, f"acks of {service_id}", ttl)

    def start(self) -> None:
        self._keys.start()

    def record(self, document_key: str, revision: int, accepted: bool, reason: str = "") -> None:
        ack = Ack(self.service_id, self.kind, revision, accepted, reason)
        self._keys.set(keys.ack(document_key, self.service_id), ack.to_json())

    async def close(self) -> None:
        await self._keys.close()


@dataclass(frozen=True)
class Verdict:
    """What the writer of revision ``revision`` is told: one line per running service, and the outcome."""

    lines: list[str]
    refused: bool
    complete: bool  # every running service has answered (for this revision or a later one)


def summarize(kind: str, running: list[str], acks: list[Ack], revision: int, waited_s: float) -> Verdict:
    """The services' verdicts on ``revision`` of a document, from their acks (plain data in, lines out)."""
    by_service = {a.service: a for a in acks}
    if not running:
        return Verdict([f"no {kind} is running; one loads it when it starts"], refused=False, complete=True)
    lines, refused, answered = [], False, 0
    for sid in sorted(running):
        ack = by_service.get(sid)
        if ack is None or ack.revision < revision:
            continue
        answered += 1
        if ack.revision > revision:
            lines.append(f"{kind} {sid} has since seen revision {ack.revision}, written after this one")
        elif ack.accepted:
            lines.append(f"accepted by {kind} {sid} at revision {revision}")
        else:
            refused = True
            lines.append(f"refused by {kind} {sid} at revision {revision}: {ack.reason}")
    if answered == 0:
        lines.append(f"no running {kind} acknowledged it within {waited_s:g} s")
    elif answered < len(running):
        silent = ", ".join(s for s in sorted(running) if s not in by_service or by_service[s].revision < revision)
        lines.append(f"no answer within {waited_s:g} s from {kind} {silent}")
    return Verdict(lines, refused, answered == len(running))
