"""Notification channels: their kinds, and how a target is shown once its secret is hidden.

Shared by the API (validation, representations) and the tools; the notifier reads
the stored rows (docs/notifications.md).
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

CHANNEL_TYPES = ("webhook", "slack", "discord", "email")
# The channel types whose target is a URL (the others: a list of email addresses).
URL_CHANNEL_TYPES = ("webhook", "slack", "discord")
FORMATS = ("standard", "alertmanager")
# Formats other than "standard" are for webhooks only (Alertmanager's webhook payload).
WEBHOOK_ONLY_FORMATS = ("alertmanager",)
HINT_MAX = 200

# One "@" between a local part and a dotted domain, no whitespace or control characters: what
# is refused is a typo, not an unusual but valid address.
_EMAIL = re.compile(r"[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f.]+")
EMAIL_MAX = 254
# A path segment kept in clear by `mask_url`: a short word, like "services" or "webhooks";
# anything with a digit or longer may be (part of) a token.
_PLAIN_SEGMENT = re.compile(r"[A-Za-z_-]{1,16}")
_MASK = "…***"


def email_problem(email: str) -> str | None:
    if not email or len(email) > EMAIL_MAX or not _EMAIL.fullmatch(email):
        return f"{email!r} is not an email address (name@domain, at most {EMAIL_MAX} characters)"
    return None


def mask_url(url: str) -> str:
    """The URL as shown after creation: scheme, host, port and the leading plain words of the
    path, then the first two characters of the rest and "…***". Slack and Discord webhook URLs
    carry their token in the path; a generic webhook may carry one anywhere after the host.

    `https://hooks.slack.com/services/T000/B000/XXXX` -> `https://hooks.slack.com/services/T0…***`
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    shown = f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    rest = parts.path + (f"?{parts.query}" if parts.query else "")
    segments = rest.split("/")
    kept = [""]
    for segment in segments[1:]:
        if len(kept) > 3 or not _PLAIN_SEGMENT.fullmatch(segment):
            break
        kept.append(segment)
    prefix = "/".join(kept)
    remainder = rest[len(prefix):]
    if remainder.startswith("/"):
        prefix, remainder = prefix + "/", remainder[1:]
    hint = shown + prefix + (remainder[:2] + _MASK if remainder else "")
    return hint if len(hint) <= HINT_MAX else hint[:HINT_MAX - len(_MASK)] + _MASK


def email_hint(addresses: list[str]) -> str:
    """The addresses, comma-separated (not secrets: shown so the owner sees where alerts go),
    cut to fit the stored hint."""
    joined = ", ".join(addresses)
    return joined if len(joined) <= HINT_MAX else joined[:HINT_MAX - 1] + "…"
