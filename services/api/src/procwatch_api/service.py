"""The API's use cases: no framework imports. Routes parse and call; this decides; the repository does SQL.

Conventions of every representation (see docs/api.md): booleans as 0/1, numbers
with an integral value as integers (`80`, not `80.0`), timestamps ISO 8601 UTC
with `Z` and fractional seconds only when nonzero.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from procwatch_api.errors import (
    DuplicateProcess,
    NotFound,
    PlanLimitReached,
    ServerNotFound,
    Unauthorized,
    ValidationFailed,
)
from procwatch_api.repository import DuplicateName, Repository, SampleRow
from procwatch_contracts import subjects
from procwatch_contracts.messages import ProcessAlertConfig, ProcessChanged
from procwatch_domain.secrets import hash_secret, new_agent_key
from procwatch_domain.status import process_status
from procwatch_domain.rules import PARAMETER_SETTINGS, SETTINGS
from procwatch_domain.liveness import SERVER_SETTINGS, server_status
from procwatch_domain.validation import (
    BOOLEAN_FIELDS,
    ProcessValidationError,
    ordering_problems,
    setting_problem,
    validate_process_fields,
)

SAMPLES_SHOWN = 100
RESTART_WINDOW = timedelta(hours=24)
ALERTS_DEFAULT_LIMIT = 50
ALERTS_MAX_LIMIT = 200
HOSTNAME_MAX = 255
MAX_ID = 2**63 - 1
_ID_RE = re.compile(r"[0-9]{1,19}", re.ASCII)
# The 0/1 fields and the numeric alert settings of a process (procwatch_domain.rules).
_BOOL_FIELDS = BOOLEAN_FIELDS
_NUMBER_FIELDS = tuple(s.name for s in PARAMETER_SETTINGS)

# --- representation ---------------------------------------------------------


def json_time(value: datetime | None) -> datetime | str | None:
    """The one timestamp renderer of the API: ISO 8601 in UTC ending in "Z", with the fraction of a
    second only when nonzero and without trailing zeros. Handed over as the naive UTC datetime
    itself wherever orjson writes exactly that text (responses.JSON_OPTIONS: "Z", six fraction
    digits when nonzero), so only the values with trailing zeros to strip are formatted here: the
    hot reads render up to 130 timestamps a request, and orjson formats them in C."""
    if value is None:
        return None
    if value.tzinfo is not None:
        if value.tzinfo is not UTC:
            value = value.astimezone(UTC)
        value = value.replace(tzinfo=None)
    micro = value.microsecond
    if micro % 10 or not micro:
        return value
    return value.isoformat().rstrip("0") + "Z"


def num(value: float | int | None) -> float | int | None:
    if value.__class__ is float and value.is_integer() and abs(value) < 2**53:  # type: ignore[union-attr]
        return int(value)  # type: ignore[arg-type]
    return value


def present_process(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "server_id": row["server_id"],
        "user_id": row["user_id"],
        "process_name": row["process_name"],
        **{field: int(bool(row[field])) for field in _BOOL_FIELDS},
        **{field: num(row[field]) for field in _NUMBER_FIELDS},
        "last_count": row["last_count"],
        "last_cpu_pct": num(row["last_cpu_pct"]),
        "last_memory_pct": num(row["last_memory_pct"]),
        "last_sample_at": json_time(row["last_sample_at"]),
        "alerted_state": row["alerted_state"],
        "status": process_status(
            enabled=row["enabled"], last_sample_at=row["last_sample_at"],
            last_count=row["last_count"], alerted_state=row["alerted_state"],
        ),
        "created_at": json_time(row["created_at"]),
        "updated_at": json_time(row["updated_at"]),
    }


def present_samples(rows: list[SampleRow]) -> list[dict[str, Any]]:
    """The samples of a get, 100 a request: unrolled. Both float columns are NOT NULL."""
    return [
        {
            "id": sample_id,
            "watched_process_id": process_id,
            "count": count,
            "cpu_pct": num(cpu_pct) if cpu_pct.is_integer() else cpu_pct,
            "memory_pct": num(memory_pct) if memory_pct.is_integer() else memory_pct,
            "oldest_start_unix": oldest_start_unix,
            "recorded_at": json_time(recorded_at),
        }
        for sample_id, process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at in rows
    ]


def present_server(row: dict[str, Any], now: datetime | None = None) -> dict[str, Any]:
    return {
        "id": row["id"],
        "hostname": row["hostname"],
        "last_agent_version": row["last_agent_version"],
        "created_at": json_time(row["created_at"]),
        # Liveness (procwatch_domain.liveness, docs/api.md "Staleness").
        "last_seen_at": json_time(row["last_seen_at"]),
        "status": server_status(row["last_seen_at"], row["offline_deadline_at"], row["offline_since"] is not None,
                                now or datetime.now(UTC)),
        "offline_after_s": row["offline_after_s"],
        "alert_on_offline": int(bool(row["alert_on_offline"])),
    }


def present_alert(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "type": row["type"],
        "state": row["state"],
        "value": num(row["value"]),
        "threshold": num(row["threshold"]),
        "started_at": json_time(row["started_at"]),
        "resolved_at": json_time(row["resolved_at"]),
        "resolve_reason": row["resolve_reason"],
        "suppressed": int(row["suppressed"]),
        "acknowledged_at": json_time(row["acknowledged_at"]),
        "acknowledged_by": row["acknowledged_by"],
        "ack_note": row["ack_note"],
    }


# --- input ------------------------------------------------------------------


def parse_id(raw: str) -> int | None:
    """A path id: 1..2**63-1 in ASCII digits, else None (the caller answers 404)."""
    if not _ID_RE.fullmatch(raw):
        return None
    value = int(raw)
    return value if 1 <= value <= MAX_ID else None


def decode_json_object(raw: bytes, content_type: str | None) -> dict[str, Any]:
    """The request body as a JSON object, or ValidationFailed (NaN/Infinity are not JSON)."""
    if content_type:
        media = content_type.split(";", 1)[0].strip().lower()
        if media != "application/json" and not media.endswith("+json"):
            raise ValidationFailed([{"field": "body", "message": "Content-Type must be application/json"}])
    if not raw.strip():
        raise ValidationFailed([{"field": "body", "message": "a JSON object body is required"}])
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed([{"field": "body", "message": f"malformed JSON: {str(exc)[:200]}"}]) from None
    if not isinstance(body, dict):
        raise ValidationFailed([{"field": "body", "message": "the body must be a JSON object"}])
    return body


def hostname_problem(hostname: Any) -> str | None:
    if not isinstance(hostname, str):
        return "must be a string"
    if not 1 <= len(hostname) <= HOSTNAME_MAX:
        return f"must be 1-{HOSTNAME_MAX} characters"
    for ch in hostname:
        if ch.isspace() or unicodedata.category(ch) in ("Zs", "Zl", "Zp"):
            return "must not contain whitespace"
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn"):
            return "must not contain control or invisible characters"
    return None


# Fields of the server representation a client may echo back: accepted and ignored.
SERVER_READ_ONLY_FIELDS = frozenset({"id", "last_agent_version", "created_at", "last_seen_at", "status"})
_SERVER_SETTINGS = {s.name: s for s in SERVER_SETTINGS}
SERVER_UPDATABLE_FIELDS = ("hostname", *_SERVER_SETTINGS)


def validate_server_fields(body: dict[str, Any], *, for_update: bool = False) -> dict[str, Any]:
    """The clean values of the fields present (hostname, offline_after_s, alert_on_offline), every
    problem at once; hostname is required on create."""
    issues = []
    clean: dict[str, Any] = {}
    for k, value in body.items():
        if k == "hostname":
            problem = hostname_problem(value)
        elif k in _SERVER_SETTINGS:
            value, problem = setting_problem(_SERVER_SETTINGS[k], value)
        elif k in SERVER_READ_ONLY_FIELDS:
            continue
        else:
            k, problem = str(k)[:100], "unknown field"
        if problem:
            issues.append({"field": k, "message": problem})
        else:
            clean[k] = value
    if not for_update and "hostname" not in body:
        issues.append({"field": "hostname", "message": "is required"})
    if for_update and not issues and not clean:
        issues.append({"field": "body", "message": "no updatable fields provided; updatable: "
                                                   + ", ".join(SERVER_UPDATABLE_FIELDS)})
    if issues:
        raise ValidationFailed(issues)
    return clean


def _process_fields(body: dict[str, Any], *, for_update: bool) -> dict[str, Any]:
    try:
        return validate_process_fields(body, for_update=for_update)
    except ProcessValidationError as exc:
        raise ValidationFailed([{"field": i.field, "message": i.message} for i in exc.issues]) from None


def decode_cursor(cursor: str | None) -> int | None:
    if cursor is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, UnicodeError, ValueError):
        raw = ""
    if not raw.startswith("a:") or parse_id(raw[2:]) is None:
        raise ValidationFailed([{"field": "cursor", "message": "invalid cursor"}])
    return int(raw[2:])


def encode_cursor(alert_id: int) -> str:
    return base64.urlsafe_b64encode(f"a:{alert_id}".encode()).decode().rstrip("=")


async def keyset_page(
    fetch: Callable[[int | None, int], Awaitable[list[dict[str, Any]]]], limit: str | None, cursor: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """One page of a newest-first listing by id and its `next_cursor` (None on the last page):
    `fetch(before_id, n)` returns at most n rows with ids below before_id (all when None)."""
    page_size = parse_limit(limit)
    rows = await fetch(decode_cursor(cursor), page_size + 1)
    more = len(rows) > page_size
    rows = rows[:page_size]
    return rows, (encode_cursor(rows[-1]["id"]) if more else None)


def parse_limit(raw: str | None) -> int:
    if raw is None:
        return ALERTS_DEFAULT_LIMIT
    value = parse_id(raw)
    if value is None or value > ALERTS_MAX_LIMIT:
        raise ValidationFailed([{"field": "limit", "message": f"must be an integer from 1 to {ALERTS_MAX_LIMIT}"}])
    return value


# --- auth -------------------------------------------------------------------


def bearer_token(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, token = authorization.partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or len(token) > 512:
        return None
    return token


def caller_token_hash(authorization: str | None) -> str:
    """The hash of the request's bearer token (401 without one); the token itself goes no further."""
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized()
    return hash_secret(token)


