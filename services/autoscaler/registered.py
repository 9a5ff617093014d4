"""The workers etcd knows, mirrored for the controller and the local actuator.

Workers register themselves under /tessera/v1/workers/ with a lease: that is the truth about
which ones serve. The controller counts them as ready; the local actuator also needs them, to
adopt workers a previous leader started, to tell a worker that died before registering (a
crash loop to back off) from one that served, and to reach a worker it drains.
"""

from __future__ import annotations

from collections.abc import Callable

from tessera.runtime.etcd import keys
from tessera.runtime.etcd.client import EtcdConnector
from tessera.runtime.etcd.records import identity_from_json
from tessera.runtime.etcd.watch import PrefixMirror
from tessera.v1 import common_pb2 as pb


class RegisteredWorkers:
    """Worker id -> identity, kept current from etcd; listeners hear of every change."""

    def __init__(self, connector: EtcdConnector) -> None:
        self.workers: dict[str, pb.WorkerIdentity] = {}
        self._listeners: list[Callable[[str, pb.WorkerIdentity | None], None]] = []
        self._mirror = PrefixMirror(connector, keys.WORKERS, on_change=self._changed)

    def listen(self, fn: Callable[[str, pb.WorkerIdentity | None], None]) -> None:
        """Call ``fn(worker_id, identity)`` on each registration, ``fn(worker_id, None)`` on each departure."""
        self._listeners.append(fn)

    def _changed(self, key: str, value: bytes | None) -> None:
        worker_id = key.rsplit("/", 1)[-1]
        identity = None if value is None else identity_from_json(value)
        if identity is None:
            self.workers.pop(worker_id, None)
        else:
            self.workers[worker_id] = identity
        for fn in self._listeners:
            fn(worker_id, identity)

    def start(self) -> None:
        self._mirror.start()

    async def close(self) -> None:
        await self._mirror.close()
