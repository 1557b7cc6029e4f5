"""The one error hierarchy of the API and the handlers that render it.

Every error body is `{"error": <code>, "message": <text>, ...extra}`. Services
raise `ApiError` subclasses (plain exceptions, no framework types); the handlers
installed by `install_error_handlers` turn them -- and everything FastAPI or
Starlette raises on their own, and any unexpected exception -- into that shape,
so a client never sees a bare 500 or an HTML page.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger("procwatch.api")


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
    code, status = "plan_limit_reached", 402

    def __init__(self, *, plan: str, limit: int, current_count: int) -> None:
        super().__init__(
            f"the {plan} plan allows {limit} watched processes per server",
            scope="per_server", plan=plan, limit=limit, current_count=current_count,
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


class BodyTooLarge(ApiError):
    code, status = "body_too_large", 413

    def __init__(self, limit: int) -> None:
        super().__init__(f"request body is larger than {limit} bytes", limit=limit)


class RateLimited(ApiError):
    code, status = "rate_limited", 429

    def __init__(self, *, limit: int, retry_after: int) -> None:
        super().__init__(
            f"more than {limit} requests per minute with this token; retry in {retry_after} s",
            headers={"Retry-After": str(retry_after)}, limit=limit, retry_after=retry_after,
        )


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


def _is_unavailable(exc: BaseException) -> bool:
    """Connection-level database failures (refused, reset, pool timeout), not SQL errors."""
    import psycopg
    from psycopg_pool import PoolTimeout
    from sqlalchemy import exc as sa_exc

    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    # psycopg directly: the hot read routes (repository.Reads).
    return isinstance(exc, (sa_exc.TimeoutError, ConnectionError, PoolTimeout, psycopg.OperationalError,
                            psycopg.InterfaceError))


def install_error_handlers(app: Any) -> None:
    """Register the handlers on a FastAPI app (framework imports stay in here)."""
    from fastapi.exceptions import RequestValidationError
    from starlette.exceptions import HTTPException as StarletteHTTPException
    from starlette.requests import Request
    from starlette.routing import Match

    from procwatch_api.responses import error_response as render

    async def api_error(request: Request, exc: ApiError):
        return render(exc)

    async def validation_error(request: Request, exc: RequestValidationError):
        issues = [
            {"field": ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body",
             "message": str(err.get("msg", "invalid"))}
            for err in exc.errors()
        ]
        return render(ValidationFailed(issues))

    async def http_error(request: Request, exc: StarletteHTTPException):
        if exc.status_code == 404:
            return render(NotFound("no such route"))
        if exc.status_code == 405:
            # Starlette names only the first matching route's methods; list every route's.
            allowed = sorted({
                method
                for route in _leaf_routes(request.app.router.routes)
                if route.matches(request.scope)[0] != Match.NONE
                for method in (getattr(route, "methods", None) or ())
            })
            headers = {"Allow": ", ".join(allowed)} if allowed else dict(exc.headers or {})
            return render(MethodNotAllowed("method not allowed on this route", headers=headers))
        if exc.status_code == 400:
            return render(ValidationFailed([{"field": "body", "message": str(exc.detail)}]))
        return render(ApiError(str(exc.detail), code="http_error", status=exc.status_code,
                               headers=dict(exc.headers or {})))

    app.add_exception_handler(ApiError, api_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_middleware(UnexpectedErrorMiddleware)


def _leaf_routes(routes: Any) -> Any:
    for route in routes:
        inner = getattr(route, "original_router", None)  # FastAPI's included-router wrapper
        if inner is not None:
            yield from _leaf_routes(inner.routes)
        elif hasattr(route, "matches"):
            yield route


def unexpected_error(exc: Exception, scope: dict[str, Any]) -> ApiError:
    """What answers an exception no handler took, logged: 503 when PostgreSQL is unreachable, else 500."""
    context = {"method": scope.get("method"), "path": scope.get("path"), "error": type(exc).__name__}
    if _is_unavailable(exc):
        log.warning("database unavailable", extra=context)
        return ServiceUnavailable()
    log.error("unhandled error", exc_info=exc, extra=context)
    return InternalError()


class UnexpectedErrorMiddleware:
    """Any exception no handler took -> logged, and answered as `unexpected_error` decides: 503
    `service_unavailable` when PostgreSQL is unreachable, else 500 `internal_error`.

    A plain ASGI middleware rather than an `Exception` handler, because
    Starlette re-raises after running such a handler.
    """

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            error = unexpected_error(exc, scope)
            if started:
                raise
            from procwatch_api.responses import error_response

            await error_response(error)(scope, receive, send)
