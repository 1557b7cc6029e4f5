"""The runtime types of the hot messages, AgentSample v1 and SampleRecorded v1 (ingest decodes
tens of thousands of readings/s; the alerter reads every sample event).

`messages.py` stays the one definition of the shapes (the schema, and the explanation of
what is refused): this module mirrors their fields with msgspec (much faster than building
pydantic models) and is held to them by tests/unit/test_contracts_fast.py, which checks on
generated and hand-picked inputs that whatever the fast decoders accept, the models accept
with the same values, and that whatever the models accept converts to the fast types.

Inside the services there is ONE runtime type per hot message, the fast one:
`parse_agent_sample` / `parse_sample_recorded` decode with msgspec; when it refuses, the
pydantic model decides: it accepts (the result is converted to the fast type) or raises
its `ValidationError`, whose text is the dead-letter reason.

`sampled_at` is parsed by pydantic itself (once per message, not per reading), so
the accepted timestamp formats are pydantic's by construction.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal

import msgspec
from pydantic import AwareDatetime, ConfigDict, TypeAdapter, ValidationError

from procwatch_contracts.messages import (
    MAX_CPU_PCT,
    MAX_MEMORY_PCT,
    MAX_PROCESSES_PER_MESSAGE,
    AgentSample,
    SampleRecorded,
)
from procwatch_domain.rules import SETTINGS

# The messages' bounds (the upper one also refuses the infinity a JSON number like 1e400 decodes to).
_CpuPercent = Annotated[float, msgspec.Meta(ge=0, le=MAX_CPU_PCT)]
_MemoryPercent = Annotated[float, msgspec.Meta(ge=0, le=MAX_MEMORY_PCT)]


class ProcessReadingView(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    """Mirror of messages.ProcessReading."""

    process_name: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]
    count: Annotated[int, msgspec.Meta(ge=0, le=2**31 - 1)]
    cpu_pct: _CpuPercent
    memory_pct: _MemoryPercent
    oldest_start_unix: Annotated[int, msgspec.Meta(ge=0, le=2**62)] | None


class _AgentSampleWire(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    v: Literal[1]
    server_id: Annotated[int, msgspec.Meta(ge=1, le=2**63 - 1)]
    agent_version: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    sampled_at: str
    processes: Annotated[list[ProcessReadingView], msgspec.Meta(max_length=MAX_PROCESSES_PER_MESSAGE)]


@dataclass(frozen=True, slots=True)
class AgentSampleView:
    """The fields of messages.AgentSample that ingest reads, as decoded by `decode_agent_sample`."""

    v: int
    server_id: int
    agent_version: str
    sampled_at: datetime
    processes: list[ProcessReadingView]


_decoder = msgspec.json.Decoder(_AgentSampleWire)
_aware_datetime = TypeAdapter(AwareDatetime, config=ConfigDict(strict=True))


def decode_agent_sample(data: bytes) -> AgentSampleView | None:
    """The message, or None when the fast path cannot vouch for it (the pydantic model decides)."""
    try:
        wire = _decoder.decode(data)
    except msgspec.DecodeError:  # ValidationError is a subclass
        return None
    if b"\\u" in data and not _plain_text(wire):  # only escapes can smuggle in a lone surrogate
        return None
    try:
        sampled_at = _aware_datetime.validate_strings(wire.sampled_at, strict=True)
    except ValidationError:
        return None
    return AgentSampleView(wire.v, wire.server_id, wire.agent_version, sampled_at, wire.processes)


def agent_sample_from_model(model: AgentSample) -> AgentSampleView:
    """A message the model accepted, as the fast type (the rare path: the fast decoder refused it)."""
    return AgentSampleView(model.v, model.server_id, model.agent_version, model.sampled_at, [
        ProcessReadingView(r.process_name, r.count, r.cpu_pct, r.memory_pct, r.oldest_start_unix)
        for r in model.processes
    ])


def parse_agent_sample(data: bytes) -> AgentSampleView:
    """The message as the fast type; raises the model's `pydantic.ValidationError` when invalid."""
    sample = decode_agent_sample(data)
    if sample is None:  # refused by the fast path: the model accepts it or says why not
        sample = agent_sample_from_model(AgentSample.model_validate_json(data))
    return sample


def _plain_text(wire: _AgentSampleWire) -> bool:
    """False if a string holds a lone surrogate (valid JSON escape, not encodable as UTF-8):
    left to the model, which refuses it, instead of failing later in the database driver."""
    try:
        wire.agent_version.encode()
        for reading in wire.processes:
            reading.process_name.encode()
    except UnicodeEncodeError:
        return False
    return True


# --- the hot event, SampleRecorded v1: encoded by ingest, decoded by the alerter ---------
# Field for field the models of messages.py (same names, same order, same defaults); the
# tests check the names against the models, validate encoded events with SampleRecorded,
# and property-test decoding against SampleRecorded.model_validate_json.


# One field per setting of the rule registry, like messages.ProcessAlertConfig (same defaults).
ProcessAlertConfigView = msgspec.defstruct(
    "ProcessAlertConfigView", [(s.name, s.annotation, s.default) for s in SETTINGS],
    forbid_unknown_fields=True, frozen=True, module=__name__,
)


class RecordedSampleView(msgspec.Struct, forbid_unknown_fields=True, frozen=True):
    sample_id: int
    watched_process_id: int
    process_name: str
    count: int
    cpu_pct: float
    memory_pct: float
    oldest_start_unix: int | None
    recorded_at: datetime
    previous_count: int | None
    previous_oldest_start_unix: int | None
    previous_recorded_at: datetime | None
    is_latest: bool
    config: ProcessAlertConfigView
    alerted_state: str | None = None


class SampleRecordedView(msgspec.Struct, forbid_unknown_fields=True, frozen=True, kw_only=True):
    v: Literal[1] = 1
    server_id: int
    hostname: str
    user_id: int
    agent_version: str
    sampled_at: datetime
    samples: list[RecordedSampleView]
    server_seen_at: datetime | None = None


_event_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(SampleRecordedView)


def encode_sample_recorded(event: SampleRecordedView) -> bytes:
    """The event's JSON (datetimes as RFC 3339; UTC ones end in Z)."""
    return _event_encoder.encode(event)


def decode_sample_recorded(data: bytes) -> SampleRecordedView | None:
    """The event, or None when the fast path cannot vouch for it (the pydantic model decides)."""
    if b"\\u" in data:  # an escape may hide a lone surrogate: the model's call
        return None
    try:
        return _event_decoder.decode(data)
    except msgspec.DecodeError:
        return None


def sample_recorded_from_model(model: SampleRecorded) -> SampleRecordedView:
    """An event the model accepted, as the fast type (the rare path: the fast decoder refused it)."""
    return msgspec.convert(model, SampleRecordedView, from_attributes=True)


def parse_sample_recorded(data: bytes) -> SampleRecordedView:
    """The event as the fast type; raises the model's `pydantic.ValidationError` when invalid."""
    event = decode_sample_recorded(data)
    if event is None:
        event = sample_recorded_from_model(SampleRecorded.model_validate_json(data))
    return event
