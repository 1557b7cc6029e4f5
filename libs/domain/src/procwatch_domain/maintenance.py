"""Maintenance windows: when a window is in effect, and what it covers. Pure functions, no I/O.

A window is one-off (`starts_at` .. `ends_at`) or recurring: an RFC 5545 RRULE whose first
occurrence is `starts_at` read as a wall-clock time in the window's IANA `timezone`, each
occurrence lasting `duration_s`. Occurrences follow the zone's wall clock (a daily 02:30
Europe/Berlin window is at 02:30 local time in winter and in summer) and last `duration_s`
of real time. Where the wall-clock start does not exist or exists twice, RFC 5545 decides
(section 3.3.5): a start inside a spring-forward gap is read with the offset before the gap
(02:30 on the March switch day is 03:30 CEST), an ambiguous start is its first instance
(02:30 on the October switch day is 02:30 CEST). zoneinfo's `fold=0` is exactly that.

Scope: the whole account (no server_ids and no process_ids), a list of servers (their
processes' alerts and their own server-level alerts), or a list of processes.

A window ended early (`ended_at`) cuts the occurrence in effect at that moment; a later
occurrence of a recurring window is unaffected (ending early is "we are done for today").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from dateutil.rrule import DAILY, rrule, rrulestr

MAX_DURATION_S = 31 * 24 * 3600
MIN_DURATION_S = 60
# Occurrences at most daily: a window's occurrences are few per day, so the math stays cheap.
COARSEST_ALLOWED_FREQ = DAILY
RRULE_MAX = 500


@dataclass(frozen=True, slots=True)
class Window:
    id: int
    user_id: int
    starts_at: datetime  # aware
    ends_at: datetime | None  # one-off windows
    rrule: str | None  # recurring windows (without DTSTART: starts_at is the first occurrence)
    duration_s: int | None  # recurring windows
    timezone: str
    server_ids: frozenset[int] | None = None
    process_ids: frozenset[int] | None = None
    ended_at: datetime | None = None  # ended early

    @property
    def recurring(self) -> bool:
        return self.rrule is not None


# The stored columns a Window is built from, in `window_from_row` order (table maintenance_windows).
WINDOW_COLUMNS = ("id", "user_id", "starts_at", "ends_at", "rrule", "duration_s", "timezone", "server_ids",
                  "process_ids", "ended_at")


def window_from_row(row: Sequence[Any]) -> Window:
    """A Window from a row of WINDOW_COLUMNS (arrays as lists or None)."""
    (window_id, user_id, starts_at, ends_at, rule, duration_s, zone, server_ids, process_ids, ended_at) = row
    return Window(id=window_id, user_id=user_id, starts_at=starts_at, ends_at=ends_at, rrule=rule,
                  duration_s=duration_s, timezone=zone,
                  server_ids=frozenset(server_ids) if server_ids is not None else None,
                  process_ids=frozenset(process_ids) if process_ids is not None else None, ended_at=ended_at)


class Span(NamedTuple):
    """One occurrence, [start, end) in UTC."""

    start: datetime
    end: datetime


# --- validation ---------------------------------------------------------------------------


def zone_problem(name: object) -> str | None:
    if not isinstance(name, str) or not 1 <= len(name) <= 64:
        return "must be an IANA time zone name (e.g. Europe/Berlin)"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name[:64]!r}"
    return None


def strip_rrule(text: str) -> str:
    return text[len("RRULE:"):] if text.upper().startswith("RRULE:") else text


def rrule_problem(text: object) -> str | None:
    """Why `text` is not an RRULE a window accepts, or None. DTSTART is the window's
    `starts_at`, so the rule must not carry one; frequencies finer than daily are refused."""
    if not isinstance(text, str) or not 1 <= len(text) <= RRULE_MAX:
        return f"must be an RFC 5545 RRULE of 1-{RRULE_MAX} characters (e.g. FREQ=WEEKLY;BYDAY=SU)"
    body = strip_rrule(text.strip())
    if "\n" in body or "DTSTART" in body.upper() or ":" in body:
        return "must be one RRULE (no DTSTART: starts_at is the first occurrence)"
    try:
        rule = rrulestr(body, dtstart=datetime(2026, 1, 1))
    except (ValueError, TypeError) as exc:
        return f"not a valid RRULE: {str(exc)[:150]}"
    if not isinstance(rule, rrule):
        return "must be one RRULE"
    if rule._freq > COARSEST_ALLOWED_FREQ:  # noqa: SLF001 - dateutil exposes no public accessor
        return "FREQ must be DAILY, WEEKLY, MONTHLY or YEARLY"
    return None


# --- occurrences ----------------------------------------------------------------------------


@lru_cache(maxsize=8192)
def _rule(text: str, local_start: datetime) -> rrule:
    # cache=True: the occurrences generated once are kept, so asking again (the alerter's cache
    # reloads every few seconds) does not walk the rule from its first occurrence again.
    return rrulestr(strip_rrule(text), dtstart=local_start, cache=True)  # type: ignore[return-value]


def _local_naive(at: datetime, zone: ZoneInfo) -> datetime:
    return at.astimezone(zone).replace(tzinfo=None)


def occurrences(window: Window, start: datetime, end: datetime) -> list[Span]:
    """The occurrences that overlap [start, end), in order, cut by an early end."""
    if not window.recurring:
        assert window.ends_at is not None
        spans = [Span(window.starts_at.astimezone(UTC), window.ends_at.astimezone(UTC))]
    else:
        zone = ZoneInfo(window.timezone)
        duration = timedelta(seconds=window.duration_s or 0)
        rule = _rule(window.rrule, _local_naive(window.starts_at, zone))  # type: ignore[arg-type]
        # Local bounds padded by a day either side: an offset change moves wall time by hours at most.
        lo = _local_naive(start - duration, zone) - timedelta(days=1)
        hi = _local_naive(end, zone) + timedelta(days=1)
        spans = []
        for local in rule.between(lo, hi, inc=True):
            first = local.replace(tzinfo=zone, fold=0).astimezone(UTC)
            spans.append(Span(first, first + duration))
    out = []
    for span in spans:
        if window.ended_at is not None and span.start <= window.ended_at < span.end:
            span = Span(span.start, window.ended_at.astimezone(UTC))
        if span.start < end and span.end > start and span.end > span.start:
            out.append(span)
    return out


def occurrence_at(window: Window, at: datetime) -> Span | None:
    """The occurrence in effect at `at` (start inclusive, end exclusive), or None."""
    for span in occurrences(window, at, at + timedelta(microseconds=1)):
        if span.start <= at < span.end:
            return span
    return None


def in_scope(window: Window, server_id: int, process_id: int | None) -> bool:
    """Whether the window's scope holds an alert of this server (process None: a server-level alert)."""
    if window.process_ids is not None:
        return process_id is not None and process_id in window.process_ids
    if window.server_ids is not None:
        return server_id in window.server_ids
    return True


