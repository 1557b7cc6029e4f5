"""Alert evaluation: sample events and lifecycle events -> alert state, history and events.

No framework imports and no commits. Every write of one call (alerted_state, alert
history, outbox rows) happens inside ONE `write_transaction()` block, which the
caller provides (it opens and commits the transaction); reads that decide nothing
on their own (the unlocked read of a sample batch) run before it, so a batch that
changes nothing costs no transaction. Without `write_transaction` the caller's own
transaction is used for everything.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime

from procwatch_contracts import subjects
from procwatch_contracts.fast import RecordedSampleView, SampleRecordedView
from procwatch_contracts.messages import AlertEvent, AlertProcess, AlertServer, ProcessChanged
from procwatch_domain.alerts import (
    DELETED,
    FLAG_DISABLED,
    NO_STREAKS,
    RECOVERED,
    SampleView,
    Transition,
    alert_id,
    apply_transitions,
    evaluate_sample,
    format_streaks,
    parse_streaks,
    resolve_for_change,
    streaks_after_change,
)
from procwatch_domain.liveness import SERVER_OFFLINE, server_alert_id
from procwatch_domain.maintenance import EMPTY_INDEX, WindowIndex
from procwatch_domain.rules import ONE_SHOT_FLAGS
from procwatch_domain.status import format_alerted_state, parse_alerted_state
from procwatch_messaging.outbox import OutboxRecord

from procwatch_alerter.repository import (
    AlerterRepository,
    AlertResolution,
    AlertRow,
    OutboxRow,
    ProcessRow,
    ServerAlertResolution,
    StateUpdate,
)

log = logging.getLogger("procwatch.alerter")

# The maintenance windows in effect, as the service asks for them (WindowCache.current).
WindowSource = Callable[[AlerterRepository], Awaitable[WindowIndex]]


@dataclass
class Outcome:
    """What one event or batch did: the alert events written to the outbox, and samples skipped."""

    alerts: list[AlertEvent] = field(default_factory=list)
    # Their outbox rows as written: (id, subject, msg_id, payload), for publishing after commit.
    outbox: list[OutboxRecord] = field(default_factory=list)
    evaluated: int = 0
    skipped_stale: int = 0
    skipped_missing: int = 0
    skipped_paused: int = 0
    # Samples naming a process of another server or user than the event's (a forged event).
    skipped_foreign: int = 0


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def sample_payload(sample: RecordedSampleView) -> dict:
    return {
        "sample_id": sample.sample_id,
        "count": sample.count,
        "cpu_pct": sample.cpu_pct,
        "memory_pct": sample.memory_pct,
        "oldest_start_unix": sample.oldest_start_unix,
        "previous_oldest_start_unix": sample.previous_oldest_start_unix,
        "recorded_at": _iso(sample.recorded_at),
    }


class _Writes:
    """Collects one transaction's writes so each kind goes to the database in one round.

    Suppression (docs/maintenance.md): a firing (or one-shot) transition is suppressed when one of
    the user's maintenance windows covers it at its time (`windows`); a resolution is suppressed
    when its episode was (`suppressed_episodes`: the (process, type) of open episodes that started
    suppressed and were never notified), so an integration told of a firing is always told of its
    resolution, and one never told of it hears of neither."""

    def __init__(self, windows: WindowIndex = EMPTY_INDEX,
                 suppressed_episodes: set[tuple[int, str]] | None = None) -> None:
        self.windows = windows
        self.suppressed_episodes = suppressed_episodes if suppressed_episodes is not None else set()
        self.states: list[StateUpdate] = []
        # Alert history writes (new episodes and resolutions) in evaluation order.
        self.history: list[AlertRow | AlertResolution] = []
        self.outbox: list[OutboxRow] = []
        self.events: list[AlertEvent] = []
        self.written: list[OutboxRecord] = []  # the outbox rows with their ids, after flush()

    def record(
        self,
        transitions: Sequence[Transition],
        *,
        at: datetime,
        process_id: int,
        process_name: str,
        server_id: int,
        hostname: str,
        user_id: int,
        sample: dict | None,
        write_history: bool = True,
    ) -> None:
        for t in transitions:
            event_id = alert_id(process_id, t.alert_type, t.state, at)
            episode = (process_id, t.alert_type)
            if t.state == "firing":
                suppressed = self.windows.suppressed(user_id, server_id, process_id, at)
                if suppressed:
                    self.suppressed_episodes.add(episode)
                else:
                    self.suppressed_episodes.discard(episode)
            else:
                suppressed = episode in self.suppressed_episodes
            if write_history:
                if t.state == "firing":
                    self.history.append(AlertRow(process_id, server_id, user_id, t.alert_type, t.value, t.threshold,
                                                 at, event_id, suppressed=suppressed))
                else:
                    self.history.append(AlertResolution(process_id, t.alert_type, at, t.reason or "resolved"))
            event = AlertEvent(
                id=event_id,
                type=t.alert_type,  # type: ignore[arg-type]
                state=t.state,
                occurred_at=at,
                user_id=user_id,
                server=AlertServer(id=server_id, hostname=hostname),
                process=AlertProcess(id=process_id, process_name=process_name),
                value=t.value,
                threshold=t.threshold,
                sample=sample,
                reason=t.reason,
                suppressed=suppressed,
            )
            self.events.append(event)
            self.outbox.append(OutboxRow(subjects.alerts(server_id, process_id), event_id, event.model_dump_json()))

    async def flush(self, repo: AlerterRepository) -> None:
        """Write in as few rounds as the history allows.

        Alert history per (process, type) alternates firing / resolved and must be
        written in that order: a batch with down -> up -> down for one process
        inserts, resolves, then inserts again (one open episode per type at a
        time). Round r holds each key's r-th history write; inside a round each key
        appears once, so resolving before inserting is safe. Usually one round.
        """
        rounds: list[tuple[list[AlertResolution], list[AlertRow]]] = []
        seen: dict[tuple[int, str], int] = {}
        for op in self.history:
            key = (op.watched_process_id, op.type)
            n = seen.get(key, 0)
            seen[key] = n + 1
            if n == len(rounds):
                rounds.append(([], []))
            if isinstance(op, AlertResolution):
                rounds[n][0].append(op)
            else:
                rounds[n][1].append(op)
        for resolutions, new_alerts in rounds:
            await repo.resolve_alerts(resolutions)
            await repo.insert_alerts(new_alerts)
        # One update per process: its last state (an UPDATE ... FROM with a repeated id
        # would apply an arbitrary one of them).
        last: dict[int, StateUpdate] = {}
        for u in self.states:
            prev = last.get(u.process_id)
            evaluated_at = u.evaluated_at if u.evaluated_at is not None else (prev.evaluated_at if prev else None)
            last[u.process_id] = StateUpdate(u.process_id, u.alerted_state, evaluated_at, u.streaks)
        await repo.save_states(list(last.values()))
        ids = await repo.add_outbox(self.outbox)
        self.written = [(i, r.subject, r.msg_id, r.payload) for i, r in zip(ids, self.outbox, strict=True)]

    def into(self, outcome: Outcome) -> Outcome:
        outcome.alerts = self.events
        outcome.outbox = self.written
        return outcome


NOTHING_FIRING: frozenset[str] = frozenset()
# The reason of the one notification of an episode still firing when its maintenance window ended.
MAINTENANCE_ENDED = "maintenance_ended"


class AlerterService:
    def __init__(
        self,
        repo: AlerterRepository,
        write_transaction: Callable[[], AbstractAsyncContextManager] | None = None,
        windows: WindowSource | None = None,
    ) -> None:
        self._repo = repo
        self._write_transaction = write_transaction or nullcontext
        # The maintenance windows (procwatch_alerter.maintenance.WindowCache.current): asked only
        # when something is written, never per sample.
        self._windows = windows

    async def _window_index(self) -> WindowIndex:
        return await self._windows(self._repo) if self._windows is not None else EMPTY_INDEX

    async def _suppressed_episodes(self, process_ids: Sequence[int], first_pass: _Writes) -> set[tuple[int, str]]:
        """The open suppressed episodes of the processes, read only when a resolution is to be written."""
        if not any(isinstance(h, AlertResolution) for h in first_pass.history):
            return set()
        return await self._repo.open_suppressed_episodes(process_ids)

    async def on_samples_recorded(self, event: SampleRecordedView) -> Outcome:
        """One event: a batch of one (see `on_samples_recorded_batch`)."""
        return await self.on_samples_recorded_batch([event])

    async def on_samples_recorded_batch(self, events: Sequence[SampleRecordedView]) -> Outcome:
        """Evaluate every `is_latest` sample of a batch of committed agent messages, in order.

        `events` are in stream order; inside one event the samples go in time
        order. The result is the same as handling the events one by one: each
        process's state is carried in memory from sample to sample across the
        whole batch, so the `alert_evaluated_at` skip rule and the per-process
        order hold across events.

        Most samples change nothing. They are evaluated on ONE unlocked read of
        every process in the batch and cost no write; only the processes with a
        transition are then locked (one query, id order), re-evaluated from the
        start of the batch on the locked rows (which are current) and written,
        with `alert_evaluated_at` moved to the sample time. A sample that caused
        no transition is idempotent: evaluating it again yields nothing again.
        """
        outcome = Outcome()
        work: list[tuple[SampleRecordedView, RecordedSampleView]] = []
        for event in events:
            latest = sorted((s for s in event.samples if s.is_latest), key=lambda s: s.recorded_at)
            work.extend((event, s) for s in latest)
        if not work:
            return outcome
        rows = await self._repo.read_processes(sorted({s.watched_process_id for _, s in work}))
        first_pass = _Writes()
        changing = self._evaluate(work, rows, first_pass, outcome)
        if not changing:
            return outcome
        windows = await self._window_index()
        async with self._write_transaction():
            locked = await self._repo.lock_processes(sorted(changing))
            writes = _Writes(windows, await self._suppressed_episodes(sorted(changing), first_pass))
            self._evaluate([(e, s) for e, s in work if s.watched_process_id in changing], locked, writes, Outcome())
            await writes.flush(self._repo)
        return writes.into(outcome)

    def _evaluate(
        self,
        work: Sequence[tuple[SampleRecordedView, RecordedSampleView]],
        rows: dict[int, ProcessRow],
        writes: _Writes,
        outcome: Outcome,
    ) -> set[int]:
        """Apply the rules to the (event, sample) pairs (batch order) against `rows`
        (updated in memory); returns the ids of the processes with at least one transition."""
        changing: set[int] = set()
        for event, sample in work:
            row = rows.get(sample.watched_process_id)
            if row is None:
                outcome.skipped_missing += 1  # deleted since ingest committed
                continue
            if row.server_id != event.server_id or row.user_id != event.user_id:
                outcome.skipped_foreign += 1  # not this server's process: ingest never sends that
                continue
            if not row.enabled:
                outcome.skipped_paused += 1
                continue
            if row.alert_evaluated_at is not None and sample.recorded_at <= row.alert_evaluated_at:
                outcome.skipped_stale += 1  # redelivered, or an older sample arriving late
                continue
            outcome.evaluated += 1
            firing = parse_alerted_state(row.alerted_state) if row.alerted_state else NOTHING_FIRING
            # The previous sample only matters to the one-shot rules (restart), flag on: not
            # built otherwise, this loop runs for every sample of the fleet.
            previous = (
                SampleView(count=sample.previous_count or 0, oldest_start_unix=sample.previous_oldest_start_unix)
                if sample.previous_recorded_at is not None and any(getattr(row, f) for f in ONE_SHOT_FLAGS)
                else None
            )
            current = SampleView(
                count=sample.count,
                cpu_pct=sample.cpu_pct,
                memory_pct=sample.memory_pct,
                oldest_start_unix=sample.oldest_start_unix,
            )
            streaks = parse_streaks(row.alert_streaks) if row.alert_streaks else NO_STREAKS
            # The row's settings, not the event's: the row is current (a flag
            # turned off after ingest committed is already honoured).
            transitions, streaks_after = evaluate_sample(firing, streaks, row, previous, current)  # row: AlertConfig
            if not transitions and streaks_after is streaks:
                continue  # nothing to write: evaluating this sample again yields nothing again
            # A flap streak that moved is written like a transition, with alert_evaluated_at, so a
            # redelivered sample is skipped and never counted twice.
            changing.add(row.id)
            writes.record(
                transitions,
                at=sample.recorded_at,
                process_id=row.id,
                process_name=row.process_name,
                server_id=row.server_id,
                hostname=row.hostname,
                user_id=row.user_id,
                sample=sample_payload(sample),
            )
            row.alerted_state = format_alerted_state(apply_transitions(firing, transitions))
            row.alert_evaluated_at = sample.recorded_at
            row.alert_streaks = format_streaks(streaks_after)
            writes.states.append(StateUpdate(row.id, row.alerted_state, sample.recorded_at, row.alert_streaks))
        return changing

    async def on_process_changed(self, event: ProcessChanged) -> Outcome:
        """Pause, delete or a flag turned off resolves the open alerts, with a reason."""
        outcome = Outcome()
        if event.change == "created":
            return outcome
        async with self._write_transaction():
            return await self._resolve_for_change(event, outcome)

    async def _resolve_for_change(self, event: ProcessChanged, outcome: Outcome) -> Outcome:
        # Only resolutions here: suppressed when their episode was (a deleted process's history is gone,
        # so its resolutions are notified: the safe side, an integration never keeps an open alert).
        writes = _Writes(suppressed_episodes=await self._repo.open_suppressed_episodes([event.process_id]))
        row = None
        if event.change == "deleted":
            # The row and its history are gone (cascade); the event carries what was firing.
            firing = parse_alerted_state(event.alerted_state)
            transitions = resolve_for_change(firing, deleted=True, enabled=event.enabled, config=event.config)
        else:
            row = (await self._repo.lock_processes([event.process_id])).get(event.process_id)
            if row is None:
                outcome.skipped_missing += 1  # deleted since: its own event resolves
                return outcome
            if row.server_id != event.server_id or row.user_id != event.user_id:
                outcome.skipped_foreign += 1  # not this server's process: the API never sends that
                return outcome
            # Decide on the row as it is now (locked), not on the event: a later
            # change may already have re-enabled what this event disabled.
            firing = parse_alerted_state(row.alerted_state)
            transitions = resolve_for_change(firing, deleted=False, enabled=row.enabled, config=row)
        if transitions:
            writes.record(
                transitions,
                at=event.occurred_at,
                process_id=event.process_id,
                process_name=row.process_name if row is not None else event.process_name,
                server_id=event.server_id,
                # From the database while the rows exist; a deleted server's name only the event has.
                hostname=(row.hostname if row is not None
                          else await self._repo.server_hostname(event.server_id) or event.hostname or ""),
                user_id=event.user_id,
                sample=None,
                write_history=row is not None,  # a deleted process's history went with it
            )
        if row is not None:
            streaks = format_streaks(streaks_after_change(parse_streaks(row.alert_streaks), enabled=row.enabled,
                                                          config=row))
            if transitions or streaks != row.alert_streaks:
                new_state = format_alerted_state(apply_transitions(firing, transitions))
                writes.states.append(StateUpdate(row.id, new_state, None, streaks))
        outcome.evaluated = 1
        await writes.flush(self._repo)
        return writes.into(outcome)

    # --- server liveness (the offline job, procwatch_alerter.offline) -------------------------

    async def detect_offline(self, judgeable_after_s: float | None, limit: int, lag_s: float = 0.0) -> Outcome:
        """One run of the offline job, in one transaction: resolve the server_offline alerts that are
        over (the server is back: `recovered` at the last_seen_at that proved it; its flag is off:
        `flag_disabled`; it was deleted: `deleted`), then, unless `judgeable_after_s` is None (the
        pipeline may not be judged now), declare the due servers offline (deadline passed more than
        `lag_s`, ingest's current lag, ago) and fire. Every alert goes to the history and the outbox
        like a process's (procwatch_domain.liveness)."""
        outcome = Outcome()
        rows: list[AlertRow] = []
        resolutions: list[ServerAlertResolution] = []
        outbox: list[OutboxRow] = []
        windows = await self._window_index()
        async with self._write_transaction():
            over = await self._repo.offline_alerts_to_resolve(SERVER_OFFLINE, limit)
            for a in over:
                if a.deleted:
                    reason, at = DELETED, a.now
                elif not a.alert_on_offline:
                    # offline_since stays: turned back on during the same silence, it does not fire again.
                    reason, at = FLAG_DISABLED, a.now
                else:
                    reason, at = RECOVERED, a.last_seen_at or a.now
                resolutions.append(ServerAlertResolution(a.alert_id, at, reason))
                event = _server_event(SERVER_OFFLINE, "resolved", at, a.server_id, a.user_id, a.hostname,
                                      reason=reason, suppressed=a.suppressed_unnotified)
                outcome.alerts.append(event)
            await self._repo.clear_recovered()
            declared = ([] if judgeable_after_s is None
                        else await self._repo.declare_offline(SERVER_OFFLINE, judgeable_after_s, limit, lag_s))
            for srv in declared:
                silent_s = max(0.0, (srv.now - srv.last_seen_at).total_seconds())
                suppressed = windows.suppressed(srv.user_id, srv.id, None, srv.offline_deadline_at)
                event = _server_event(SERVER_OFFLINE, "firing", srv.offline_deadline_at, srv.id, srv.user_id,
                                      srv.hostname, value=round(silent_s, 3), threshold=float(srv.offline_after_s),
                                      suppressed=suppressed)
                rows.append(AlertRow(None, srv.id, srv.user_id, SERVER_OFFLINE, event.value, event.threshold,
                                     srv.offline_deadline_at, event.id, srv.hostname, suppressed=suppressed))
                outcome.alerts.append(event)
            if not outcome.alerts:
                return outcome
            await self._repo.resolve_server_alerts(resolutions)
            await self._repo.insert_alerts(rows)
            outbox = [OutboxRow(subjects.server_alerts(e.server.id), e.id, e.model_dump_json())
                      for e in outcome.alerts]
            ids = await self._repo.add_outbox(outbox)
        outcome.outbox = [(i, r.subject, r.msg_id, r.payload) for i, r in zip(ids, outbox, strict=True)]
        outcome.evaluated = len(over) + len(declared)
        return outcome


    # --- maintenance windows (the maintenance-ended job, procwatch_alerter.maintenance) -------

    async def notify_after_maintenance(self, limit: int) -> Outcome:
        """One run of the maintenance-ended job, in one transaction: every open episode that started
        suppressed and that no window covers any more is published once, `state` firing, `reason`
        maintenance_ended, `episode_id` its firing event's id. Its id derives from that episode id,
        and the row is marked (unsuppressed_at), so it goes out once whatever the job's replicas do."""
        outcome = Outcome()
        windows = await self._window_index()
        outbox: list[OutboxRow] = []
        async with self._write_transaction():
            waiting = await self._repo.lock_suppressed_episodes(limit)
            done: list[int] = []
            for ep in waiting:
                if windows.suppressed(ep.user_id, ep.server_id, ep.watched_process_id, ep.now):
                    continue  # still (or again) inside a window
                event = AlertEvent(
                    id=f"{ep.event_id}.{MAINTENANCE_ENDED}",
                    type=ep.type,  # type: ignore[arg-type]
                    state="firing",
                    occurred_at=ep.now,
                    user_id=ep.user_id,
                    server=AlertServer(id=ep.server_id, hostname=ep.hostname),
                    process=(AlertProcess(id=ep.watched_process_id, process_name=ep.process_name)
                             if ep.watched_process_id is not None else None),
                    value=ep.value,
                    threshold=ep.threshold,
                    reason=MAINTENANCE_ENDED,
                    episode_id=ep.event_id,
                )
                subject = (subjects.alerts(ep.server_id, ep.watched_process_id) if ep.watched_process_id is not None
                           else subjects.server_alerts(ep.server_id))
                outbox.append(OutboxRow(subject, event.id, event.model_dump_json()))
                outcome.alerts.append(event)
                done.append(ep.id)
            if not done:
                return outcome
            await self._repo.mark_unsuppressed(done)
            ids = await self._repo.add_outbox(outbox)
        outcome.outbox = [(i, r.subject, r.msg_id, r.payload) for i, r in zip(ids, outbox, strict=True)]
        outcome.evaluated = len(waiting)
        return outcome


def _server_event(alert_type: str, state: str, at: datetime, server_id: int, user_id: int, hostname: str, *,
                  value: float | None = None, threshold: float | None = None,
                  reason: str | None = None, suppressed: bool = False) -> AlertEvent:
    """A server-level alert event (no process), with its deterministic id."""
    return AlertEvent(
        id=server_alert_id(server_id, alert_type, state, at),
        type=alert_type,  # type: ignore[arg-type]
        state=state,  # type: ignore[arg-type]
        occurred_at=at,
        user_id=user_id,
        server=AlertServer(id=server_id, hostname=hostname),
        process=None,
        value=value,
        threshold=threshold,
        reason=reason,
        suppressed=suppressed,
    )
