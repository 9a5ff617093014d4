"""A throwaway certificate authority: one CA and a certificate per role, for local clusters and tests.

``tessera up --tls`` and the tests make one per run; a real deployment brings
its own CA (cert-manager, SPIFFE, a corporate PKI) and only has to put
``spiffe://tessera/<role>`` (what servers authorize) and the DNS name
``<role>.tessera.internal`` (what clients check, ``authz.role_name``) in each
certificate's subject alternative names. Every certificate is valid as both
server and client (each service is both); it also lists the host names and
addresses given (loopback by default; ``server_hosts`` adds those a server
bound to a given address is reached by), for clients outside the cluster that
check the address (grpcurl against the router's public port).
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tessera.runtime.rpc.authz import ROLE_DOMAIN, ROLES, SPIFFE_PREFIX, role_name

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
WILDCARD_HOSTS = ("", "0.0.0.0", "::", "[::]")
VALIDITY = datetime.timedelta(days=7)


def server_hosts(bind_host: str) -> tuple[str, ...]:
    """The names and addresses a server bound to ``bind_host`` is reached by, for its certificate's SANs.

    Loopback always; a specific address or name as given; for a wildcard bind (every interface), this
    machine's host name, fully qualified name and the addresses they resolve to.
    """
    hosts = list(LOOPBACK_HOSTS)
    bind_host = bind_host.strip()
    if bind_host in WILDCARD_HOSTS:
        names = [socket.gethostname(), socket.getfqdn()]
        for name in list(names):
            try:
                names += [str(info[4][0]) for info in socket.getaddrinfo(name, None)]
            except OSError:
                continue
        extra = names
    else:
        extra = [bind_host.strip("[]")]
    for host in extra:
        if host and host.split("%")[0] not in hosts:  # no IPv6 zone ids: a certificate cannot carry them
            hosts.append(host.split("%")[0])
    return tuple(hosts)


@dataclass(frozen=True)
class CertFiles:
    """Where one identity's files are (PEM): the CA that signed it, its certificate, its key."""

    ca: Path
    cert: Path
    key: Path

    def flags(self) -> list[str]:
        """The flags that make a service or command use these files for gRPC."""
        return ["--tls-ca", str(self.ca), "--tls-cert", str(self.cert), "--tls-key", str(self.key)]

    def etcd_flags(self) -> list[str]:
        """The flags that make it present this certificate to etcd."""
        return ["--etcd-ca", str(self.ca), "--etcd-cert", str(self.cert), "--etcd-key", str(self.key)]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


class LocalCA:
    """A CA whose key lives in ``directory`` for as long as the cluster it serves."""

    def __init__(self, directory: Path, name: str = "Tessera local CA") -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )  # keyCertSign, cRLSign
            .sign(self.key, hashes.SHA256())
        )
        self.ca_path = self.directory / "ca.pem"
        self.ca_path.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue(
        self, name: str, hosts: tuple[str, ...] = LOOPBACK_HOSTS, uri: str | None = None, domain: str = ROLE_DOMAIN
    ) -> CertFiles:
        """A certificate for ``name`` (a role: it carries ``spiffe://tessera/<name>`` and ``<name>.<domain>``)
        valid for ``hosts``."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        names: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri or SPIFFE_PREFIX + name)]
        if name in ROLES:
            names.append(x509.DNSName(role_name(name, domain)))
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"tessera-{name}")]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + VALIDITY)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(
                x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                critical=False,
            )
            .sign(self.key, hashes.SHA256())
        )
        files = CertFiles(self.ca_path, self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")
        files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        files.key.touch(mode=0o600)
        files.key.write_bytes(_key_pem(key))
        return files


def make_cluster_certs(directory: Path, hosts: tuple[str, ...] = LOOPBACK_HOSTS) -> dict[str, CertFiles]:
    """A new CA in ``directory`` and one certificate per role (and one for etcd), by name."""
    ca = LocalCA(directory)
    out = {role: ca.issue(role, hosts) for role in ROLES}
    out["etcd"] = ca.issue("etcd", hosts)
    return out
