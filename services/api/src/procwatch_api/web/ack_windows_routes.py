"""The dashboard's acknowledgement buttons and maintenance-windows page (issue 18).

They call the API's alerts_service and maintenance_service (POST/DELETE /alerts/{id}/ack and the
/maintenance-windows routes' use cases). This module is mounted only where those exist
(routes.install imports it and, when the import fails, leaves the Maintenance nav item and the
Acknowledge buttons out), so the dashboard runs on a tree without them.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from procwatch_api import alerts_service, maintenance_service
from procwatch_api.alerts_repository import AlertsRepository
from procwatch_api.deps import Repo
from procwatch_api.errors import ApiError
from procwatch_api.maintenance_repository import MaintenanceRepository
from procwatch_api.web.rendering import issues_of, redirect, redirect_back, render
from procwatch_api.web.sessions import FormUser, PageUser, form_of

router = APIRouter(prefix="/ui", include_in_schema=False, redirect_slashes=False)
WINDOW = "/maintenance/{window_id}"


@router.post("/alerts/{alert_id}/ack")
async def acknowledge(request: Request, alert_id: str, user: FormUser, repo: Repo) -> Response:
    form = await form_of(request)
    note = str(form.get("note", "")).strip()
    await alerts_service.acknowledge(AlertsRepository(repo), user.user_id, alert_id, {"note": note} if note else {})
    return redirect_back(form, "/ui/alerts")


@router.post("/alerts/{alert_id}/unack")
async def unacknowledge(request: Request, alert_id: str, user: FormUser, repo: Repo) -> Response:
    form = await form_of(request)
    await alerts_service.unacknowledge(AlertsRepository(repo), user.user_id, alert_id)
    return redirect_back(form, "/ui/alerts")


def window_body(form: Any) -> dict[str, Any]:
    """A window form as the JSON body: empty inputs are left out; times are wall-clock in `timezone`."""
    body: dict[str, Any] = {}
    for field in ("name", "starts_at", "ends_at", "rrule", "timezone"):
        value = str(form.get(field, "")).strip()
        if value:
            body[field] = value
    duration = str(form.get("duration_s", "")).strip()
    if duration:
        body["duration_s"] = int(duration) if duration.isdigit() else duration
    return body


async def _windows_page(request: Request, user: PageUser, repo: Repo, *, form: dict[str, Any] | None = None,
                        issues: dict[str, str] | None = None, status: int = 200) -> Response:
    listed = await maintenance_service.list_windows(MaintenanceRepository(repo.conn), user.user_id)
    windows = listed["maintenance_windows"]
    return render(request, "maintenance.html", status, user=user, nav="maintenance", windows=windows,
                           form=form, issues=issues or {})


@router.get("/maintenance")
async def windows_page(request: Request, user: PageUser, repo: Repo) -> Response:
    return await _windows_page(request, user, repo)


@router.post("/maintenance")
async def create_window(request: Request, user: FormUser, repo: Repo) -> Response:
    form = await form_of(request)
    try:
        await maintenance_service.create_window(MaintenanceRepository(repo.conn), user.user_id, window_body(form))
    except ApiError as exc:
        await repo.conn.rollback()
        return await _windows_page(request, user, repo, form=dict(form), issues=issues_of(exc),
                                   status=exc.status)
    return redirect("/ui/maintenance")


@router.post(WINDOW + "/end")
async def end_window(request: Request, window_id: str, user: FormUser, repo: Repo) -> Response:
    await maintenance_service.end_window(MaintenanceRepository(repo.conn), user.user_id, window_id)
    return redirect("/ui/maintenance")


@router.post(WINDOW + "/delete")
async def delete_window(request: Request, window_id: str, user: FormUser, repo: Repo) -> Response:
    await maintenance_service.delete_window(MaintenanceRepository(repo.conn), user.user_id, window_id)
    return redirect("/ui/maintenance")
