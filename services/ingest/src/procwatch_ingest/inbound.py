"""Checks on one agent message (pure).

`check_message` needs nothing but the message itself: it either returns the
parsed sample with the presented agent key, or a `Rejected` with a reason code.
`check_sampled_at` is the time window of a sample; the service applies it again
with the server's plan retention once the server is known. Codes are stable (operators alert on them);
the text is a short human explanation. See docs/ingest.md for the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from procwatch_contracts import subjects
from procwatch_contracts.fast import AgentSampleView, parse_agent_sample
from procwatch_contracts.messages import MAX_MESSAGE_BYTES, MAX_PROCESSES_PER_MESSAGE

AUTH_HEADER = "Authorization"
MSG_ID_HEADER = "Nats-Msg-Id"

# Reason codes of dead-lettered agent messages.
TOO_LARGE = "too_large"
BAD_SUBJECT = "bad_subject"
MALFORMED_JSON = "malformed_json"
INVALID_MESSAGE = "invalid_message"
TOO_MANY_PROCESSES = "too_many_processes"
SERVER_MISMATCH = "server_mismatch"
SAMPLED_IN_FUTURE = "sampled_at_in_future"
SAMPLED_TOO_OLD = "sampled_at_too_old"
MISSING_CREDENTIALS = "missing_credentials"
UNKNOWN_SERVER = "unknown_server"
UNAUTHORIZED = "unauthorized"

REASON_CODES = (
    TOO_LARGE, BAD_SUBJECT, MALFORMED_JSON, INVALID_MESSAGE, TOO_MANY_PROCESSES,
    SERVER_MISMATCH, SAMPLED_IN_FUTURE, SAMPLED_TOO_OLD, MISSING_CREDENTIALS, UNKNOWN_SERVER, UNAUTHORIZED,
)


@dataclass(frozen=True, slots=True)
class Rejected:
    code: str
    text: str

    @property
    def header(self) -> str:
        """The `Procwatch-Reason` header value: code, then the short text."""
        return f"{self.code}: {self.text}"[:400]


@dataclass(frozen=True, slots=True)
class Accepted:
    sample: AgentSampleView
    agent_key: str


def bearer_key(headers: dict[str, str] | None) -> str | None:
    if not headers:
        return None
    value = headers.get(AUTH_HEADER) or headers.get(AUTH_HEADER.lower())
    if not value:
        return None
    scheme, _, key = value.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        return None
    return key


def _describe(err: ValidationError) -> Rejected:
    errors = err.errors(include_url=False, include_input=False, include_context=False)
    first = errors[0] if errors else {"type": "invalid", "loc": (), "msg": "invalid"}
    if first["type"] == "json_invalid":
        return Rejected(MALFORMED_JSON, f"not valid JSON: {first['msg']}"[:200])
    for e in errors:
        if e["type"] == "too_long" and tuple(e["loc"]) == ("processes",):
            return Rejected(TOO_MANY_PROCESSES, f"more than {MAX_PROCESSES_PER_MESSAGE} processes")
    loc = ".".join(str(p) for p in first["loc"]) or "(body)"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return Rejected(INVALID_MESSAGE, f"{loc}: {first['msg']}{more}"[:200])


def check_message(
    subject: str,
    headers: dict[str, str] | None,
    data: bytes,
    now: datetime,
    max_future: timedelta,
) -> Accepted | Rejected:
    if len(data) > MAX_MESSAGE_BYTES:
        return Rejected(TOO_LARGE, f"{len(data)} bytes > {MAX_MESSAGE_BYTES}")
    subject_server = subjects.server_id_from_subject(subject)
    if subject_server is None:
        return Rejected(BAD_SUBJECT, "subject does not end in a server id")
    try:  # the fast decoder; the model decides what it refuses, and explains a refusal
        sample = parse_agent_sample(data)
    except ValidationError as err:
        return _describe(err)
    if sample.server_id != subject_server:
        return Rejected(SERVER_MISMATCH, f"body server_id {sample.server_id} != subject {subject_server}")
    too_new = check_sampled_at(sample.sampled_at, now, max_future)
    if too_new is not None:
        return too_new
    key = bearer_key(headers)
    if key is None:
        return Rejected(MISSING_CREDENTIALS, "no Authorization: Bearer <agent key> header")
    return Accepted(sample, key)


def check_sampled_at(sampled_at: datetime, now: datetime, max_future: timedelta,
                     retention_days: int | None = None) -> Rejected | None:
    """Why a sample's time is refused, or None: more than `max_future` ahead of `now` (clock
    skew), or, when the plan's `retention_days` is given, older than the retention (the row
    would be dropped with its partition, or land in the default partition)."""
    if sampled_at - now > max_future:
        return Rejected(SAMPLED_IN_FUTURE, f"sampled_at more than {int(max_future.total_seconds())}s ahead")
    if retention_days is not None and now - sampled_at > timedelta(days=retention_days):
        return Rejected(SAMPLED_TOO_OLD, f"sampled_at older than the plan's {retention_days}-day retention")
    return None
