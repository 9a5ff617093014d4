"""The etcd key layout under /tessera/v1/ (see design.md, "Names to keep consistent")."""

from __future__ import annotations

PREFIX = "/tessera/v1/"
WORKERS = PREFIX + "workers/"
SERVICES = PREFIX + "services/"
CONFIG = PREFIX + "config/"
DESIRED = PREFIX + "desired/"
ELECTION = PREFIX + "election/"
PROFILES = PREFIX + "profiles/"
SLO_POLICIES = CONFIG + "slo-policies/"  # one YAML SLO policy per served model (the autoscaler plans from it)
TENANTS = CONFIG + "tenants/"  # one TenantRecord (JSON) per tenant; routers authenticate API keys against them
RATE_LIMITS = PREFIX + "ratelimits/"  # per-tenant per-window quota counters, shared by every router
ACKS = PREFIX + "acks/"  # services' leased verdicts on the documents they watch (profiles, SLO policies)


def worker(worker_id: str) -> str:
    """Leased registration of one worker; the value is its WorkerIdentity as JSON."""
    return WORKERS + worker_id


def services(kind: str) -> str:
    """Prefix of the leased registrations of one service kind (router, scheduler, autoscaler)."""
    return f"{SERVICES}{kind}/"


def service(kind: str, service_id: str) -> str:
    return services(kind) + service_id


def desired(name: str) -> str:
    """The autoscaler's desired state for one worker group."""
    return DESIRED + name


def profile(name: str) -> str:
    """A placement profile (YAML text); schedulers watch these and reload on change."""
    return PROFILES + name


def election(name: str) -> str:
    """Leader-election key: whoever holds it under a live lease leads."""
    return ELECTION + name


def tenant(name: str) -> str:
    """A tenant: its API key hashes, allowed models and limits (records.TenantRecord as JSON)."""
    return TENANTS + name


def rate_window(tenant_name: str, kind: str, window: int) -> str:
    """Units (requests or tokens, `kind` "rpm" | "tpm") of one tenant's window that routers have reserved."""
    return f"{RATE_LIMITS}{tenant_name}/{kind}/{window}"


def acks_of(document_key: str) -> str:
    """Prefix of every service's acknowledgement of one document (a profile, an SLO policy)."""
    return ACKS + document_key.removeprefix(PREFIX) + "/"


def ack(document_key: str, service_id: str) -> str:
    """One service's verdict on one document (acks.Ack as JSON), under that service's lease."""
    return acks_of(document_key) + service_id
