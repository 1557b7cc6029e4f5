"""The two hot reads -- GET (and HEAD) of a server's processes and of one process -- in one place.

They carry the read load, so they are answered before FastAPI's middleware stack and router
(`answer`, called first by app.ProcwatchApi): FastAPI's per-request work (middleware layers,
dependency resolution, parameter parsing, response_model handling) was a large share of their
CPU. Everything else of them lives here too: the match of their two paths, authentication and
rate limiting (`admit`, the one such function, which deps.current_user uses as well), the use
cases, and the rendering. The SQL is repository.Reads (one statement authenticates, checks
ownership and reads); the representation is service.present_*.

Why a regex and not Starlette's router: this path match is the one place these two routes are
matched for serving; it mirrors Starlette's `{param}` (anything but "/", on the decoded path).
The FastAPI routes of the same paths (routes.py) only document them in /openapi.json, and answer
through `list_processes` / `get_process` below if ever reached (under a root_path, where this
fast path steps aside).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

from starlette.responses import Response

from procwatch_api.error_handlers import unexpected_error
from procwatch_api.errors import ApiError, NotFound, ServerNotFound, Unauthorized
from procwatch_api.request_metrics import ROUTE_KEY
from procwatch_api.responses import error_response, json_response
from procwatch_api.service import (
    RESTART_WINDOW,
    SAMPLES_SHOWN,
    caller_token_hash,
    parse_id,
    present_process,
    present_samples,
)

# Their route templates (the same as routes.PROCESSES / routes.PROCESS): the request metrics' label.
PROCESSES_ROUTE = "/servers/{server_id}/processes"
PROCESS_ROUTE = PROCESSES_ROUTE + "/{process_id}"
_HOT_READ = re.compile(r"/servers/(?P<server_id>[^/]+)/processes(?:/(?P<process_id>[^/]+))?")
# Failed authentications are counted per client address, apart from the per-token counts.
_UNAUTHENTICATED_KEY = "unauthenticated:"


async def admit(state: Any, token_hash: str, user_id: int | None, client: str | None) -> int:
    """The caller's user id once its token matched a user (`user_id`, None when it did not) and its
    rate limit (state.rate_limiter) allows the request: 401 first, then 429. Failed attempts count
    per client address (state.failed_auth_limiter), so guessing tokens is throttled too."""
    if user_id is None:
        await state.failed_auth_limiter.check(_UNAUTHENTICATED_KEY + (client or "unknown"),
                                              subject="an invalid token from this address")
        raise Unauthorized("the bearer token is invalid or revoked")
    await state.rate_limiter.check(token_hash)
    return user_id


async def list_processes(state: Any, authorization: str | None, client: str | None, raw_server_id: str) -> Response:
    token_hash = caller_token_hash(authorization)
    # One statement authenticates and reads; the order of answers stays 401, 429, 404.
    found = await state.reads.processes_of_server(token_hash, parse_id(raw_server_id) or 0)
    await admit(state, token_hash, found.user_id, client)
    server = found.server
    if server is None:
        raise ServerNotFound()
    return json_response({
        "processes": [present_process(r) for r in found.processes],
        "plan_limit": server.limit,
        "current_count": len(found.processes),
        "plan": server.plan,
        "server": {"id": server.id, "hostname": server.hostname, "last_agent_version": server.last_agent_version},
    })


async def get_process(state: Any, authorization: str | None, client: str | None, raw_server_id: str,
                      raw_process_id: str, *, now: datetime | None = None) -> Response:
    token_hash = caller_token_hash(authorization)
    server_id = parse_id(raw_server_id)
    # Naive UTC, like the samples' recorded_at. The newest samples are looked for in the restart window first.
    since = ((now or datetime.now(UTC)) - RESTART_WINDOW).astimezone(UTC).replace(tzinfo=None)
    reads = state.reads
    found = await reads.process_with_newest_samples(
        token_hash, server_id or 0, parse_id(raw_process_id) or 0, SAMPLES_SHOWN, since
    )
    await admit(state, token_hash, found.user_id, client)
    if server_id is None or not found.server_found:
        raise ServerNotFound()
    row = found.process
    if row is None:
        raise NotFound("watched process not found")
    samples = found.samples
    windows = state.restart_windows
    restarts = windows.count(row["id"], row["samples_total"], [(s[6], s[5]) for s in samples], since)
    if restarts is None:
        runs = await reads.restart_runs_since(row["id"], since)
        restarts = windows.store(row["id"], row["samples_total"], runs, since)
    return json_response({
        "process": present_process(row),
        "samples": present_samples(samples),
        "samples_total": row["samples_total"],
        "recent_restarts": restarts,
    })


def client_host(scope: dict[str, Any]) -> str | None:
    client = scope.get("client")
    return client[0] if client else None


async def answer(state: Any, scope: dict[str, Any], send: Any) -> bool:
    """Answer the request if it is GET or HEAD of one of the two hot routes; False (nothing sent)
    otherwise. Errors render as anywhere else: ApiError through error_response, anything else as
    error_handlers.unexpected_error decides (503 when PostgreSQL is down, else 500)."""
    method = scope["method"]
    if method != "GET" and method != "HEAD":
        return False
    match = _HOT_READ.fullmatch(scope["path"])
    if match is None:
        return False
    authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
    server_id, process_id = match["server_id"], match["process_id"]
    scope[ROUTE_KEY] = PROCESSES_ROUTE if process_id is None else PROCESS_ROUTE
    # The response is built before anything is sent, so every failure can still be answered.
    try:
        if process_id is None:
            response = await list_processes(state, authorization, client_host(scope), server_id)
        else:
            response = await get_process(state, authorization, client_host(scope), server_id, process_id)
    except ApiError as exc:
        response = error_response(exc)
    except Exception as exc:
        response = error_response(unexpected_error(exc, scope))
    await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
    await send({"type": "http.response.body", "body": response.body if method == "GET" else b""})
    return True
