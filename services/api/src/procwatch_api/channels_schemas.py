"""OpenAPI models of the channels resource: what channels_service enforces, exactly.

Like schemas.py, these only document: bodies are parsed by hand (channels_service), so every
input error has the project's error shape.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from procwatch_api.channels_service import (
    ALERT_TYPES,
    MAX_CHANNELS_PER_USER,
    MAX_EMAIL_RECIPIENTS,
    MAX_SERVER_FILTER,
    NAME_MAX,
    READ_ONLY_FIELDS,
    REPEAT_MAX_S,
    REPEAT_MIN_S,
    UPDATABLE_FIELDS,
    URL_MAX,
    name_problem,
)
from procwatch_api.schemas import Flag, name_pattern
from procwatch_domain.channels import CHANNEL_TYPES, EMAIL_MAX, FORMATS

ChannelType = Literal[CHANNEL_TYPES]  # type: ignore[valid-type]
ChannelFormat = Literal[FORMATS]  # type: ignore[valid-type]
AlertTypeName = Literal[ALERT_TYPES]  # type: ignore[valid-type]
DeliveryStatus = Literal["pending", "delivered", "failed", "dead", "skipped"]

_URL_DOC = ("webhook, slack, discord: the receiver's URL (https; http only for private targets where the server"
            " allows them). Refused when its host resolves to a loopback, private, link-local or metadata address."
            " Stored encrypted; answers show `target_hint`")
_TO_DOC = f"email: 1-{MAX_EMAIL_RECIPIENTS} addresses"
_ALERT_TYPES_DOC = "null (default): every alert type, including those added later; else a non-empty list"
_REPEAT_DOC = ("reminders: null (default) = off; else seconds between notifications while an alert stays firing"
               " and unacknowledged (a reminder carries `reminder` n >= 1 and id `<first id>.reminder-<n>`)")
RepeatEvery = Annotated[int, Field(ge=REPEAT_MIN_S, le=REPEAT_MAX_S)]
_SERVERS_DOC = "null (default): every server of the user; else a non-empty list of the user's server ids"


def _request_extra(*, update: bool):
    ignored = READ_ONLY_FIELDS | {"type"} if update else READ_ONLY_FIELDS

    def extra(schema: dict[str, Any]) -> None:
        properties = schema["properties"]
        for name in sorted(ignored):
            properties[name] = {"description": "read-only field of the representation: accepted and ignored"}
        if update:
            for prop in properties.values():
                prop.pop("default", None)
            schema["anyOf"] = [{"required": [name]} for name in UPDATABLE_FIELDS]
        else:
            properties["url"].pop("default", None)
            properties["to"].pop("default", None)
            # The target field that goes with each type; formats other than standard for webhooks only.
            schema["oneOf"] = [
                {"properties": {"type": {"const": "webhook"}}, "required": ["url"], "not": {"required": ["to"]}},
                {"properties": {"type": {"enum": ["slack", "discord"]}, "format": {"const": "standard"}},
                 "required": ["url"], "not": {"required": ["to"]}},
                {"properties": {"type": {"const": "email"}, "format": {"const": "standard"}}, "required": ["to"],
                 "not": {"required": ["url"]}},
            ]

    return extra


URL_PATTERN = r"^https?://\S+$"
# Mirrors procwatch_domain.channels.email_problem: one "@", a dotted domain, no whitespace or control characters.
EmailAddress = Annotated[str, Field(max_length=EMAIL_MAX, pattern=r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+$")]
NAME_DOC = "no control or invisible characters (spaces are fine)"
ServerId = Annotated[int, Field(ge=1, le=2**63 - 1)]


def _name_schema(schema: dict[str, Any]) -> None:
    schema["pattern"] = name_pattern(name_problem)


class ChannelCreate(BaseModel):
    model_config = ConfigDict(extra="forbid", title="ChannelCreate", json_schema_extra=_request_extra(update=False))

    type: ChannelType
    name: str = Field(min_length=1, max_length=NAME_MAX, description=NAME_DOC, json_schema_extra=_name_schema)
    url: str = Field(None, min_length=1, max_length=URL_MAX, pattern=URL_PATTERN,  # type: ignore[assignment]
                     description=_URL_DOC)
    to: list[EmailAddress] = Field(None, min_length=1, max_length=MAX_EMAIL_RECIPIENTS, description=_TO_DOC)  # type: ignore[assignment]
    format: ChannelFormat = Field("standard", description="alertmanager: webhook channels only")
    alert_types: list[AlertTypeName] | None = Field(None, min_length=1, description=_ALERT_TYPES_DOC)
    servers: list[ServerId] | None = Field(None, min_length=1, max_length=MAX_SERVER_FILTER, description=_SERVERS_DOC)
    send_resolved: bool | Flag = Field(True, description="JSON boolean or 0/1: also send when an alert resolves")
    enabled: bool | Flag = Field(True, description="JSON boolean or 0/1")
    repeat_every_s: RepeatEvery | None = Field(None, description=_REPEAT_DOC)


class ChannelUpdate(BaseModel):
    """At least one updatable field; `type` is read-only (ignored). Absent fields are unchanged;
    `alert_types` and `servers` may be null (every type / every server), nothing else may."""

    model_config = ConfigDict(extra="forbid", title="ChannelUpdate", json_schema_extra=_request_extra(update=True))

    name: str = Field(None, min_length=1, max_length=NAME_MAX, description=NAME_DOC,  # type: ignore[assignment]
                      json_schema_extra=_name_schema)
    url: str = Field(None, min_length=1, max_length=URL_MAX, pattern=URL_PATTERN,  # type: ignore[assignment]
                     description=_URL_DOC + " (webhook, slack, discord channels)")
    to: list[EmailAddress] = Field(None, min_length=1, max_length=MAX_EMAIL_RECIPIENTS,  # type: ignore[assignment]
                          description=_TO_DOC + " (email channels)")
    format: ChannelFormat = Field(None, description="alertmanager: webhook channels only")  # type: ignore[assignment]
    alert_types: list[AlertTypeName] | None = Field(None, min_length=1, description=_ALERT_TYPES_DOC)
    servers: list[ServerId] | None = Field(None, min_length=1, max_length=MAX_SERVER_FILTER, description=_SERVERS_DOC)
    send_resolved: bool | Flag = None  # type: ignore[assignment]
    enabled: bool | Flag = Field(None, description="enabling clears disabled_reason")  # type: ignore[assignment]
    repeat_every_s: RepeatEvery | None = Field(None, description=_REPEAT_DOC)


class Channel(BaseModel):
    id: int
    type: ChannelType
    name: str
    format: ChannelFormat
    target_hint: str = Field(description="the URL with its token masked (e.g. https://hooks.slack.com/services/T0…***),"
                                         " or the email addresses")
    secret: str | None = Field(description="webhook channels: the Standard Webhooks signing secret (whsec_...) in"
                                           " the create's answer only, masked afterwards; null for other types")
    alert_types: list[AlertTypeName] | None
    servers: list[int] | None
    send_resolved: Flag
    enabled: Flag
    disabled_reason: str | None = Field(description="set when the notifier disabled the channel (e.g. 410 Gone)")
    repeat_every_s: int | None = Field(description=_REPEAT_DOC)
    created_at: str
    updated_at: str


class ChannelList(BaseModel):
    channels: list[Channel] = Field(description=f"oldest first; at most {MAX_CHANNELS_PER_USER} per user")


class ChannelOne(BaseModel):
    channel: Channel


class Delivery(BaseModel):
    id: int
    alert_id: str = Field(description="the alert event's id")
    alert_type: AlertTypeName
    alert_state: Literal["firing", "resolved"]
    status: DeliveryStatus = Field(description="dead: gave up after the last retry")
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    reminder: int = Field(description="0: the alert's first notification; n: its n-th reminder")


class DeliveryPage(BaseModel):
    deliveries: list[Delivery] = Field(description="newest first")
    next_cursor: str | None


class TestOutcome(BaseModel):
    ok: Flag = Field(description="1: the receiver accepted it (2xx, or the mail server accepted the mail)")
    status_code: int | None = Field(description="the receiver's HTTP status (250 for an accepted mail)")
    error: str | None


class TestResult(BaseModel):
    test: TestOutcome


CHANNEL_REQUEST_MODELS: tuple[type[BaseModel], ...] = (ChannelCreate, ChannelUpdate)
