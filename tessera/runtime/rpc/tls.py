"""TLS for the internal gRPC APIs: one CA, one certificate per service, client certificates required.

Every internal server (scheduler, autoscaler, worker) requires a client
certificate signed by the cluster's CA, and every channel presents the
process's own certificate; the role that certificate names
(``spiffe://tessera/<role>``, see ``authz.py``) is what the servers authorize.

The other way round, every channel names the role it dials (``channel(address,
"scheduler")``) and accepts only a server certificate listing that role's DNS
name, ``scheduler.tessera.internal`` (``authz.role_name``; the domain is
``--tls-role-domain``): gRPC checks it in place of the address
(``grpc.ssl_target_name_override``), so a worker's certificate cannot pass for
the scheduler, whatever address etcd advertises for it. grpc-python has no
hook for a custom verification of the server's certificate, and the name check
it does have is what TLS clients are built to trust.
The router's own gRPC API is the public front door: it is served with TLS but
without asking clients for a certificate (``start_server(..., public=True)``).

The configuration is process-wide (``configure``), set once at start-up from
flags or the environment, because every channel a service opens (to
schedulers, to workers, to etcd-discovered peers) must present the same
identity, and threading it through every constructor would buy nothing.

Without TLS the services keep working as before on loopback; binding an
internal server to any other address then needs ``--insecure``
(``check_bind``), so a cluster is never exposed in plaintext by accident.
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import grpc

from tessera.runtime.rpc.authz import ROLE_DOMAIN, ROLES, role_name

ENV_CA = "TESSERA_TLS_CA"
ENV_CERT = "TESSERA_TLS_CERT"
ENV_KEY = "TESSERA_TLS_KEY"
# The DNS domain of the role names server certificates carry (<role>.<domain>) and channels check.
ENV_ROLE_DOMAIN = "TESSERA_TLS_ROLE_DOMAIN"
ENV_INSECURE = "TESSERA_INSECURE"


class TLSConfigError(ValueError):
    """TLS is half configured, or its files cannot be read: the service must not start."""


@dataclass(frozen=True)
class TLSConfig:
    """The cluster CA and this process's own certificate and key (PEM bytes)."""

    ca: bytes
    cert: bytes
    key: bytes
    role_domain: str = ROLE_DOMAIN

    @classmethod
    def from_files(cls, ca: str, cert: str, key: str, role_domain: str = ROLE_DOMAIN) -> TLSConfig:
        try:
            return cls(Path(ca).read_bytes(), Path(cert).read_bytes(), Path(key).read_bytes(), role_domain)
        except OSError as exc:
            raise TLSConfigError(f"cannot read TLS file {exc.filename}: {exc.strerror}") from None

    def server_credentials(self, require_client_cert: bool = True) -> grpc.ServerCredentials:
        """Our certificate; with ``require_client_cert`` a handshake without a CA-signed client certificate fails."""
        return grpc.ssl_server_credentials(
            [(self.key, self.cert)], root_certificates=self.ca, require_client_auth=require_client_cert
        )

    def channel_credentials(self) -> grpc.ChannelCredentials:
        """Trust only the cluster CA, and present our own certificate (our role) to the server."""
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca, private_key=self.key, certificate_chain=self.cert
        )

    def channel_options(self, role: str) -> list[tuple[str, str]]:
        """Verify the server's certificate against ``role``'s name, not the address dialed."""
        if role not in ROLES:
            raise ValueError(f"unknown role {role!r}")
        return [("grpc.ssl_target_name_override", role_name(role, self.role_domain))]


_active: TLSConfig | None = None


def active() -> TLSConfig | None:
    """The process's TLS configuration, or None (plaintext, loopback only unless --insecure)."""
    return _active


def set_active(config: TLSConfig | None) -> None:
    global _active
    _active = config


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags every service and gRPC-speaking command takes; the environment gives their defaults."""
    p.add_argument("--tls-ca", default=os.environ.get(ENV_CA, ""), help=f"CA certificate (PEM; env {ENV_CA})")
    p.add_argument(
        "--tls-cert",
        default=os.environ.get(ENV_CERT, ""),
        help=f"this service's certificate, naming its role (PEM; env {ENV_CERT})",
    )
    p.add_argument("--tls-key", default=os.environ.get(ENV_KEY, ""), help=f"its private key (PEM; env {ENV_KEY})")
    p.add_argument(
        "--tls-role-domain",
        default=os.environ.get(ENV_ROLE_DOMAIN, ROLE_DOMAIN),
        help="servers' certificates must list <role>.<this domain> for the role a channel dials "
        f"(env {ENV_ROLE_DOMAIN})",
    )
    p.add_argument(
        "--insecure",
        action="store_true",
        default=os.environ.get(ENV_INSECURE, "") not in ("", "0"),
        help=f"allow plaintext gRPC on a non-loopback address (env {ENV_INSECURE}=1); never on an untrusted network",
    )


def config_from_args(args: argparse.Namespace) -> TLSConfig | None:
    """The TLS configuration the flags name, None when none is given; all three files or none."""
    files = {"--tls-ca": args.tls_ca, "--tls-cert": args.tls_cert, "--tls-key": args.tls_key}
    given = [flag for flag, value in files.items() if value]
    if not given:
        return None
    if len(given) < len(files):
        missing = ", ".join(flag for flag in files if flag not in given)
        raise TLSConfigError(f"TLS needs a CA, a certificate and a key: {missing} missing")
    domain = getattr(args, "tls_role_domain", "") or ROLE_DOMAIN
    return TLSConfig.from_files(args.tls_ca, args.tls_cert, args.tls_key, domain)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) reaches only this machine."""
    if not host:
        return False  # ":port" listens on every interface
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(info[4][0]).is_loopback for info in socket.getaddrinfo(host, None))
        except (OSError, ValueError):
            return False


def check_bind(host: str, config: TLSConfig | None, insecure: bool) -> None:
    """Refuse to serve internal APIs in plaintext beyond loopback unless told to (``--insecure``)."""
    if config is None and not insecure and not is_loopback(host):
        raise TLSConfigError(
            f"refusing to serve internal gRPC on {host} without TLS: pass --tls-ca/--tls-cert/--tls-key "
            f"(or {ENV_CA}/{ENV_CERT}/{ENV_KEY}), or --insecure on a trusted network"
        )


def configure(args: argparse.Namespace, bind_host: str | None = None) -> TLSConfig | None:
    """Load TLS from ``args``, check the bind address, make it the process's configuration.

    Raises TLSConfigError with one line to log; services then exit with code 2.
    """
    config = config_from_args(args)
    if bind_host is not None:
        check_bind(bind_host, config, args.insecure)
    set_active(config)
    return config
