"""Request metrics of the API: a pure ASGI middleware (no BaseHTTPMiddleware: no task, no
request object, one wrapped `send` per request), outermost, so the hot reads (answered before
FastAPI's middleware stack, procwatch_api.hot_reads) are counted too.

One observation per request (procwatch_runtime.metrics.API_REQUEST_DURATION, whose `_count` counts
the requests). Labels: the route *template*
(`/servers/{server_id}/processes`, never the raw path: ids would make one series per server),
the method, and the status. The template comes from the routing: FastAPI sets `scope["route"]`;
the hot reads set `scope[ROUTE_KEY]`; a path no route matched is "unmatched".
"""

from __future__ import annotations

import time
from typing import Any

from procwatch_runtime import metrics

# The scope key under which a handler that is not a FastAPI route names its route template.
ROUTE_KEY = "procwatch.route"
UNMATCHED = "unmatched"


def route_template(scope: dict[str, Any]) -> str:
    template = scope.get(ROUTE_KEY)
    if template is not None:
        return template
    route = scope.get("route")
    return getattr(route, "path", None) or UNMATCHED


class RequestMetrics:
    """Wraps an ASGI app: times every HTTP request and counts it by route template, method, status."""

    def __init__(self, app: Any) -> None:
        self.app = app
        # The labelled children, looked up once per (route, method, status).
        self._timers: dict[tuple[str, str, int], Any] = {}

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        method = scope["method"]
        if method not in metrics.HTTP_METHODS:
            method = "other"  # any token is a method: keep the label (and the cache below) bounded
        started = time.perf_counter()
        status = 500  # the app raised before it answered: the server answers 500

        async def send_and_note_status(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_and_note_status)
        finally:
            seconds = time.perf_counter() - started
            key = (scope.get(ROUTE_KEY) or route_template(scope), method, status)
            timer = self._timers.get(key)
            if timer is None:
                timer = self._timers[key] = metrics.API_REQUEST_DURATION.labels(key[0], method, str(status))
            timer.observe(seconds)
