"""Pydantic models that document the API in /openapi.json.

Request bodies are parsed by hand (orjson, then procwatch_domain.validation) so
every input error has the project's error shape; these models only describe
the shapes, they never validate a request. The alert settings' fields (flags,
thresholds: name, default, bounds) come from the rule registry
(procwatch_domain.rules), like the validation that enforces them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from procwatch_domain.liveness import ALL_ALERT_TYPES, ALERT_ON_OFFLINE, OFFLINE_AFTER
from procwatch_domain.rules import SETTINGS, Setting

from procwatch_api.service import SERVER_READ_ONLY_FIELDS, SERVER_UPDATABLE_FIELDS, hostname_problem
from procwatch_domain.validation import READ_ONLY_FIELDS, UPDATABLE_FIELDS, process_name_problem

Flag = Literal[0, 1]
_CLASS_SPECIALS = frozenset("\\]^-[")


@functools.cache
def name_pattern(problem: Callable[[str], str | None]) -> str:
    """The characters a name rule (`problem(name)` -> why not, or None) accepts, as one character
    class: for process names no whitespace, control, format, private-use, surrogate or unassigned
    characters (as this Python's Unicode database has them) and no shell metacharacters; hostnames
    the same but the metacharacters. Computed from the rule itself, once, when the document is built."""
    ranges: list[tuple[int, int]] = []
    for cp in range(0x110000):
        if problem(chr(cp)) is None:
            if ranges and ranges[-1][1] == cp - 1:
                ranges[-1] = (ranges[-1][0], cp)
            else:
                ranges.append((cp, cp))

    def char(cp: int) -> str:
        c = chr(cp)
        return "\\" + c if c in _CLASS_SPECIALS else c

    body = "".join(char(a) if a == b else f"{char(a)}-{char(b)}" for a, b in ranges)
    return f"^[{body}]+$"


def _process_name_schema(schema: dict[str, Any]) -> None:
    schema["pattern"] = name_pattern(process_name_problem)


def _hostname_schema(schema: dict[str, Any]) -> None:
    schema["pattern"] = name_pattern(hostname_problem)


def _document_request(required_any_of: tuple[str, ...] | None, ignored: frozenset[str]):
    """json_schema_extra of a request model: fields the server ignores (read-only fields of the
    representation echoed back) are allowed with any value; no field is nullable; and, for an
    update, at least one of `required_any_of` must be present."""

    def extra(schema: dict[str, Any]) -> None:
        properties = schema["properties"]
        for prop in properties.values():
            prop.pop("default", None) if required_any_of else None
        for name in sorted(ignored):
            properties[name] = {"description": "read-only field of the representation: accepted and ignored"}
        if required_any_of:
            schema["anyOf"] = [{"required": [name]} for name in required_any_of]

    return extra


def _number_type(setting: Setting) -> type:
    return int if setting.type is int else float


def _create_field(setting: Setting) -> tuple[Any, Any]:
    if setting.is_flag:
        return bool | Flag, Field(setting.default, description=setting.description)
    return _number_type(setting), Field(setting.default, ge=setting.minimum, le=setting.maximum,
                                        description=setting.description)


def _update_field(setting: Setting) -> tuple[Any, Any]:
    # Not nullable: an absent field is unchanged, a null one is refused (400).
    if setting.is_flag:
        return bool | Flag, None
    return _number_type(setting), Field(None, ge=setting.minimum, le=setting.maximum)


def _shown_field(setting: Setting) -> tuple[Any, Any]:
    return (Flag if setting.is_flag else _number_type(setting)), ...


class Error(BaseModel):
    error: str = Field(description="machine-readable code, e.g. `validation_failed`")
    message: str


class Issue(BaseModel):
    field: str
    message: str


class ValidationFailedError(Error):
    error: Literal["validation_failed"] = "validation_failed"
    issues: list[Issue]


class PlanLimitError(Error):
    error: Literal["plan_limit_reached"] = "plan_limit_reached"
    scope: Literal["per_server", "servers_per_user"] = Field(
        description="per_server: watched processes of the server; servers_per_user: servers of the user")
    plan: str
    limit: int
    current_count: int


class RateLimitError(Error):
    error: Literal["rate_limited"] = "rate_limited"
    limit: int
    retry_after: int


PROCESS_NAME_RULE = ("No whitespace, control, format (invisible), private-use or unassigned characters and no"
                     " shell metacharacters ; & $ ` \\ \" ' < > ( ) { } |")


class _ProcessCreateHead(BaseModel):
    model_config = ConfigDict(extra="forbid", title="ProcessCreate",
                              json_schema_extra=_document_request(None, READ_ONLY_FIELDS))

    process_name: str = Field(min_length=1, max_length=100, description=PROCESS_NAME_RULE,
                              json_schema_extra=_process_name_schema)
    enabled: bool | Flag = Field(True, description="JSON boolean or 0/1")


ProcessCreate = create_model(  # + one field per alert setting
    "ProcessCreate", __base__=_ProcessCreateHead, __module__=__name__,
    **{s.name: _create_field(s) for s in SETTINGS},  # type: ignore[call-overload]
)


class _ProcessUpdateHead(BaseModel):
    """At least one updatable field; none may be null. Read-only fields of the representation are ignored."""

    model_config = ConfigDict(extra="forbid", title="ProcessUpdate",
                              json_schema_extra=_document_request(UPDATABLE_FIELDS, READ_ONLY_FIELDS))

    # Typed without None: an absent field is unchanged, a null one is refused (400).
    process_name: str = Field(None, min_length=1, max_length=100, description=PROCESS_NAME_RULE,  # type: ignore[assignment]
                              json_schema_extra=_process_name_schema)
    enabled: bool | Flag = None  # type: ignore[assignment]


ProcessUpdate = create_model(  # + one optional, non-nullable field per alert setting
    "ProcessUpdate", __base__=_ProcessUpdateHead, __module__=__name__,
    **{s.name: _update_field(s) for s in SETTINGS},  # type: ignore[call-overload]
)


_HOSTNAME_RULE = "No whitespace, control or invisible characters"


class ServerCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", title="ServerCreate",
                              json_schema_extra=_document_request(None, SERVER_READ_ONLY_FIELDS))

    hostname: str = Field(min_length=1, max_length=255, description=_HOSTNAME_RULE, json_schema_extra=_hostname_schema)
    offline_after_s: int = _create_field(OFFLINE_AFTER)[1]
    alert_on_offline: bool | Flag = _create_field(ALERT_ON_OFFLINE)[1]


class ServerUpdate(BaseModel):
    """At least one updatable field; none may be null. Read-only fields of the representation are ignored."""

    model_config = ConfigDict(extra="forbid", title="ServerUpdate",
                              json_schema_extra=_document_request(SERVER_UPDATABLE_FIELDS, SERVER_READ_ONLY_FIELDS))

    # Typed without None: an absent field is unchanged, a null one is refused (400).
    hostname: str = Field(None, min_length=1, max_length=255, description=_HOSTNAME_RULE,  # type: ignore[assignment]
                          json_schema_extra=_hostname_schema)
    offline_after_s: int = _update_field(OFFLINE_AFTER)[1]
    alert_on_offline: bool | Flag = _update_field(ALERT_ON_OFFLINE)[1]


class _ProcessHead(BaseModel):
    model_config = ConfigDict(title="Process")

    id: int
    server_id: int
    user_id: int
    process_name: str
    enabled: Flag


Process = create_model(  # + one field per alert setting, then the state
    "Process", __base__=_ProcessHead, __module__=__name__,
    **{s.name: _shown_field(s) for s in SETTINGS},  # type: ignore[call-overload]
    last_count=(int | None, ...),
    last_cpu_pct=(float | None, ...),
    last_memory_pct=(float | None, ...),
    last_sample_at=(str | None, Field(description="ISO 8601 UTC, e.g. 2026-05-24T18:41:00Z")),
    alerted_state=(str | None, Field(description='null or firing conditions, e.g. "cpu,memory"')),
    status=(Literal["paused", "pending", "down", "alerting", "up"], ...),
    created_at=(str, ...),
    updated_at=(str, ...),
)


class ServerSummary(BaseModel):
    id: int
    hostname: str
    last_agent_version: str | None


class Server(ServerSummary):
    created_at: str
    last_seen_at: str | None = Field(description="when the agent last sent anything (a sample or its heartbeat), on"
                                                 " the broker's clock; null: never")
    status: Literal["pending", "online", "offline"] = Field(
        description="pending: never seen; offline: nothing for offline_after_s; online otherwise")
    offline_after_s: int = Field(ge=OFFLINE_AFTER.minimum, le=OFFLINE_AFTER.maximum,
                                 description=OFFLINE_AFTER.description)
    alert_on_offline: Flag = Field(description=ALERT_ON_OFFLINE.description)


class ServerCreated(Server):
    agent_key: str = Field(description="shown only in this response; only its hash is stored")


class Sample(BaseModel):
    id: int
    watched_process_id: int
    count: int
    cpu_pct: float
    memory_pct: float
    oldest_start_unix: int | None
    recorded_at: str


class Alert(BaseModel):
    id: int
    type: Literal[ALL_ALERT_TYPES]  # type: ignore[valid-type]
    state: Literal["firing", "resolved"]
    value: float | None
    threshold: float | None
    started_at: str
    resolved_at: str | None
    resolve_reason: str | None


class ProcessList(BaseModel):
    processes: list[Process]
    plan_limit: int
    current_count: int
    plan: str
    server: ServerSummary


class ProcessOne(BaseModel):
    process: Process


class ProcessDetail(BaseModel):
    process: Process
    samples: list[Sample] = Field(description="the last 100, newest first")
    samples_total: int
    recent_restarts: int = Field(description="restarts among the samples of the last 24 hours")


class AlertPage(BaseModel):
    alerts: list[Alert]
    next_cursor: str | None


class ServerList(BaseModel):
    servers: list[Server]


class ServerOne(BaseModel):
    server: Server


class ServerCreatedOne(BaseModel):
    server: ServerCreated


class Ok(BaseModel):
    ok: Literal[True] = True


class Ready(BaseModel):
    status: Literal["ready", "not_ready"]
    checks: dict[str, str]


REQUEST_MODELS: tuple[type[BaseModel], ...] = (ProcessCreate, ProcessUpdate, ServerCreate, ServerUpdate)


def request_body(model: type[BaseModel]) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is parsed by hand."""
    return {
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{model.__name__}"}}},
        }
    }


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route: 401 and 429 always, plus the given statuses."""
    described = {
        400: (ValidationFailedError, "validation_failed: the body or a parameter is invalid"),
        401: (Error, "unauthorized: missing, invalid or revoked bearer token"),
        402: (PlanLimitError, "plan_limit_reached: as many watched processes on the server (per_server) or"
              " servers (servers_per_user) as the plan allows"),
        404: (Error, "server_not_found / not_found (also for resources of other users and malformed ids)"),
        409: (Error, "duplicate_process: the name is taken on this server"),
        413: (Error, "body_too_large"),
        429: (RateLimitError, "rate_limited: see the Retry-After header"),
        503: (Error, "service_unavailable: the database cannot be reached; retry (see Retry-After)"),
    }
    return {status: {"model": described[status][0], "description": described[status][1]}
            for status in sorted({401, 429, 503, *statuses})}