# --- servers ----------------------------------------------------------------


async def _server_id(repo: Repository, user_id: int, raw_server_id: str) -> int:
    server_id = parse_id(raw_server_id)
    if server_id is None or not await repo.server_exists(user_id, server_id):
        raise ServerNotFound()
    return server_id


async def list_servers(repo: Repository, user_id: int) -> dict[str, Any]:
    return {"servers": [present_server(r) for r in await repo.list_servers(user_id)]}


async def create_server(repo: Repository, user_id: int, body: dict[str, Any]) -> dict[str, Any]:
    fields = validate_server_fields(body)
    servers = await repo.lock_user_servers(user_id)
    if servers.count >= servers.limit:
        raise PlanLimitReached(plan=servers.plan, limit=servers.limit, current_count=servers.count,
                               scope="servers_per_user")
    agent_key = new_agent_key()
    row = await repo.insert_server(user_id, hash_secret(agent_key), fields)
    return {"server": {**present_server(row), "agent_key": agent_key}}


async def get_server(repo: Repository, user_id: int, raw_server_id: str) -> dict[str, Any]:
    server_id = parse_id(raw_server_id)
    row = await repo.get_server(user_id, server_id) if server_id is not None else None
    if row is None:
        raise ServerNotFound()
    return {"server": present_server(row)}


