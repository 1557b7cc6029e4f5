"""HTTP routes: parse, call the service, render. Ids are taken as strings so a
malformed id answers like a missing one (404), after authentication. The two hot
GET reads are also answered straight from the ASGI scope (ProcwatchApi, at the end)."""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, FastAPI, Query, Request
from starlette.responses import Response

from procwatch_api import service
from procwatch_api.deps import Repo, UserId, json_object
from procwatch_api.errors import ApiError, unexpected_error
from procwatch_api.responses import error_response, json_response
from procwatch_api.schemas import (
    AlertPage,
    Ok,
    ProcessCreate,
    ProcessDetail,
    ProcessList,
    ProcessOne,
    ProcessUpdate,
    ServerCreate,
    ServerCreatedOne,
    ServerList,
    ServerOne,
    errors,
    request_body,
)

router = APIRouter()

SERVER = "/servers/{server_id}"
PROCESSES = SERVER + "/processes"
PROCESS = PROCESSES + "/{process_id}"


# --- servers ----------------------------------------------------------------


@router.get("/servers", response_model=ServerList, responses=errors(), tags=["servers"])
async def list_servers(repo: Repo, user_id: UserId) -> Response:
    return json_response(await service.list_servers(repo, user_id))


@router.post("/servers", status_code=201, response_model=ServerCreatedOne, responses=errors(400, 413),
             openapi_extra=request_body(ServerCreate), tags=["servers"])
async def create_server(request: Request, repo: Repo, user_id: UserId) -> Response:
    body = await json_object(request)
    return json_response(await service.create_server(repo, user_id, body), status=201)


@router.get(SERVER, response_model=ServerOne, responses=errors(404), tags=["servers"])
async def get_server(server_id: str, repo: Repo, user_id: UserId) -> Response:
    return json_response(await service.get_server(repo, user_id, server_id))


@router.delete(SERVER, response_model=Ok, responses=errors(404), tags=["servers"])
async def delete_server(server_id: str, repo: Repo, user_id: UserId) -> Response:
    return json_response(await service.delete_server(repo, user_id, server_id))


# --- processes --------------------------------------------------------------


# The list and get routes are the hot reads: ProcwatchApi (below) answers them straight from the ASGI
# scope with `list_processes_of` / `get_process_of` (no dependency resolution, parameter parsing
# or response_model handling per request). The FastAPI routes declare them for /openapi.json and
# answer the same way if ever reached (e.g. under a root_path).


async def list_processes_of(state: Any, authorization: str | None, server_id: str) -> Response:
    token_hash = service.caller_token_hash(authorization)
    return json_response(await service.list_processes(state.reads, state.rate_limiter, token_hash, server_id))


async def get_process_of(state: Any, authorization: str | None, server_id: str, process_id: str) -> Response:
    token_hash = service.caller_token_hash(authorization)
    return json_response(await service.get_process(
        state.reads, state.rate_limiter, state.restart_windows, token_hash, server_id, process_id
    ))


@router.get(PROCESSES, response_model=ProcessList, responses=errors(404), tags=["processes"])
async def list_processes(server_id: str, request: Request) -> Response:
    return await list_processes_of(request.app.state, request.headers.get("authorization"), server_id)


@router.post(PROCESSES, status_code=201, response_model=ProcessOne, responses=errors(400, 402, 404, 409, 413),
             openapi_extra=request_body(ProcessCreate), tags=["processes"])
async def create_process(server_id: str, request: Request, repo: Repo, user_id: UserId) -> Response:
    body = await json_object(request)
    return json_response(await service.create_process(repo, user_id, server_id, body), status=201)


@router.get(PROCESS, response_model=ProcessDetail, responses=errors(404), tags=["processes"])
async def get_process(server_id: str, process_id: str, request: Request) -> Response:
    return await get_process_of(request.app.state, request.headers.get("authorization"), server_id, process_id)


@router.put(PROCESS, response_model=ProcessOne, responses=errors(400, 404, 409, 413),
            openapi_extra=request_body(ProcessUpdate), tags=["processes"])
async def update_process(server_id: str, process_id: str, request: Request, repo: Repo, user_id: UserId) -> Response:
    body = await json_object(request)
    return json_response(await service.update_process(repo, user_id, server_id, process_id, body))


@router.delete(PROCESS, response_model=Ok, responses=errors(404), tags=["processes"])
async def delete_process(server_id: str, process_id: str, repo: Repo, user_id: UserId) -> Response:
    return json_response(await service.delete_process(repo, user_id, server_id, process_id))


@router.get(PROCESS + "/alerts", response_model=AlertPage, responses=errors(400, 404), tags=["alerts"])
async def list_alerts(
    server_id: str, process_id: str, repo: Repo, user_id: UserId,
    limit: str | None = Query(None, description="1-200, default 50"),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page (opaque)"),
) -> Response:
    return json_response(
        await service.list_alerts(repo, user_id, server_id, process_id, limit=limit, cursor=cursor)
    )


# The two hot GET routes, matched like Starlette's `{param}` (anything but "/") on the decoded path.
_HOT_READ = re.compile(r"/servers/(?P<server_id>[^/]+)/processes(?:/(?P<process_id>[^/]+))?")


class ProcwatchApi(FastAPI):
    """FastAPI, except that GET of the list and get routes of processes is answered before its
    middleware stack and router: those two carry the read load, and FastAPI's per-request work
    (middleware layers, dependency resolution, parameter parsing) was ~30 % of their CPU. They
    keep every behaviour: the same functions answer (`*_of` above), ApiError renders through the
    one error_response, anything else as errors.unexpected_error decides (503 when PostgreSQL is
    down, else 500), and the FastAPI routes still document them in /openapi.json."""

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http" and scope["method"] == "GET" and not self.root_path \
                and not scope.get("root_path"):
            match = _HOT_READ.fullmatch(scope["path"])
            if match is not None:
                await self._answer_hot_read(scope, send, match["server_id"], match["process_id"])
                return
        await super().__call__(scope, receive, send)

    async def _answer_hot_read(self, scope, send, server_id: str, process_id: str | None) -> None:
        authorization = next((v.decode("latin-1") for k, v in scope["headers"] if k == b"authorization"), None)
        # The response is built before anything is sent, so every failure can still be answered.
        try:
            if process_id is None:
                response = await list_processes_of(self.state, authorization, server_id)
            else:
                response = await get_process_of(self.state, authorization, server_id, process_id)
        except ApiError as exc:
            response = error_response(exc)
        except Exception as exc:
            response = error_response(unexpected_error(exc, scope))
        await send({"type": "http.response.start", "status": response.status_code, "headers": response.raw_headers})
        await send({"type": "http.response.body", "body": response.body})
