"""HTTP routes: parse, call the service, render. Ids are taken as strings so a
malformed id answers like a missing one (404), after authentication. The two hot
GET reads are answered by hot_reads.py (ProcwatchApi, at the end, hands them over);
their routes here document them and answer the same way under a root_path.

A route's dependencies come in this order: caller (UserId), body (Body), unit of
work (Repo), so no connection of the write pool is held while a body arrives."""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Query, Request
from starlette.responses import Response

from procwatch_api import hot_reads, service
from procwatch_api.deps import Body, Repo, UserId, json_object
from procwatch_api.responses import json_response
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
    ServerUpdate,
    errors,
    request_body,
)

router = APIRouter(redirect_slashes=False)

SERVER = "/servers/{server_id}"
PROCESSES = SERVER + "/processes"
PROCESS = PROCESSES + "/{process_id}"


# --- servers ----------------------------------------------------------------


@router.get("/servers", response_model=ServerList, responses=errors(), tags=["servers"])
async def list_servers(user_id: UserId, repo: Repo) -> Response:
    return json_response(await service.list_servers(repo, user_id))


@router.post("/servers", status_code=201, response_model=ServerCreatedOne, responses=errors(400, 402, 413),
             openapi_extra=request_body(ServerCreate), tags=["servers"])
async def create_server(request: Request, user_id: UserId, body: Body, repo: Repo) -> Response:
    return json_response(await service.create_server(repo, user_id, json_object(request, body)), status=201)


@router.get(SERVER, response_model=ServerOne, responses=errors(404), tags=["servers"])
async def get_server(server_id: str, user_id: UserId, repo: Repo) -> Response:
    return json_response(await service.get_server(repo, user_id, server_id))


@router.put(SERVER, response_model=ServerOne, responses=errors(400, 404, 413),
            openapi_extra=request_body(ServerUpdate), tags=["servers"])
async def update_server(server_id: str, request: Request, user_id: UserId, body: Body, repo: Repo) -> Response:
    return json_response(await service.update_server(repo, user_id, server_id, json_object(request, body)))


@router.get(SERVER + "/alerts", response_model=AlertPage, responses=errors(400, 404), tags=["alerts"])
async def list_server_alerts(
    server_id: str, user_id: UserId, repo: Repo,
    limit: str | None = Query(None, description="1-200, default 50"),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page (opaque: any other value"
                                                 " is answered 400 validation_failed)"),
) -> Response:
    """The server's own alerts (server_offline), newest first; its processes' alerts are listed per process."""
    return json_response(await service.list_server_alerts(repo, user_id, server_id, limit=limit, cursor=cursor))


@router.delete(SERVER, response_model=Ok, responses=errors(404), tags=["servers"])
async def delete_server(server_id: str, user_id: UserId, repo: Repo) -> Response:
    return json_response(await service.delete_server(repo, user_id, server_id))


# --- processes --------------------------------------------------------------


@router.get(PROCESSES, response_model=ProcessList, responses=errors(404), tags=["processes"])
async def list_processes(server_id: str, request: Request) -> Response:
    return await hot_reads.list_processes(request.app.state, request.headers.get("authorization"),
                                          hot_reads.client_host(request.scope), server_id)


@router.post(PROCESSES, status_code=201, response_model=ProcessOne, responses=errors(400, 402, 404, 409, 413),
             openapi_extra=request_body(ProcessCreate), tags=["processes"])
async def create_process(server_id: str, request: Request, user_id: UserId, body: Body, repo: Repo) -> Response:
    return json_response(await service.create_process(repo, user_id, server_id, json_object(request, body)),
                         status=201)


@router.get(PROCESS, response_model=ProcessDetail, responses=errors(404), tags=["processes"])
async def get_process(server_id: str, process_id: str, request: Request) -> Response:
    return await hot_reads.get_process(request.app.state, request.headers.get("authorization"),
                                       hot_reads.client_host(request.scope), server_id, process_id)


@router.put(PROCESS, response_model=ProcessOne, responses=errors(400, 404, 409, 413),
            openapi_extra=request_body(ProcessUpdate), tags=["processes"])
async def update_process(server_id: str, process_id: str, request: Request, user_id: UserId, body: Body,
                         repo: Repo) -> Response:
    return json_response(await service.update_process(repo, user_id, server_id, process_id,
                                                      json_object(request, body)))


@router.delete(PROCESS, response_model=Ok, responses=errors(404), tags=["processes"])
async def delete_process(server_id: str, process_id: str, user_id: UserId, repo: Repo) -> Response:
    return json_response(await service.delete_process(repo, user_id, server_id, process_id))


@router.get(PROCESS + "/alerts", response_model=AlertPage, responses=errors(400, 404), tags=["alerts"])
async def list_alerts(
    server_id: str, process_id: str, user_id: UserId, repo: Repo,
    limit: str | None = Query(None, description="1-200, default 50"),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page (opaque: any other value"
                                                 " is answered 400 validation_failed)"),
) -> Response:
    return json_response(
        await service.list_alerts(repo, user_id, server_id, process_id, limit=limit, cursor=cursor)
    )


class ProcwatchApi(FastAPI):
    """FastAPI, except that (1) the two hot reads are answered by hot_reads.answer before the
    middleware stack and router, unless the app runs under a root_path (then FastAPI's routes
    above answer them the same way), (2) HEAD is answered wherever GET is: as GET, without
    the body (FastAPI's routes answer only the methods they declare), and (3) the request
    metrics, when on, wrap all of it (procwatch_api.request_metrics)."""

    # Set by app.create_app when metrics are on: request_metrics.RequestMetrics around `serve`.
    request_metrics = None

    async def __call__(self, scope, receive, send) -> None:
        if self.request_metrics is not None:
            await self.request_metrics(scope, receive, send)
        else:
            await self.serve(scope, receive, send)

    async def serve(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            if not self.root_path and not scope.get("root_path") and \
                    await hot_reads.answer(self.state, scope, send):
                return
            if scope["method"] == "HEAD":
                # In place: the routing writes the matched route into this scope (request metrics).
                scope["method"] = "GET"
                send = _without_body(send)
        await super().__call__(scope, receive, send)


def _without_body(send):
    async def send_headers_only(message) -> None:
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_headers_only