async def update_server(repo: Repository, user_id: int, raw_server_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """PUT: hostname and the liveness settings (a new offline_after_s moves the deadline with it;
    turning alert_on_offline off resolves an open server_offline alert: the alerter's offline job)."""
    server_id = await _server_id(repo, user_id, raw_server_id)  # another user's server: 404 before any 400
    fields = validate_server_fields(body, for_update=True)
    row = await repo.update_server(user_id, server_id, fields)
    if row is None:
        raise ServerNotFound()  # deleted meanwhile
    return {"server": present_server(row)}


async def list_server_alerts(
    repo: Repository, user_id: int, raw_server_id: str, *, limit: str | None, cursor: str | None
) -> dict[str, Any]:
    """The server's own alert history (server_offline), newest first: the process alert page's shape."""
    server_id = await _server_id(repo, user_id, raw_server_id)
    rows, next_cursor = await keyset_page(lambda before, n: repo.server_alerts_page(server_id, before, n), limit, cursor)
    return {"alerts": [present_alert(r) for r in rows], "next_cursor": next_cursor}


async def delete_server(repo: Repository, user_id: int, raw_server_id: str) -> dict[str, Any]:
    server_id = parse_id(raw_server_id)
    server = await repo.server_with_plan(user_id, server_id, lock=True) if server_id is not None else None
    if server is None:
        raise ServerNotFound()
    # Its processes go first, each with a `deleted` event, so the alerter resolves their alerts.
    for row in await repo.delete_processes_of_server(server.id):
        await _record_change(repo, "deleted", row, hostname=server.hostname)
    await repo.delete_server(user_id, server.id)
    return {"ok": True}


# --- processes --------------------------------------------------------------


async def create_process(repo: Repository, user_id: int, raw_server_id: str, body: dict[str, Any]) -> dict[str, Any]:
    server_id = parse_id(raw_server_id)
    if server_id is None:
        raise ServerNotFound()
    # Lock the server row: concurrent creates on one server count one after another.
    server = await repo.server_with_plan(user_id, server_id, lock=True)
    if server is None:
        raise ServerNotFound()
    fields = _process_fields(body, for_update=False)
    current = await repo.count_processes(server.id)
    if current >= server.limit:
        raise PlanLimitReached(plan=server.plan, limit=server.limit, current_count=current)
    try:
        row = await repo.insert_process(server.id, user_id, fields)
    except DuplicateName:
        raise DuplicateProcess(fields["process_name"]) from None
    await _record_change(repo, "created", row)
    return {"process": present_process(row)}


async def _owned_process(repo: Repository, user_id: int, raw_server_id: str, raw_process_id: str) -> dict[str, Any]:
    server_id = parse_id(raw_server_id)
    if server_id is None:
        raise ServerNotFound()
    process_id = parse_id(raw_process_id)
    found_server, row = await repo.process_of_owned_server(user_id, server_id, process_id or 0)
    if not found_server:
        raise ServerNotFound()
    if row is None:
        raise NotFound("watched process not found")
    return row


async def update_process(
    repo: Repository, user_id: int, raw_server_id: str, raw_process_id: str, body: dict[str, Any]
) -> dict[str, Any]:
    server_id = parse_id(raw_server_id)
    if server_id is None or not await repo.server_exists(user_id, server_id):
        raise ServerNotFound()
    process_id = parse_id(raw_process_id)
    fields = _process_fields(body, for_update=True)
    try:
        row = await repo.update_process(server_id, process_id, fields) if process_id is not None else None
    except DuplicateName:
        raise DuplicateProcess(fields["process_name"]) from None
    if row is None:
        raise NotFound("watched process not found")
    # A pair such as min_count <= max_count is judged on the row as updated (the body may hold
    # one side only); raising rolls the update back.
    issues = ordering_problems(row)
    if issues:
        raise ValidationFailed([{"field": i.field, "message": i.message} for i in issues])
    await _record_change(repo, "updated", row)
    return {"process": present_process(row)}


async def delete_process(repo: Repository, user_id: int, raw_server_id: str, raw_process_id: str) -> dict[str, Any]:
    server_id = await _server_id(repo, user_id, raw_server_id)
    process_id = parse_id(raw_process_id)
    row = await repo.delete_process(server_id, process_id) if process_id is not None else None
    if row is None:
        raise NotFound("watched process not found")
    await _record_change(repo, "deleted", row)
    return {"ok": True}


async def list_alerts(
    repo: Repository, user_id: int, raw_server_id: str, raw_process_id: str, *, limit: str | None, cursor: str | None
) -> dict[str, Any]:
    row = await _owned_process(repo, user_id, raw_server_id, raw_process_id)
    rows, next_cursor = await keyset_page(lambda before, n: repo.alerts_page(row["id"], before, n), limit, cursor)
    return {"alerts": [present_alert(r) for r in rows], "next_cursor": next_cursor}


# --- lifecycle events -------------------------------------------------------


async def _record_change(repo: Repository, change: str, row: dict[str, Any], hostname: str | None = None) -> None:
    """The ProcessChanged event, written to the outbox in the same transaction as the change."""
    event = ProcessChanged(
        event_id=row["event_id"],
        change=change,  # type: ignore[arg-type]
        server_id=row["server_id"],
        user_id=row["user_id"],
        process_id=row["id"],
        process_name=row["process_name"],
        hostname=hostname,
        enabled=bool(row["enabled"]),
        config=ProcessAlertConfig(**{s.name: None if row[s.name] is None else s.type(row[s.name]) for s in SETTINGS}),
        alerted_state=row["alerted_state"],
        occurred_at=datetime.now(UTC),
    )
    await repo.insert_outbox_event(row["event_id"], subjects.processes_changed(row["server_id"]), event.model_dump_json())
