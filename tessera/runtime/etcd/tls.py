"""etcd over TLS with client certificates: the client side, and the flags and environment that set it.

etcd holds the cluster's membership: whoever can write to it can register a
worker or rewrite placement profiles. With ``--client-cert-auth`` etcd accepts
only clients whose certificate our CA signed; every Tessera process then
connects with one (``TESSERA_ETCD_CA``/``_CERT``/``_KEY``, or the flags).

aetcd 1.0 opens its channel with ``insecure_channel`` and takes no
credentials, so ``TLSClient`` overrides only ``connect`` to open a secure
channel and build the same stubs (it leaves out aetcd's user/password login,
which a certificate replaces).
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aetcd
import grpc
from aetcd import rpc, watcher

ENV_CA = "TESSERA_ETCD_CA"
ENV_CERT = "TESSERA_ETCD_CERT"
ENV_KEY = "TESSERA_ETCD_KEY"


class EtcdTLSError(ValueError):
    """etcd TLS is half configured, or its files cannot be read."""


@dataclass(frozen=True)
class EtcdTLS:
    """Paths (PEM) of the CA etcd's certificate is signed by, and our client certificate and key."""

    ca: str
    cert: str
    key: str

    def credentials(self) -> grpc.ChannelCredentials:
        try:
            ca, cert, key = (Path(p).read_bytes() for p in (self.ca, self.cert, self.key))
        except OSError as exc:
            raise EtcdTLSError(f"cannot read etcd TLS file {exc.filename}: {exc.strerror}") from None
        return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


def from_values(ca: str, cert: str, key: str) -> EtcdTLS | None:
    """All three paths or none: a half configuration is an error, not plaintext."""
    given = [v for v in (ca, cert, key) if v]
    if not given:
        return None
    if len(given) < 3:
        raise EtcdTLSError("etcd TLS needs a CA, a client certificate and a key (--etcd-ca/--etcd-cert/--etcd-key)")
    return EtcdTLS(ca, cert, key)


_UNSET: Any = object()
_active: EtcdTLS | None = _UNSET


def active() -> EtcdTLS | None:
    """The process's etcd TLS: what ``configure`` set, else the environment's."""
    global _active
    if _active is _UNSET:
        _active = from_values(*(os.environ.get(n, "") for n in (ENV_CA, ENV_CERT, ENV_KEY)))
    return _active


def set_active(config: EtcdTLS | None) -> None:
    global _active
    _active = config


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--etcd-ca", default=os.environ.get(ENV_CA, ""), help=f"etcd's CA (PEM; env {ENV_CA})")
    p.add_argument(
        "--etcd-cert", default=os.environ.get(ENV_CERT, ""), help=f"client certificate for etcd (env {ENV_CERT})"
    )
    p.add_argument("--etcd-key", default=os.environ.get(ENV_KEY, ""), help=f"its key (env {ENV_KEY})")


def configure(args: argparse.Namespace) -> EtcdTLS | None:
    """Set the process's etcd TLS from ``args`` (those without the flags: from the environment)."""
    if not hasattr(args, "etcd_ca"):
        return active()
    config = from_values(args.etcd_ca, args.etcd_cert, args.etcd_key)
    set_active(config)
    return config


def flags(config: EtcdTLS | None) -> list[str]:
    """The flags that give a child process the same etcd TLS."""
    if config is None:
        return []
    return ["--etcd-ca", config.ca, "--etcd-cert", config.cert, "--etcd-key", config.key]


class TLSClient(aetcd.Client):
    """An aetcd client whose channel is TLS with a client certificate."""

    def __init__(self, credentials: grpc.ChannelCredentials, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]  # another task is connecting: wait, as aetcd does
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        try:
            self._is_connecting = True
            target = f"{self._host}:{self._port}"
            self.channel = grpc.aio.secure_channel(target, self._credentials, options=list(self._options.items()))
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout, metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False
