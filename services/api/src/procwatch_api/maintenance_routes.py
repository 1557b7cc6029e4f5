"""HTTP routes of /maintenance-windows: parse, call maintenance_service, render (like routes.py).

Dependencies in the same order as routes.py: caller, body, unit of work.
"""

from __future__ import annotations

from fastapi import APIRouter, Request
from starlette.responses import Response

from procwatch_api import maintenance_service as service
from procwatch_api.deps import Body, MaintenanceRepo, UserId, json_object
from procwatch_api.maintenance_schemas import (
    MaintenanceWindowCreate,
    MaintenanceWindowList,
    MaintenanceWindowOne,
    MaintenanceWindowUpdate,
)
from procwatch_api.responses import json_response
from procwatch_api.schemas import Ok, errors, request_body

router = APIRouter(redirect_slashes=False, tags=["maintenance"])

WINDOWS = "/maintenance-windows"
WINDOW = WINDOWS + "/{window_id}"


@router.get(WINDOWS, response_model=MaintenanceWindowList, responses=errors())
async def list_windows(user_id: UserId, repo: MaintenanceRepo) -> Response:
    return json_response(await service.list_windows(repo, user_id))


@router.post(WINDOWS, status_code=201, response_model=MaintenanceWindowOne, responses=errors(400, 402, 413),
             openapi_extra=request_body(MaintenanceWindowCreate))
async def create_window(request: Request, user_id: UserId, body: Body, repo: MaintenanceRepo) -> Response:
    return json_response(await service.create_window(repo, user_id, json_object(request, body)), status=201)


@router.get(WINDOW, response_model=MaintenanceWindowOne, responses=errors(404))
async def get_window(window_id: str, user_id: UserId, repo: MaintenanceRepo) -> Response:
    return json_response(await service.get_window(repo, user_id, window_id))


@router.put(WINDOW, response_model=MaintenanceWindowOne, responses=errors(400, 404, 413),
            openapi_extra=request_body(MaintenanceWindowUpdate))
async def update_window(window_id: str, request: Request, user_id: UserId, body: Body,
                        repo: MaintenanceRepo) -> Response:
    return json_response(await service.update_window(repo, user_id, window_id, json_object(request, body)))


@router.delete(WINDOW, response_model=Ok, responses=errors(404))
async def delete_window(window_id: str, user_id: UserId, repo: MaintenanceRepo) -> Response:
    return json_response(await service.delete_window(repo, user_id, window_id))


@router.post(WINDOW + "/end", response_model=MaintenanceWindowOne, responses=errors(404, 409))
async def end_window(window_id: str, user_id: UserId, repo: MaintenanceRepo) -> Response:
    """Ends the occurrence in effect now (409 window_not_active when none is); alerts still firing in
    its scope are notified once, within a few seconds. A recurring window's later occurrences stay."""
    return json_response(await service.end_window(repo, user_id, window_id))
