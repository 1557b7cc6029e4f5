"""HTTP routes of /alerts/{id}/ack: parse, call alerts_service, render (like routes.py).

Dependencies in the same order as routes.py: caller, body, unit of work.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from procwatch_api import alerts_service as service
from procwatch_api.deps import AlertsRepo, Body, UserId, json_object
from procwatch_api.responses import json_response
from procwatch_api.schemas import AckBody, AlertOne, errors

router = APIRouter(redirect_slashes=False, tags=["alerts"])

ACK = "/alerts/{alert_id}/ack"

_OPTIONAL_BODY: dict[str, Any] = {"requestBody": {"required": False, "content": {
    "application/json": {"schema": {"$ref": f"#/components/schemas/{AckBody.__name__}"}}}}}


@router.post(ACK, response_model=AlertOne, responses=errors(400, 404, 409, 413), openapi_extra=_OPTIONAL_BODY)
async def acknowledge(alert_id: str, request: Request, user_id: UserId, body: Body, repo: AlertsRepo) -> Response:
    """Acknowledges a firing alert (the id of GET .../alerts): records who, when and the optional note,
    stops its reminders and publishes an AlertAcknowledged event. Again: replaces the note."""
    fields = json_object(request, body) if body.strip() else {}
    return json_response(await service.acknowledge(repo, user_id, alert_id, fields))


@router.delete(ACK, response_model=AlertOne, responses=errors(404, 409))
async def unacknowledge(alert_id: str, user_id: UserId, repo: AlertsRepo) -> Response:
    """Removes the acknowledgement (reminders resume) and publishes an AlertAcknowledged event
    (acknowledged false); an alert that is not acknowledged is answered as it is."""
    return json_response(await service.unacknowledge(repo, user_id, alert_id))
