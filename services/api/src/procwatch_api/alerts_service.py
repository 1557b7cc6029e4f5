"""Acknowledging alerts (/alerts/{id}/ack). No framework imports.

An acknowledgement belongs to one alert episode (one history row): it records who (the caller's
user id), when and an optional note, stops the episode's reminders (the notifier's reminders job
reads it), and is published as an AlertAcknowledged event through the outbox (after the commit).
A resolved episode keeps its acknowledgement in the history; the next episode is a new row and
starts unacknowledged ("resolution clears it"). Resolved and one-shot (process_restarted) alerts
cannot be acknowledged or un-acknowledged (409 alert_not_firing).
"""

from __future__ import annotations

import unicodedata
from datetime import UTC, datetime
from typing import Any

from procwatch_api.alerts_repository import AlertsRepository
from procwatch_api.errors import Conflict, NotFound, ValidationFailed
from procwatch_api.service import parse_id, present_alert
from procwatch_contracts import subjects
from procwatch_contracts.messages import AlertAcknowledged, AlertProcess, AlertServer
from procwatch_domain.rules import RULES

ACK_NOTE_MAX = 500
# One-shot alerts (a restart) have no episode to acknowledge: they never resolve.
ONE_SHOT_TYPES = frozenset(r.alert_type for r in RULES if r.one_shot)


def note_of(body: dict[str, Any]) -> str | None:
    issues = [{"field": str(k)[:100], "message": "unknown field"} for k in body if k != "note"]
    note = body.get("note")
    if note is not None and (not isinstance(note, str) or len(note) > ACK_NOTE_MAX or any(
            unicodedata.category(ch) == "Cc" and ch not in "\n\t" for ch in note)):
        issues.append({"field": "note", "message": f"must be null or text of at most {ACK_NOTE_MAX} characters"
                                                   " (no control characters but newline and tab)"})
    if issues:
        raise ValidationFailed(issues)
    return note or None


async def _firing(repo: AlertsRepository, user_id: int, raw_alert_id: str) -> dict[str, Any]:
    alert_id = parse_id(raw_alert_id)
    row = await repo.lock_alert(user_id, alert_id) if alert_id is not None else None
    if row is None:
        raise NotFound("alert not found")  # another user's alert too
    if row["resolved_at"] is not None or row["type"] in ONE_SHOT_TYPES:
        raise Conflict("alert_not_firing", "only a firing alert can be acknowledged or un-acknowledged"
                                           " (this one is resolved, or a one-shot event)")
    return row


def _event(row: dict[str, Any], *, acknowledged: bool, at: datetime, user_id: int,
           note: str | None) -> AlertAcknowledged:
    verb = "ack" if acknowledged else "unack"
    return AlertAcknowledged(
        id=f"{verb}-{row['id']}-{at.strftime('%Y%m%dT%H%M%S%fZ')}",
        alert_id=row["id"], episode_id=row["event_id"], type=row["type"], acknowledged=acknowledged,
        occurred_at=at, user_id=user_id, by_user_id=user_id, note=note,
        server=AlertServer(id=row["server_id"], hostname=row["hostname"]),
        process=(AlertProcess(id=row["watched_process_id"], process_name=row["process_name"])
                 if row["watched_process_id"] is not None else None),
    )


async def _publish(repo: AlertsRepository, row: dict[str, Any], event: AlertAcknowledged) -> None:
    await repo.add_outbox(subjects.alert_acks(row["server_id"], row["watched_process_id"]), event.id,
                          event.model_dump_json())


async def acknowledge(repo: AlertsRepository, user_id: int, raw_alert_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Acknowledge (again: the note, who and when are replaced)."""
    note = note_of(body)
    row = await _firing(repo, user_id, raw_alert_id)
    now = datetime.now(UTC)
    updated = await repo.set_acknowledgement(row["id"], now, user_id, note)
    await _publish(repo, row, _event(row, acknowledged=True, at=now, user_id=user_id, note=note))
    return {"alert": present_alert(updated)}


async def unacknowledge(repo: AlertsRepository, user_id: int, raw_alert_id: str) -> dict[str, Any]:
    """Un-acknowledge: reminders resume at the channels' cadence. Not acknowledged: nothing changes
    and nothing is published."""
    row = await _firing(repo, user_id, raw_alert_id)
    if row["acknowledged_at"] is None:
        return {"alert": present_alert(row)}
    now = datetime.now(UTC)
    updated = await repo.set_acknowledgement(row["id"], None, None, None)
    await _publish(repo, row, _event(row, acknowledged=False, at=now, user_id=user_id, note=None))
    return {"alert": present_alert(updated)}
