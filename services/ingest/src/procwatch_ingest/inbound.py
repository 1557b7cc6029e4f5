"""Checks on one agent message that need nothing but the message itself (pure).

`check_message` either returns the parsed sample with the presented agent key,
or a `Rejected` with a reason code. Codes are stable (operators alert on them);
the text is a short human explanation. See docs/ingest.md for the table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from pydantic import ValidationError

from procwatch_contracts import subjects
from procwatch_contracts.fast import AgentSampleView, decode_agent_sample
from procwatch_contracts.messages import MAX_MESSAGE_BYTES, MAX_PROCESSES_PER_MESSAGE, AgentSample

AUTH_HEADER = "Authorization"
MSG_ID_HEADER = "Nats-Msg-Id"
ORIGINAL_SUBJECT_HEADER = "Procwatch-Original-Subject"
ORIGINAL_MSG_ID_HEADER = "Procwatch-Original-Msg-Id"

# Reason codes of dead-lettered agent messages.
TOO_LARGE = "too_large"
BAD_SUBJECT = "bad_subject"
MALFORMED_JSON = "malformed_json"
INVALID_MESSAGE = "invalid_message"
TOO_MANY_PROCESSES = "too_many_processes"
SERVER_MISMATCH = "server_mismatch"
SAMPLED_IN_FUTURE = "sampled_at_in_future"
MISSING_CREDENTIALS = "missing_credentials"
UNKNOWN_SERVER = "unknown_server"
UNAUTHORIZED = "unauthorized"

REASON_CODES = (
    TOO_LARGE, BAD_SUBJECT, MALFORMED_JSON, INVALID_MESSAGE, TOO_MANY_PROCESSES,
    SERVER_MISMATCH, SAMPLED_IN_FUTURE, MISSING_CREDENTIALS, UNKNOWN_SERVER, UNAUTHORIZED,
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
    # The fast decoder's view for a plain message; the pydantic model when only it could vouch.
    sample: AgentSampleView | AgentSample
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
    sample = decode_agent_sample(data)
    if sample is None:  # refused by the fast path: the model accepts it or says why not
        try:
            sample = AgentSample.model_validate_json(data)
        except ValidationError as err:
            return _describe(err)
    if sample.server_id != subject_server:
        return Rejected(SERVER_MISMATCH, f"body server_id {sample.server_id} != subject {subject_server}")
    if sample.sampled_at - now > max_future:
        return Rejected(SAMPLED_IN_FUTURE, f"sampled_at more than {int(max_future.total_seconds())}s ahead")
    key = bearer_key(headers)
    if key is None:
        return Rejected(MISSING_CREDENTIALS, "no Authorization: Bearer <agent key> header")
    return Accepted(sample, key)
