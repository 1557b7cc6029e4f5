"""The handlers that render every error as the one error body (errors.ApiError.body, through
responses.error_response): the API's own errors, FastAPI's and Starlette's, and any unexpected
exception."""

from __future__ import annotations

import logging
from typing import Any

import psycopg
from fastapi.exceptions import RequestValidationError
from psycopg_pool import PoolTimeout
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.routing import Match

from procwatch_api.errors import (
    ApiError,
    InternalError,
    MethodNotAllowed,
    NotFound,
    ServiceUnavailable,
    ValidationFailed,
)
from procwatch_api.responses import error_response

log = logging.getLogger("procwatch.api")


def _is_unavailable(exc: BaseException) -> bool:
    """Connection-level database failures (refused, reset, pool timeout), not SQL errors."""
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    # psycopg directly: the hot read routes (repository.Reads).
    return isinstance(exc, (sa_exc.TimeoutError, ConnectionError, PoolTimeout, psycopg.OperationalError,
                            psycopg.InterfaceError))


def install_error_handlers(app: Any) -> None:
    """Register the handlers on a FastAPI app."""
    render = error_response

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
            if "GET" in allowed:
                allowed = sorted({*allowed, "HEAD"})  # HEAD is answered wherever GET is (routes.ProcwatchApi)
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
        except ClientDisconnect:
            # The client went away before its request was complete: nobody to answer, nothing broken.
            log.info("client disconnected during the request", extra={"method": scope.get("method"),
                                                                       "path": scope.get("path")})
        except Exception as exc:
            error = unexpected_error(exc, scope)
            if started:
                raise
            await error_response(error)(scope, receive, send)
