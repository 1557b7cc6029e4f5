"""What each kind of channel receives for an alert event (pure): the bodies of webhooks
(Standard Webhooks or Alertmanager v4), Slack, Discord and email, and the digest that stands
for many events in one chat message.

Every human-readable message says which server, which process, what happened, the value
against the threshold, and since when (`describe`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import orjson

from procwatch_contracts.messages import AlertEvent
from procwatch_notify import webhooks

CHANNEL_TYPES = ("webhook", "slack", "discord", "email")
FORMATS = ("standard", "alertmanager")
# Chat channels: one message per event, digests in bursts (procwatch_notify.digest).
CHAT_TYPES = ("slack", "discord")

# Discord's embed limits (https://discord.com/developers/docs/resources/message#embed-object-embed-limits).
DISCORD_TITLE = 256
DISCORD_DESCRIPTION = 4096
DISCORD_FIELDS = 25
DISCORD_FIELD_NAME = 256
DISCORD_FIELD_VALUE = 1024
DISCORD_TOTAL = 6000
DISCORD_EMBEDS = 10
# Slack: a section's text is at most 3000 characters, a message at most 50 blocks.
SLACK_SECTION = 3000
SLACK_TEXT = 4000
# A digest lists at most this many events, then "... and N more".
DIGEST_MAX_LINES = 40

AM_ZERO_TIME = "0001-01-01T00:00:00Z"

COLOR_FIRING = 0xD93F0B
COLOR_RESOLVED = 0x2DA44E
COLOR_INFO = 0x6E7781


@dataclass(frozen=True)
class Request:
    """A rendered notification: the body (JSON for HTTP channels, the text for email) and the
    headers or subject that go with it. Signing headers are added per attempt (send.py)."""

    body: bytes
    headers: dict[str, str] = field(default_factory=lambda: {"content-type": "application/json"})
    subject: str | None = None
    signed: bool = False  # webhooks: add the Standard Webhooks headers at send time


@dataclass(frozen=True)
class Description:
    """The human-readable facts of one alert event."""

    title: str  # e.g. "nginx is down on web-1"
    server: str
    process: str | None
    what: str  # "down", "back up", "CPU above threshold", ...
    measure: str | None  # "value 93.5 % against threshold 50 %"
    since: str  # "since 2026-12-01 11:57:08 UTC" / "resolved at ..."
    firing: bool


def _when(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".") if value != int(value) else str(int(value))


# alert type -> (what when firing, what when resolved, unit of value/threshold)
_WORDS: dict[str, tuple[str, str, str]] = {
    "process_down": ("is down", "is back up", "running"),
    "process_restarted": ("restarted", "restarted", ""),
    "process_cpu_high": ("CPU is above its threshold", "CPU is back below its threshold", "%"),
    "process_memory_high": ("memory is above its threshold", "memory is back below its threshold", "%"),
    "server_offline": ("is offline", "is back online", "s since last seen"),
    "process_count_out_of_range": ("process count is out of range", "process count is back in range",
                                   "running"),
}


def _measure(event: AlertEvent, unit: str) -> str | None:
    if event.type == "process_count_out_of_range" and event.value is not None:
        # The threshold is the bound crossed: below min_count or above max_count.
        if event.threshold is None:
            return f"{_num(event.value)} running"
        side = "at least" if event.value < event.threshold else "at most"
        return f"{_num(event.value)} running (expected {side} {_num(event.threshold)})"
    if event.value is None and event.threshold is None:
        if event.type == "process_down" and event.state == "firing":
            return "0 running (expected at least 1)"
        return None
    suffix = f" {unit}" if unit and unit != "%" else unit
    parts = []
    if event.value is not None:
        parts.append(f"value {_num(event.value)}{suffix}")
    if event.threshold is not None:
        parts.append(f"threshold {_num(event.threshold)}{suffix}")
    elif event.type == "process_down":
        parts.append("expected at least 1")
    return " against ".join(parts)


def describe(event: AlertEvent, *, test: bool = False) -> Description:
    firing = event.state == "firing"
    fire_words, resolve_words, unit = _WORDS.get(
        event.type, (f"{event.type} fired", f"{event.type} resolved", ""))
    what = fire_words if firing else resolve_words
    host = event.server.hostname
    process = event.process.process_name if event.process is not None else None
    title = f"{process} {what} on {host}" if process else f"{host} {what}"
    if event.reason and not firing and event.reason != "recovered":
        title += f" ({event.reason.replace('_', ' ')})"
    since = f"since {_when(event.occurred_at)}" if firing else f"resolved at {_when(event.occurred_at)}"
    if event.reminder:
        title = f"[reminder {event.reminder}] {title}"
    elif event.reason == "maintenance_ended":
        title = f"{title} (still firing after maintenance)"
    if test:
        title = f"[test] {title}"
    return Description(title=title, server=f"{host} (id {event.server.id})",
                       process=(f"{process} (id {event.process.id})" if event.process is not None else None),
                       what=what, measure=_measure(event, unit), since=since, firing=firing)


def text(d: Description) -> str:
    """One line, everything in it (Slack's `text`: mobile notifications show only this)."""
    parts = [d.title]
    if d.measure:
        parts.append(d.measure)
    parts.append(d.since)
    return " — ".join(parts)


def _json(value: object) -> bytes:
    return orjson.dumps(value)


# --- Slack ---------------------------------------------------------------------------------


def _cut(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 1] + "…"


def slack(event: AlertEvent, *, test: bool = False) -> Request:
    d = describe(event, test=test)
    icon = ":red_circle:" if d.firing else ":large_green_circle:"
    fields = [f"*Server*\n{d.server}", f"*Process*\n{d.process or '—'}", f"*What*\n{d.what}",
              f"*When*\n{d.since}"]
    if d.measure:
        fields.append(f"*Value*\n{d.measure}")
    return Request(_json({
        "text": _cut(text(d), SLACK_TEXT),
        "blocks": [
            {"type": "section", "text": {"type": "mrkdwn", "text": _cut(f"{icon} *{d.title}*", SLACK_SECTION)}},
            {"type": "section", "fields": [{"type": "mrkdwn", "text": _cut(f, 2000)} for f in fields]},
            {"type": "context", "elements": [{"type": "mrkdwn", "text": _cut(f"alert `{event.id}`", 3000)}]},
        ],
    }))


# --- Discord -------------------------------------------------------------------------------


def fit_embed(embed: dict) -> dict:
    """The embed cut to Discord's limits: title, description, fields (count, name, value) and
    the 6000 characters of all of them together (fields that do not fit are dropped, keeping
    room for the start of the description, which gives way last)."""
    out = dict(embed)
    if "title" in out:
        out["title"] = _cut(out["title"], DISCORD_TITLE)
    if "description" in out:
        out["description"] = _cut(out["description"], DISCORD_DESCRIPTION)
    used = len(out.get("title", "")) + len(out.get("footer", {}).get("text", ""))
    keep_for_description = min(len(out.get("description", "")), 500)
    fields = []
    for f in out.get("fields", [])[:DISCORD_FIELDS]:
        cut = {**f, "name": _cut(f["name"], DISCORD_FIELD_NAME), "value": _cut(f["value"], DISCORD_FIELD_VALUE)}
        size = len(cut["name"]) + len(cut["value"])
        if used + size > DISCORD_TOTAL - keep_for_description:
            break
        fields.append(cut)
        used += size
    if "fields" in out:
        out["fields"] = fields
    if "description" in out:
        out["description"] = _cut(out["description"], max(1, DISCORD_TOTAL - used))
    return out


def embed_chars(embed: dict) -> int:
    """Characters Discord counts against the 6000 total of an embed."""
    return (len(embed.get("title", "")) + len(embed.get("description", ""))
            + sum(len(f["name"]) + len(f["value"]) for f in embed.get("fields", []))
            + len(embed.get("footer", {}).get("text", "")))


def discord(event: AlertEvent, *, test: bool = False) -> Request:
    d = describe(event, test=test)
    fields = [{"name": "Server", "value": d.server, "inline": True},
              {"name": "Process", "value": d.process or "—", "inline": True},
              {"name": "When", "value": d.since, "inline": False}]
    if d.measure:
        fields.append({"name": "Value", "value": d.measure, "inline": False})
    embed = fit_embed({
        "title": d.title, "description": text(d),
        "color": COLOR_FIRING if d.firing else COLOR_RESOLVED,
        "fields": fields, "timestamp": event.occurred_at.isoformat(),
        "footer": {"text": f"alert {event.id}"},
    })
    return Request(_json({"content": _cut(text(d), 2000), "embeds": [embed]}))


# --- email ---------------------------------------------------------------------------------


def email(event: AlertEvent, *, test: bool = False) -> Request:
    d = describe(event, test=test)
    lines = [d.title, "", f"Server:  {d.server}", f"Process: {d.process or '-'}", f"What:    {d.what}"]
    if d.measure:
        lines.append(f"Value:   {d.measure}")
    lines += [f"When:    {d.since}", "", f"Alert id: {event.id}", ""]
    return Request("\n".join(lines).encode(), headers={"content-type": "text/plain; charset=utf-8"},
                   subject=_cut(f"[procwatch] {d.title}", 200))


# --- webhooks ------------------------------------------------------------------------------


def _labels(event: AlertEvent) -> dict[str, str]:
    labels = {"alertname": event.type, "server": event.server.hostname, "server_id": str(event.server.id)}
    if event.process is not None:
        labels["process"] = event.process.process_name
        labels["process_id"] = str(event.process.id)
    return labels


def fingerprint(labels: dict[str, str]) -> str:
    """A stable 16-hex id of the label set (Alertmanager's fingerprint plays the same role)."""
    joined = "\x00".join(f"{k}\x01{v}" for k, v in sorted(labels.items()))
    return hashlib.blake2b(joined.encode(), digest_size=8).hexdigest()


def alertmanager(event: AlertEvent, *, test: bool = False, receiver: str = "procwatch",
                 external_url: str = "") -> Request:
    """Alertmanager's webhook payload (version "4"), one alert per notification."""
    d = describe(event, test=test)
    labels = _labels(event)
    annotations = {"summary": d.title, "description": text(d)}
    status = "firing" if d.firing else "resolved"
    at = event.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z")
    group_labels = {"alertname": event.type, "server": event.server.hostname}
    group_key = "{}:{" + ", ".join(f'{k}="{v}"' for k, v in sorted(group_labels.items())) + "}"
    return Request(_json({
        "version": "4",
        "groupKey": group_key,
        "truncatedAlerts": 0,
        "status": status,
        "receiver": receiver,
        "groupLabels": group_labels,
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": external_url,
        "alerts": [{
            "status": status, "labels": labels, "annotations": annotations,
            "startsAt": at, "endsAt": AM_ZERO_TIME if d.firing else at,
            "generatorURL": external_url, "fingerprint": fingerprint(labels),
        }],
    }), signed=True)


def standard_webhook(event: AlertEvent) -> Request:
    return Request(webhooks.body(event), signed=True)


def render(channel_type: str, format: str, event: AlertEvent, *, test: bool = False) -> Request:
    """What a channel of `channel_type` (and, for webhooks, `format`) receives for `event`."""
    if channel_type == "webhook":
        if format == "alertmanager":
            return alertmanager(event, test=test)
        return standard_webhook(event)
    if channel_type == "slack":
        return slack(event, test=test)
    if channel_type == "discord":
        return discord(event, test=test)
    if channel_type == "email":
        return email(event, test=test)
    raise ValueError(f"unknown channel type {channel_type!r}")


# --- digests (chat channels in a burst) -----------------------------------------------------


def digest_lines(events: Sequence[AlertEvent]) -> tuple[list[str], int]:
    """One line per event (at most DIGEST_MAX_LINES) and how many were left out."""
    lines = []
    for event in events[:DIGEST_MAX_LINES]:
        d = describe(event)
        lines.append(f"• {d.title}" + (f" ({d.measure})" if d.measure else "") + f", {d.since}")
    return lines, max(0, len(events) - DIGEST_MAX_LINES)


def digest_title(events: Sequence[AlertEvent]) -> str:
    firing = sum(1 for e in events if e.state == "firing")
    resolved = len(events) - firing
    servers = sorted({e.server.hostname for e in events})
    where = servers[0] if len(servers) == 1 else f"{len(servers)} servers"
    parts = [f"{firing} firing"] if firing else []
    if resolved:
        parts.append(f"{resolved} resolved")
    return f"{len(events)} alerts on {where}: " + ", ".join(parts)


def render_digest(channel_type: str, events: Sequence[AlertEvent]) -> Request:
    """One chat message standing for `events` (a burst, see procwatch_notify.digest)."""
    title = digest_title(events)
    lines, more = digest_lines(events)
    if channel_type == "slack":
        blocks, chunk = [], ""
        for line in lines + ([f"… and {more} more"] if more else []):
            if len(chunk) + len(line) + 1 > SLACK_SECTION:
                blocks.append(chunk)
                chunk = ""
            chunk += line + "\n"
        if chunk:
            blocks.append(chunk)
        body = [{"type": "section", "text": {"type": "mrkdwn", "text": f":rotating_light: *{title}*"}}]
        body += [{"type": "section", "text": {"type": "mrkdwn", "text": c.rstrip()}} for c in blocks[:45]]
        return Request(_json({"text": _cut(title, SLACK_TEXT), "blocks": body}))
    if channel_type == "discord":
        description = "\n".join(lines)
        if more:
            description += f"\n… and {more} more"
        if len(description) > DISCORD_DESCRIPTION:
            kept = description[: DISCORD_DESCRIPTION - 40].rsplit("\n", 1)[0]
            shown = kept.count("\n") + 1
            description = kept + f"\n… and {len(events) - shown} more"
        embed = fit_embed({"title": title, "description": description, "color": COLOR_FIRING})
        return Request(_json({"content": _cut(title, 2000), "embeds": [embed]}))
    raise ValueError(f"no digest for channel type {channel_type!r}")
