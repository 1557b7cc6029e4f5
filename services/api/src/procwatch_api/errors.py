"""The one error hierarchy of the API (plain exceptions, no framework types).

Every error body is `{"error": <code>, "message": <text>, ...extra}`. Services
raise `ApiError` subclasses; error_handlers renders them (through
responses.error_response) along with whatever FastAPI or Starlette raise on
their own and any unexpected exception, so a client never sees a bare 500 or an
HTML page. This module imports neither of those.
"""

from __future__ import annotations

from typing import Any


class ApiError(Exception):
    code = "error"
    status = 400

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict[str, str] | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        self.headers = headers or {}
        self.extra = extra

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, **self.extra}


class ValidationFailed(ApiError):
    code, status = "validation_failed", 400

    def __init__(self, issues: list[dict[str, str]], message: str | None = None) -> None:
        message = message or "; ".join(f"{i['field']}: {i['message']}" for i in issues) or "invalid request"
        super().__init__(message, issues=issues)


class Unauthorized(ApiError):
    code, status = "unauthorized", 401

    def __init__(self, message: str = "a valid bearer token is required") -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PlanLimitReached(ApiError):
    """`scope` says which limit: "per_server" (watched processes of one server),
    "servers_per_user" (servers of one user), "channels_per_user" (notification channels) or
    "windows_per_user" (maintenance windows)."""

    code, status = "plan_limit_reached", 402
    _WHAT = {"per_server": "watched processes per server", "servers_per_user": "servers per user",
             "channels_per_user": "notification channels per user",
             "windows_per_user": "maintenance windows per user"}

    def __init__(self, *, plan: str, limit: int, current_count: int, scope: str = "per_server") -> None:
        super().__init__(
            f"the {plan} plan allows {limit} {self._WHAT[scope]}",
            scope=scope, plan=plan, limit=limit, current_count=current_count,
        )


class ServerNotFound(ApiError):
    code, status = "server_not_found", 404

    def __init__(self) -> None:
        super().__init__("server not found")


class NotFound(ApiError):
    code, status = "not_found", 404

    def __init__(self, message: str = "not found") -> None:
        super().__init__(message)


class DuplicateProcess(ApiError):
    code, status = "duplicate_process", 409

    def __init__(self, process_name: str) -> None:
        super().__init__(f"a watched process named {process_name!r} already exists on this server")


class Conflict(ApiError):
    """The resource is not in a state that allows the action (409): `window_not_active` (ending a
    maintenance window early when none of its occurrences is in effect), `alert_not_firing`
    (acknowledging a resolved or one-shot alert)."""

    code, status = "conflict", 409

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, code=code)


class SecretsUnavailable(ApiError):
    """The channels' encryption key (PROCWATCH_SECRETS_KEY) is missing, malformed, or no longer
    decrypts a stored secret: an operator's fix, answered without detail (never the key)."""

    code, status = "secrets_unavailable", 503

    def __init__(self) -> None:
        super().__init__("channel secrets cannot be encrypted or decrypted: the server's secrets key"
                         " (PROCWATCH_SECRETS_KEY) is not configured correctly")


class BodyTooLarge(ApiError):
    code, status = "body_too_large", 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes", limit=limit)


class RequestTimeout(ApiError):
    code, status = "request_timeout", 408

    def __init__(self, timeout_s: float) -> None:
        super().__init__(f"the request body did not arrive within {timeout_s:g} s", headers={"Connection": "close"})


class RateLimited(ApiError):
    code, status = "rate_limited", 429

    def __init__(self, *, limit: int, retry_after: int, subject: str = "this token") -> None:
        super().__init__(
            f"more than {limit} requests per minute with {subject}; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)}, limit=limit, retry_after=retry_after,
        )


class TooManyStreams(ApiError):
    code, status = "too_many_streams", 429

    def __init__(self, limit: int) -> None:
        super().__init__(f"more than {limit} live update streams open for this user", limit=limit,
                         headers={"Retry-After": "30"})


class MethodNotAllowed(ApiError):
    code, status = "method_not_allowed", 405


class InternalError(ApiError):
    code, status = "internal_error", 500

    def __init__(self) -> None:
        super().__init__("internal error")


class ServiceUnavailable(ApiError):
    """A dependency (PostgreSQL) cannot be reached: answered at once, never hung, never a 500."""

    code, status = "service_unavailable", 503

    def __init__(self) -> None:
        super().__init__("the database is unavailable; retry shortly", headers={"Retry-After": "1"})


class CsrfRefused(ApiError):
    """A dashboard form post without its CSRF token, or from another origin (procwatch_api.web.sessions)."""

    code, status = "csrf_failed", 403

    def __init__(self) -> None:
        super().__init__("the form is stale or came from another site: reload the page and try again")