def covers(window: Window, server_id: int, process_id: int | None, at: datetime) -> bool:
    return in_scope(window, server_id, process_id) and occurrence_at(window, at) is not None


def active_windows(windows: Iterable[Window], at: datetime) -> list[Window]:
    return [w for w in windows if occurrence_at(w, at) is not None]


def next_end(window: Window, at: datetime) -> datetime | None:
    """When the occurrence in effect at `at` ends (None: none in effect)."""
    span = occurrence_at(window, at)
    return span.end if span else None


def finished(window: Window, at: datetime) -> bool:
    """No occurrence in effect at or after `at` (a one-off window that ended; a recurring rule that ran out)."""
    if not window.recurring:
        end = window.ends_at if window.ended_at is None else min(window.ends_at, window.ended_at)  # type: ignore[type-var]
        return end <= at  # type: ignore[operator]
    zone = ZoneInfo(window.timezone)
    rule = _rule(window.rrule, _local_naive(window.starts_at, zone))  # type: ignore[arg-type]
    duration = timedelta(seconds=window.duration_s or 0)
    return occurrence_at(window, at) is None and rule.after(_local_naive(at - duration, zone)) is None


# A rule with more occurrences than this (COUNT or UNTIL far away) counts as without end.
_LAST_OCCURRENCE_SCAN = 100_000


