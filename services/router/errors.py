"""Errors the router returns, shaped like OpenAI's so every OpenAI client understands them."""

from __future__ import annotations

from typing import Any

import grpc


class ApiError(Exception):
    """An error for the client: HTTP status, message, and the offending parameter."""

    status = 400
    type = "invalid_request_error"
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT

    def __init__(
        self, message: str, param: str | None = None, code: str | None = None, retry_after: float | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code
        self.retry_after = retry_after

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class BadRequest(ApiError):
    status = 400


class ModelNotFound(ApiError):
    status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND

    def __init__(self, model: str) -> None:
        super().__init__(f"The model `{model}` does not exist.", param="model", code="model_not_found")


class NoCapacity(ApiError):
    """No worker can take the request now; the client should retry shortly."""

    status = 503
    type = "service_unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, code="no_capacity", retry_after=retry_after)


class UpstreamFailed(ApiError):
    """Every attempt on a worker failed (after retries)."""

    status = 502
    type = "server_error"
    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(message, code="upstream_failed", retry_after=1.0)


class Unauthenticated(ApiError):
    """No API key, or one the router does not know (OpenAI answers 401 invalid_api_key)."""

    status = 401
    type = "invalid_request_error"
    grpc_code = grpc.StatusCode.UNAUTHENTICATED

    def __init__(self, message: str) -> None:
        super().__init__(message, code="invalid_api_key")


class Forbidden(ApiError):
    """A known key asking for something its tenant may not use: a model, a priority, a header."""

    status = 403
    type = "permission_error"
    grpc_code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, message: str, param: str | None = None, code: str = "permission_denied") -> None:
        super().__init__(message, param=param, code=code)


class RateLimited(ApiError):
    """The tenant's requests or tokens per minute are spent until the window ends (Retry-After)."""

    status = 429
    type = "rate_limit_error"
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message, code="rate_limit_exceeded", retry_after=retry_after)


class LimiterUnavailable(ApiError):
    """etcd, which holds the shared rate-limit counters, cannot be reached: tenants with limits are refused."""

    status = 503
    type = "service_unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self, message: str) -> None:
        super().__init__(message, code="rate_limiter_unavailable", retry_after=1.0)


class TenantsUnavailable(ApiError):
    """The router has not read the tenants from etcd yet, so it cannot tell whether a key is needed."""

    status = 503
    type = "service_unavailable"
    grpc_code = grpc.StatusCode.UNAVAILABLE

    def __init__(self) -> None:
        super().__init__(
            "The router cannot read its tenants from etcd yet; retry shortly.",
            code="tenants_unavailable",
            retry_after=1.0,
        )
