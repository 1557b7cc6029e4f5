"""The channels resource (/channels): a user's notification channels. No framework imports.

A channel's target (the URL of a webhook, Slack or Discord channel; the addresses of an email
channel) and a webhook's signing secret are stored encrypted (procwatch_domain.crypto). The
signing secret is answered once, by the create; afterwards answers carry `target_hint` (the
URL with its token masked) and a masked secret. Nothing here logs a target or a secret.
"""

from __future__ import annotations

import asyncio
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, get_args

import orjson

from procwatch_api.channels_repository import ChannelRepository
from procwatch_api.errors import NotFound, PlanLimitReached, SecretsUnavailable, ValidationFailed
from procwatch_api.service import json_time, keyset_page, parse_id
from procwatch_contracts.messages import AlertEvent, AlertType
from procwatch_domain import crypto
from procwatch_domain.channels import (
    CHANNEL_TYPES,
    FORMATS,
    URL_CHANNEL_TYPES,
    WEBHOOK_ONLY_FORMATS,
    email_hint,
    email_problem,
    mask_url,
)
from procwatch_domain.validation import parse_boolean
from procwatch_notify.send import ChannelTarget, Outcome, SendSettings, decrypt_target, send_once
from procwatch_notify.targets import TargetRefused, check_target

# Every alert type a channel can subscribe to: the contracts' AlertType. server_offline is
# named too, for a build whose contracts predate it (the liveness rules add it to AlertType).
ALERT_TYPES: tuple[str, ...] = tuple(dict.fromkeys((*get_args(AlertType), "server_offline")))
# A flat limit, whatever the plan: channels cost nothing per alert until they match one.
MAX_CHANNELS_PER_USER = 20
NAME_MAX = 100
URL_MAX = 2000
MAX_EMAIL_RECIPIENTS = 10
MAX_SERVER_FILTER = 500  # the largest plan's server count
SECRET_MASK = "whsec_********"
RESOLVE_TIMEOUT_S = 5.0
CHANNEL_FIELDS = ("type", "name", "url", "to", "format", "alert_types", "servers", "send_resolved", "enabled",
                  "repeat_every_s")
# Reminders (docs/notifications.md): null = off (the default), else every 1 minute to 7 days.
REPEAT_MIN_S = 60
REPEAT_MAX_S = 7 * 86400
UPDATABLE_FIELDS = tuple(f for f in CHANNEL_FIELDS if f != "type")
# Fields of the representation a client may echo back: accepted and ignored (`type` too, on a PUT:
# a channel's type never changes).
READ_ONLY_FIELDS = frozenset({"id", "target_hint", "secret", "disabled_reason", "created_at", "updated_at"})
_BOOLEANS = ("send_resolved", "enabled")


# --- representation ---------------------------------------------------------


def present_channel(row: dict[str, Any], *, secret: str | None = None) -> dict[str, Any]:
    """`secret`: the webhook signing secret in clear, only in the create's answer."""
    return {
        "id": row["id"],
        "type": row["type"],
        "name": row["name"],
        "format": row["format"],
        "target_hint": row["target_hint"],
        "secret": secret or (SECRET_MASK if row["type"] == "webhook" else None),
        "alert_types": row["alert_types"],
        "servers": row["server_ids"],
        "send_resolved": int(row["send_resolved"]),
        "enabled": int(row["enabled"]),
        "repeat_every_s": row["repeat_every_s"],
        "disabled_reason": row["disabled_reason"],
        "created_at": json_time(row["created_at"]),
        "updated_at": json_time(row["updated_at"]),
    }


def present_delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": row["id"],
        "alert_id": row["alert_id"],
        "alert_type": row["alert_type"],
        "alert_state": row["alert_state"],
        "status": row["status"],
        "attempts": row["attempts"],
        "last_status_code": row["last_status_code"],
        "last_error": row["last_error"],
        "next_attempt_at": json_time(row["next_attempt_at"]),
        "created_at": json_time(row["created_at"]),
        "delivered_at": json_time(row["delivered_at"]),
        "reminder": row["reminder"],
    }


# --- input ------------------------------------------------------------------


@dataclass
class ChannelInput:
    """The valid fields of a create or update body (only those present, defaults added on create)."""

    fields: dict[str, Any]
    issues: list[dict[str, str]]

    def problem(self, field: str, message: str) -> None:
        self.issues.append({"field": field, "message": message})