def effective_until(window: Window) -> datetime | None:
    """When the window's last occurrence ends (None: a rule without end). Stored with the window,
    so readers load only windows that may still be in effect."""
    if not window.recurring:
        assert window.ends_at is not None
        return window.ends_at if window.ended_at is None else min(window.ends_at, window.ended_at)
    zone = ZoneInfo(window.timezone)
    rule = rrulestr(strip_rrule(window.rrule), dtstart=_local_naive(window.starts_at, zone))  # type: ignore[arg-type]
    if rule._count is None and rule._until is None:  # noqa: SLF001 - dateutil exposes no public accessor
        return None
    last = None
    for n, local in enumerate(rule):
        if n >= _LAST_OCCURRENCE_SCAN:
            return None
        last = local
    if last is None:
        return window.starts_at
    end = last.replace(tzinfo=zone, fold=0).astimezone(UTC) + timedelta(seconds=window.duration_s or 0)
    if window.ended_at is not None and end - timedelta(seconds=window.duration_s or 0) <= window.ended_at < end:
        end = window.ended_at
    return end


def next_start(window: Window, at: datetime, horizon: timedelta = timedelta(days=400)) -> datetime | None:
    """The start of the first occurrence after `at` within `horizon` (None: none)."""
    for span in occurrences(window, at, at + horizon):
        if span.start > at:
            return span.start
    return None


class _Entry:
    """A window with its occurrences over [lo, hi), computed when first asked (most windows of a
    fleet are never asked: only the scope of an alert transition is)."""

    __slots__ = ("window", "lo", "hi", "spans")

    def __init__(self, window: Window) -> None:
        self.window = window
        self.lo = self.hi = datetime.min.replace(tzinfo=UTC)
        self.spans: list[Span] = []

    def covers(self, at: datetime) -> bool:
        if not self.lo <= at < self.hi:
            self.lo, self.hi = at - SPAN_LOOKBACK, at + SPAN_HORIZON
            self.spans = occurrences(self.window, self.lo, self.hi)
        return any(span.start <= at < span.end for span in self.spans)


# How far around the asked time an entry's occurrences are computed (then reused).
SPAN_LOOKBACK = timedelta(days=1)
SPAN_HORIZON = timedelta(hours=6)


class WindowIndex:
    """Windows by scope, for the question "is this alert suppressed at this time?" asked on every
    alert transition: only the windows of the account, of the alert's server and of its process
    are looked at, each with its occurrences computed once around the asked time."""

    def __init__(self, windows: Iterable[Window]) -> None:
        self._account: dict[int, list[_Entry]] = {}
        self._by_server: dict[int, list[_Entry]] = {}
        self._by_process: dict[int, list[_Entry]] = {}
        self._count = 0
        for w in windows:
            self._count += 1
            entry = _Entry(w)
            if w.process_ids is not None:
                for pid in w.process_ids:
                    self._by_process.setdefault(pid, []).append(entry)
            elif w.server_ids is not None:
                for sid in w.server_ids:
                    self._by_server.setdefault(sid, []).append(entry)
            else:
                self._account.setdefault(w.user_id, []).append(entry)

    def __len__(self) -> int:
        return self._count

    def suppressing(self, user_id: int, server_id: int, process_id: int | None, at: datetime) -> Window | None:
        """The first window of the user that covers the alert at `at`, or None."""
        candidates = [self._account.get(user_id, ()), self._by_server.get(server_id, ())]
        if process_id is not None:
            candidates.append(self._by_process.get(process_id, ()))
        for entries in candidates:
            for entry in entries:
                if entry.window.user_id == user_id and entry.covers(at):
                    return entry.window
        return None

    def suppressed(self, user_id: int, server_id: int, process_id: int | None, at: datetime) -> bool:
        return self.suppressing(user_id, server_id, process_id, at) is not None


EMPTY_INDEX = WindowIndex(())
