"""API keys, tenants' rights and rate limits: what both front ends check before a request runs.

- No ``--api-key`` and no tenant in etcd: the router is open, as it always was (every request
  runs as ``ANONYMOUS``, allowed everything).
- Otherwise every /v1 request (HTTP ``Authorization: Bearer KEY``, gRPC metadata
  ``authorization: Bearer KEY``) needs a known key: 401 without one. A ``--api-key`` key runs as
  the unlimited tenant "default"; a tenant's key runs as that tenant.
- A tenant asking for a model it may not use, a priority it may not set or above its ceiling,
  or sending x-slo-ttft-ms / x-tessera-profile without the right to: 403 naming the field.
- A tenant over its requests or tokens per minute: 429 with Retry-After (``rate_limits.py``).

Keys are never kept or compared in clear, only their SHA-256 (``hash_api_key``): ``--api-key``
keys are compared with ``hmac.compare_digest``, tenants' keys are found by digest in a dict,
whose timing depends only on the digest, which tells an attacker nothing about a key's
characters.
"""

from __future__ import annotations

import asyncio
import hmac

from services.router import metrics
from services.router.errors import ApiError, Forbidden, LimiterUnavailable, TenantsUnavailable, Unauthenticated
from services.router.rate_limits import RateLimiter
from services.router.tenants import ANONYMOUS, DEFAULT, Principal, TenantDirectory
from tessera.runtime.etcd.records import hash_api_key

SLO_HEADER = "x-slo-ttft-ms"
PROFILE_HEADER = "x-tessera-profile"


def bearer_token(authorization: str | None) -> str | None:
    """The key in an ``Authorization: Bearer KEY`` value; None if absent or another scheme."""
    if not authorization:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _masked(key: str) -> str:
    """As OpenAI shows a wrong key: enough to recognise it, not enough to use it."""
    return key[:3] + "*" * 4 + key[-4:] if len(key) > 10 else "*" * 4


class RequestGate:
    """Authenticates callers, checks what their tenant may ask for, and charges its rate limits."""

    def __init__(
        self,
        api_keys: list[str] | None = None,
        tenants: TenantDirectory | None = None,
        limiter: RateLimiter | None = None,
        metrics_api_key: str = "",
        sync_wait_s: float = 5.0,
        require_key: bool = False,
    ) -> None:
        self.require_key = require_key  # never open, even with no --api-key and no tenant
        self._static = [hash_api_key(k) for k in api_keys or [] if k]
        self.tenants = tenants
        self.limiter = limiter
        self._metrics_hash = hash_api_key(metrics_api_key) if metrics_api_key else ""
        self.sync_wait_s = sync_wait_s

    @property
    def open(self) -> bool:
        """No key is needed: no --api-key, no --require-api-key, and no tenant in etcd (as far as this router
        knows)."""
        if self.require_key or self._static:
            return False
        return self.tenants is None or (self.tenants.synced and not self.tenants.configured)

    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller's Principal from its Authorization value; Unauthenticated (401) if it has none."""
        tenants = self.tenants
        if tenants is not None and not tenants.synced:
            # Just started: do not decide whether the router is open before the tenants are known.
            try:
                await asyncio.wait_for(tenants.mirror.synced.wait(), self.sync_wait_s)
            except TimeoutError:
                if not self._static:
                    raise TenantsUnavailable() from None
        if self.open:
            return ANONYMOUS
        token = bearer_token(authorization)
        if token is None:
            metrics.TENANT_REFUSED.labels("", "unauthenticated").inc()
            raise Unauthenticated(
                "You didn't provide an API key. You need to provide your API key in an Authorization header "
                "using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
            )
        digest = hash_api_key(token)
        # --api-key keys: each compared in constant time. Tenants' keys: found by digest.
        found: Principal | None = DEFAULT if any([hmac.compare_digest(digest, h) for h in self._static]) else None
        if found is None and tenants is not None:
            found = tenants.by_key_hash.get(digest)
        if found is None:
            metrics.TENANT_REFUSED.labels("", "unauthenticated").inc()
            raise Unauthenticated(f"Incorrect API key provided: {_masked(token)}.")
        return found

    def authorize(
        self, principal: Principal, model: str, priority: int, slo_header: bool, profile_header: bool
    ) -> None:
        """Forbidden (403, naming the field) if the tenant may not ask for this."""
        try:
            self._authorize(principal, model, priority, slo_header, profile_header)
        except Forbidden:
            metrics.TENANT_REFUSED.labels(principal.tenant, "forbidden").inc()
            raise

    def _authorize(
        self, principal: Principal, model: str, priority: int, slo_header: bool, profile_header: bool
    ) -> None:
        who = f"Tenant `{principal.tenant}`"
        if not principal.may_use(model):
            raise Forbidden(f"{who} may not use the model `{model}`.", param="model", code="model_not_allowed")
        if priority != 0 and not principal.may_set_priority:
            raise Forbidden(f"{who} may not set `priority`.", param="priority", code="priority_not_allowed")
        if priority > principal.max_priority:
            raise Forbidden(
                f"{who} may not ask for a priority above {principal.max_priority} (asked for {priority}).",
                param="priority",
                code="priority_not_allowed",
            )
        if slo_header and not principal.may_set_slo:
            raise Forbidden(f"{who} may not send the {SLO_HEADER} header.", param=SLO_HEADER, code="header_not_allowed")
        if profile_header and not principal.may_set_profile:
            raise Forbidden(
                f"{who} may not send the {PROFILE_HEADER} header.", param=PROFILE_HEADER, code="header_not_allowed"
            )

    async def charge(self, principal: Principal, tokens: int) -> None:
        """Count one request of `tokens` tokens against the tenant's limits: RateLimited (429) if over."""
        if principal.limited and self.limiter is not None:
            try:
                await self.limiter.admit(principal.tenant, principal.rpm, principal.tpm, tokens)
            except ApiError as exc:
                reason = "limiter_unavailable" if isinstance(exc, LimiterUnavailable) else "rate_limited"
                metrics.TENANT_REFUSED.labels(principal.tenant, reason).inc()
                raise
            metrics.TENANT_CHARGED_TOKENS.labels(principal.tenant).inc(tokens)

    def metrics_allowed(self, authorization: str | None) -> bool:
        """/metrics: open unless --metrics-api-key was given."""
        if not self._metrics_hash:
            return True
        token = bearer_token(authorization)
        return token is not None and hmac.compare_digest(hash_api_key(token), self._metrics_hash)

    async def close(self) -> None:
        if self.limiter is not None:
            await self.limiter.close()
        if self.tenants is not None:
            await self.tenants.close()