def name_problem(name: Any) -> str | None:
    """Why `name` is not a channel name, or None. Spaces are fine ("ops on-call")."""
    if not isinstance(name, str):
        return "must be a string"
    if not 1 <= len(name) <= NAME_MAX:
        return f"must be 1-{NAME_MAX} characters"
    for ch in name:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Co", "Cn", "Zl", "Zp"):
            return "must not contain control or invisible characters"
    return None


def whole_number(value: Any, low: int, high: int) -> int | None:
    """`value` as an int in [low, high] (a JSON number with no fraction, like 60.0, counts: JSON Schema's
    "integer"), else None."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return value if type(value) is int and low <= value <= high else None


def _url_problem(url: Any) -> str | None:
    if not isinstance(url, str):
        return "must be a string"
    if not 1 <= len(url) <= URL_MAX:
        return f"must be 1-{URL_MAX} characters"
    if any(ch.isspace() or unicodedata.category(ch) == "Cc" for ch in url):
        return "must not contain whitespace or control characters"
    return None


def _recipients(value: Any, into: ChannelInput) -> None:
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_EMAIL_RECIPIENTS:
        into.problem("to", f"must be a list of 1-{MAX_EMAIL_RECIPIENTS} email addresses")
        return
    for address in value:
        problem = email_problem(address) if isinstance(address, str) else "every address must be a string"
        if problem:
            into.problem("to", problem[:200])
            return
    into.fields["to"] = list(dict.fromkeys(value))


def _alert_types(value: Any, into: ChannelInput) -> None:
    if value is None:
        into.fields["alert_types"] = None
        return
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        into.problem("alert_types", "must be null (every type) or a non-empty list of alert types")
        return
    unknown = [v for v in value if v not in ALERT_TYPES]
    if unknown:
        into.problem("alert_types", f"unknown alert type {unknown[0][:50]!r}; one of: " + ", ".join(ALERT_TYPES))
        return
    into.fields["alert_types"] = sorted(set(value), key=ALERT_TYPES.index)


def _servers(value: Any, into: ChannelInput) -> None:
    if value is None:
        into.fields["servers"] = None
        return
    if not isinstance(value, list) or not 1 <= len(value) <= MAX_SERVER_FILTER or \
            not all(type(v) is int and 1 <= v < 2**63 for v in value):
        into.problem("servers", f"must be null (every server) or a list of 1-{MAX_SERVER_FILTER} server ids")
        return
    into.fields["servers"] = sorted(set(value))


def parse_channel_fields(body: dict[str, Any], *, for_update: bool) -> ChannelInput:
    """The clean values of the fields present in `body` and every problem found (not just the
    first). Rules that depend on the channel type (url or to, format) are checked by
    `check_type_rules`, once the type is known."""
    into = ChannelInput({}, [])
    for field, value in body.items():
        if field == "type" and for_update:
            pass  # read-only once created
        elif field == "type":
            if value not in CHANNEL_TYPES:
                into.problem("type", "must be one of: " + ", ".join(CHANNEL_TYPES))
            else:
                into.fields["type"] = value
        elif field == "name":
            problem = name_problem(value)
            into.problem("name", problem) if problem else into.fields.__setitem__("name", value)
        elif field == "url":
            problem = _url_problem(value)
            into.problem("url", problem) if problem else into.fields.__setitem__("url", value)
        elif field == "to":
            _recipients(value, into)
        elif field == "format":
            if value not in FORMATS:
                into.problem("format", "must be one of: " + ", ".join(FORMATS))
            else:
                into.fields["format"] = value
        elif field == "alert_types":
            _alert_types(value, into)
        elif field == "servers":
            _servers(value, into)
        elif field == "repeat_every_s":
            seconds = whole_number(value, REPEAT_MIN_S, REPEAT_MAX_S)
            if value is not None and seconds is None:
                into.problem(field, f"must be null (no reminders) or whole seconds {REPEAT_MIN_S}-{REPEAT_MAX_S}")
            else:
                into.fields[field] = seconds
        elif field in _BOOLEANS:
            flag = parse_boolean(value)
            if flag is None:
                into.problem(field, "must be a boolean (true/false or 0/1)")
            else:
                into.fields[field] = flag
        elif field not in READ_ONLY_FIELDS:
            into.problem(str(field)[:100], "unknown field")
    if not for_update:
        for required in ("type", "name"):
            if required not in body:
                into.problem(required, "is required")
    elif not into.issues and not into.fields:
        into.problem("body", "no updatable fields provided; updatable: " + ", ".join(UPDATABLE_FIELDS))
    return into


def check_type_rules(channel_type: str, into: ChannelInput, *, creating: bool) -> None:
    """url for webhook/Slack/Discord, to for email; a format other than standard for webhooks only."""
    if channel_type in URL_CHANNEL_TYPES:
        target, other = "url", "to"
    else:
        target, other = "to", "url"
    if other in into.fields:
        into.problem(other, f"not a field of a {channel_type} channel (it takes {target!r})")
        del into.fields[other]
    if creating and target not in into.fields and not any(i["field"] == target for i in into.issues):
        into.problem(target, "is required")
    if into.fields.get("format") in WEBHOOK_ONLY_FORMATS and channel_type != "webhook":
        into.problem("format", f"{into.fields['format']!r} is for webhook channels only")


# --- use cases --------------------------------------------------------------


async def _check_url(url: str, allow_private: bool, into: ChannelInput) -> None:
    """SSRF protection (procwatch_notify.targets): resolves the host off the event loop, for at
    most RESOLVE_TIMEOUT_S (a resolver that hangs must not hold the request and its connection)."""
    try:
        await asyncio.wait_for(asyncio.to_thread(check_target, url, allow_private), RESOLVE_TIMEOUT_S)
    except TargetRefused as exc:
        into.problem("url", exc.reason[:300])
    except TimeoutError:
        into.problem("url", f"the host did not resolve within {RESOLVE_TIMEOUT_S:g} s")


async def _check_servers(repo: ChannelRepository, user_id: int, into: ChannelInput) -> None:
    wanted = into.fields.get("servers")
    if not wanted:
        return
    owned = await repo.owned_server_ids(user_id, wanted)
    missing = [s for s in wanted if s not in owned]
    if missing:
        # Another user's server answers like one that does not exist.
        into.problem("servers", f"server {missing[0]} not found")


def _encrypt(plaintext: str) -> str:
    try:
        return crypto.encrypt(plaintext)
    except crypto.SecretsKeyError:
        raise SecretsUnavailable() from None


def _columns(channel_type: str, fields: dict[str, Any]) -> dict[str, Any]:
    """The clean fields as columns: the target encrypted, with its masked hint."""
    columns = {k: v for k, v in fields.items()
               if k in ("name", "format", "alert_types", "send_resolved", "enabled", "repeat_every_s")}
    if "servers" in fields:
        columns["server_ids"] = fields["servers"]
    if "url" in fields:
        columns["target_encrypted"] = _encrypt(fields["url"])
        columns["target_hint"] = mask_url(fields["url"])
    if "to" in fields:
        columns["target_encrypted"] = _encrypt(orjson.dumps(fields["to"]).decode())
        columns["target_hint"] = email_hint(fields["to"])
    if fields.get("enabled"):
        # Enabled again by its owner (e.g. after the receiver answered 410 Gone): the reason is history.
        columns["disabled_reason"] = None
    return columns


async def _validated(repo: ChannelRepository, user_id: int, channel_type: str, into: ChannelInput,
                     *, creating: bool, allow_private: bool) -> dict[str, Any]:
    check_type_rules(channel_type, into, creating=creating)
    if "url" in into.fields:
        await _check_url(into.fields["url"], allow_private, into)
    await _check_servers(repo, user_id, into)
    if into.issues:
        raise ValidationFailed(into.issues)
    return into.fields


async def list_channels(repo: ChannelRepository, user_id: int) -> dict[str, Any]:
    return {"channels": [present_channel(r) for r in await repo.list_channels(user_id)]}


async def create_channel(repo: ChannelRepository, user_id: int, body: dict[str, Any], *,
                         allow_private: bool) -> dict[str, Any]:
    into = parse_channel_fields(body, for_update=False)
    channel_type = into.fields.get("type")
    if channel_type is None:  # missing or invalid: the type rules cannot be checked yet
        raise ValidationFailed(into.issues)
    fields = await _validated(repo, user_id, channel_type, into, creating=True, allow_private=allow_private)
    mine = await repo.lock_user_channels(user_id)
    if mine.count >= MAX_CHANNELS_PER_USER:
        raise PlanLimitReached(plan=mine.plan, limit=MAX_CHANNELS_PER_USER, current_count=mine.count,
                               scope="channels_per_user")
    columns = _columns(channel_type, fields)
    secret = None
    if channel_type == "webhook":
        secret = crypto.new_webhook_secret()
        columns["secret_encrypted"] = _encrypt(secret)
    row = await repo.insert_channel(user_id, channel_type, columns)
    return {"channel": present_channel(row, secret=secret)}


async def _owned(repo: ChannelRepository, user_id: int, raw_channel_id: str) -> dict[str, Any]:
    channel_id = parse_id(raw_channel_id)
    row = await repo.get_channel(user_id, channel_id) if channel_id is not None else None
    if row is None:
        raise NotFound("channel not found")
    return row


async def get_channel(repo: ChannelRepository, user_id: int, raw_channel_id: str) -> dict[str, Any]:
    return {"channel": present_channel(await _owned(repo, user_id, raw_channel_id))}


async def update_channel(repo: ChannelRepository, user_id: int, raw_channel_id: str, body: dict[str, Any], *,
                         allow_private: bool) -> dict[str, Any]:
    current = await _owned(repo, user_id, raw_channel_id)
    into = parse_channel_fields(body, for_update=True)
    fields = await _validated(repo, user_id, current["type"], into, creating=False, allow_private=allow_private)
    # No lock while the URL's host resolves: a channel deleted meanwhile updates nothing (404).
    row = await repo.update_channel(user_id, current["id"], _columns(current["type"], fields))
    if row is None:
        raise NotFound("channel not found")
    return {"channel": present_channel(row)}


async def delete_channel(repo: ChannelRepository, user_id: int, raw_channel_id: str) -> dict[str, Any]:
    channel_id = parse_id(raw_channel_id)
    if channel_id is None or not await repo.delete_channel(user_id, channel_id):
        raise NotFound("channel not found")
    return {"ok": True}


async def list_deliveries(repo: ChannelRepository, user_id: int, raw_channel_id: str, *,
                          limit: str | None, cursor: str | None) -> dict[str, Any]:
    channel = await _owned(repo, user_id, raw_channel_id)
    rows, next_cursor = await keyset_page(lambda before, n: repo.deliveries_page(channel["id"], before, n),
                                          limit, cursor)
    return {"deliveries": [present_delivery(r) for r in rows], "next_cursor": next_cursor}


# --- test -------------------------------------------------------------------


async def channel_target(repo: ChannelRepository, user_id: int, raw_channel_id: str) -> tuple[int, ChannelTarget]:
    """The channel's id and its target, decrypted, for one test send."""
    channel_id = parse_id(raw_channel_id)
    stored = await repo.stored_target(user_id, channel_id) if channel_id is not None else None
    if stored is None:
        raise NotFound("channel not found")
    try:
        return channel_id, decrypt_target(stored.type, stored.format, stored.target_encrypted,
                                          stored.secret_encrypted)
    except (crypto.SecretsKeyError, crypto.SecretUnreadable):
        raise SecretsUnavailable() from None


def test_event(user_id: int, channel_id: int) -> AlertEvent:
    """What a test sends: a firing process_down of a made-up process, its id marked as a test."""
    now = datetime.now(UTC)
    return AlertEvent(
        id=f"test-{channel_id}-{now.strftime('%Y%m%dT%H%M%S%fZ')}", type="process_down", state="firing",
        occurred_at=now, user_id=user_id, server={"id": 0, "hostname": "procwatch-test"},
        process={"id": 0, "process_name": "procwatch-test"},
    )


def present_outcome(outcome: Outcome) -> dict[str, Any]:
    return {"ok": int(outcome.ok), "status_code": outcome.status_code, "error": outcome.error}


async def send_test(target: ChannelTarget, user_id: int, channel_id: int, settings: SendSettings) -> dict[str, Any]:
    """One attempt (at most SendSettings.timeout_s), no retry, not recorded in the deliveries."""
    outcome = await send_once(target, test_event(user_id, channel_id), settings=settings, test=True)
    return {"test": present_outcome(outcome)}
