"""The batch pipeline, without framework: screen -> authenticate -> map names -> store -> events.

The entrypoint (handlers.py) owns the transaction and the broker: it opens one
transaction per batch, calls `prepare` and `store` inside it, commits, then
publishes `BatchResult.events` and acks. Nothing here commits or publishes.
"""

from __future__ import annotations

import asyncio
import logging
import time

from psycopg.errors import ForeignKeyViolation
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from procwatch_contracts import subjects
from procwatch_contracts.fast import (
    AgentSampleView,
    ProcessAlertConfigView,
    RecordedSampleView,
    SampleRecordedView,
    encode_sample_recorded,
)
from procwatch_db.tables import SAMPLE_ID_BLOCK
from procwatch_domain.liveness import should_stamp
from procwatch_domain.secrets import secret_matches

from procwatch_ingest import inbound
from procwatch_ingest.caches import TtlCache
from procwatch_ingest.inbound import Accepted, Rejected
from procwatch_ingest.repository import ALERT_SETTINGS, IngestRepository, LockedProcess, ProcessUpdate, ServerRow
from procwatch_ingest.stats import IngestStats

log = logging.getLogger("procwatch.ingest")

_MISS = object()


class LockTurn:
    """One batch's place in `LockOrder`: wait for the batch before it to hold its row locks, then
    let the next one go (`release`, also when the batch fails before locking)."""

    def __init__(self, previous: asyncio.Future | None, mine: asyncio.Future) -> None:
        self._previous, self._mine = previous, mine

    async def wait(self) -> None:
        if self._previous is not None:
            await asyncio.shield(self._previous)

    def release(self) -> None:
        if not self._mine.done():
            self._mine.set_result(None)


class LockOrder:
    """Batches handled concurrently take their watched_processes row locks in the order they were
    pulled. Otherwise a later batch could lock (and commit) first, and the earlier batch's samples
    of the same processes would then be older than `last_sample_at`: stored, but never evaluated
    for alerts (a down that lasted one tick would go unseen while ingest catches up)."""

    def __init__(self) -> None:
        self._last: asyncio.Future | None = None

    def turn(self) -> LockTurn:
        mine = asyncio.get_running_loop().create_future()
        previous, self._last = self._last, mine
        return LockTurn(previous, mine)


@dataclass(frozen=True, slots=True)
class Incoming:
    """One agent message as pulled from the stream."""

    subject: str
    headers: dict[str, str] | None
    data: bytes


@dataclass(slots=True)
class Plan:
    """What to store for one batch.

    rows: one per unique (process, time), in batch order:
    (watched_process_id, count, cpu_pct, memory_pct, oldest_start_unix, recorded_at);
    names[i] is the process name of rows[i]; messages: each stored message with its
    server and the range of its rows.
    """

    rejected: dict[int, Rejected] = field(default_factory=dict)  # message index -> reason
    messages: list[tuple[AgentSampleView, ServerRow, Sequence[int]]] = field(default_factory=list)
    rows: list[tuple] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    dropped: int = 0  # readings of unknown / paused process names
    # Server id -> broker time of its newest authenticated message in the batch (liveness).
    seen: dict[int, datetime] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class OutgoingEvent:
    subject: str
    msg_id: str
    payload: bytes


@dataclass(slots=True)
class BatchResult:
    events: list[OutgoingEvent]
    inserted: int
    duplicates: int
    dropped: int
    # The last_seen_at values written (server id -> time): `last_seen_committed` after commit.
    last_seen: dict[int, datetime] = field(default_factory=dict)


def event_msg_id(server_id: int, sampled_at: datetime) -> str:
    """Deterministic `Nats-Msg-Id` of a SampleRecorded event: a replay re-publishes the same id."""
    return f"sr-{server_id}-{sampled_at.astimezone(UTC).isoformat().replace('+00:00', 'Z')}"


def _alert_config(p: LockedProcess) -> ProcessAlertConfigView:
    return ProcessAlertConfigView(*p[ALERT_SETTINGS])


class SampleIdPool:
    """Sample ids taken from process_samples_id_seq a block at a time and handed out across
    batches: a small batch usually needs no nextval round trip at all. Ids of a batch that
    rolls back are simply never used (ids have gaps; nothing relies on their density)."""

    def __init__(self, block: int = SAMPLE_ID_BLOCK):
        self.block = block
        self._free: list[int] = []

    async def take(self, repo: IngestRepository, n: int) -> list[int]:
        while len(self._free) < n:  # re-checked after the await: another batch may have taken some
            for first in await repo.allocate_id_blocks(-(-(n - len(self._free)) // self.block)):
                self._free.extend(range(first, first + self.block))
        ids = self._free[:n]
        del self._free[:n]
        return ids


class IngestService:
    def __init__(
        self,
        *,
        server_cache_ttl_s: float = 10.0,
        unknown_server_cache_ttl_s: float = 2.0,
        process_cache_ttl_s: float = 5.0,
        max_future_s: float = 300.0,
        last_seen_step_s: float = 1.0,
        stats: IngestStats | None = None,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ):
        self.servers: TtlCache[int, ServerRow | None] = TtlCache(server_cache_ttl_s, clock)
        self.processes: TtlCache[int, dict[str, int]] = TtlCache(process_cache_ttl_s, clock)
        self.unknown_server_ttl_s = unknown_server_cache_ttl_s
        self.max_future = timedelta(seconds=max_future_s)
        self.stats = stats or IngestStats()
        self.sample_ids = SampleIdPool()
        self._now = now
        # Server id -> the last_seen_at this process last committed (see `liveness_stamps`).
        self.last_seen_step_s = last_seen_step_s
        self._last_seen_written: dict[int, datetime] = {}

    # --- checks --------------------------------------------------------------

    def screen(self, messages: list[Incoming]) -> list[Accepted | Rejected]:
        now = self._now()
        return [inbound.check_message(m.subject, m.headers, m.data, now, self.max_future) for m in messages]

    async def _servers(self, repo: IngestRepository, server_ids: set[int]) -> dict[int, ServerRow | None]:
        """A snapshot for this batch (an entry expiring mid-batch must not turn into 'unknown')."""
        snapshot: dict[int, ServerRow | None] = {}
        missing = []
        for sid in server_ids:
            row = self.servers.get(sid, _MISS)
            if row is _MISS:
                missing.append(sid)
            else:
                snapshot[sid] = row
        if missing:
            found = await repo.load_servers(sorted(missing))
            for sid in missing:
                row = found.get(sid)
                self.servers.put(sid, row, None if row is not None else self.unknown_server_ttl_s)
                snapshot[sid] = row
        return snapshot

    async def _process_names(self, repo: IngestRepository, server_ids: set[int]) -> dict[int, dict[str, int]]:
        snapshot: dict[int, dict[str, int]] = {}
        missing = []
        for sid in server_ids:
            names = self.processes.get(sid)
            if names is None:
                missing.append(sid)
            else:
                snapshot[sid] = names
        if missing:
            loaded = await repo.load_enabled_processes(sorted(missing))
            for sid in missing:
                names = loaded.get(sid, {})
                self.processes.put(sid, names)
                snapshot[sid] = names
        return snapshot

    async def authenticate(self, repo: IngestRepository, server_id: int, agent_key: str) -> ServerRow | Rejected:
        servers = await self._servers(repo, {server_id})
        return self._check_key(servers.get(server_id), server_id, agent_key)

    @staticmethod
    def _check_key(row: ServerRow | None, server_id: int, agent_key: str) -> ServerRow | Rejected:
        if row is None:
            return Rejected(inbound.UNKNOWN_SERVER, f"no server {server_id}")
        if not secret_matches(agent_key, row.agent_key_hash):
            return Rejected(inbound.UNAUTHORIZED, "agent key does not match the server")
        return row

    async def prepare(self, repo: IngestRepository, checked: list[Accepted | Rejected],
                      received_at: Sequence[datetime | None] | None = None) -> Plan:
        """`received_at[i]`: the broker's stored time of message i (its liveness time); when
        unknown, ingest's own clock now (never the agent's sampled_at)."""
        plan = Plan()
        accepted = {i: c for i, c in enumerate(checked) if isinstance(c, Accepted)}
        plan.rejected = {i: c for i, c in enumerate(checked) if isinstance(c, Rejected)}
        servers = await self._servers(repo, {a.sample.server_id for a in accepted.values()})
        authed: dict[int, tuple[Accepted, ServerRow]] = {}
        now = self._now()
        for i, a in accepted.items():
            sid = a.sample.server_id
            result = self._check_key(servers.get(sid), sid, a.agent_key)
            if not isinstance(result, Rejected):
                # Now that the plan is known: not older than it keeps samples.
                result = inbound.check_sampled_at(a.sample.sampled_at, now, self.max_future,
                                                  result.retention_days) or result
            if isinstance(result, Rejected):
                plan.rejected[i] = result
            else:
                authed[i] = (a, result)
                seen = (received_at[i] if received_at is not None else None) or now
                if (prev := plan.seen.get(sid)) is None or seen > prev:
                    plan.seen[sid] = seen
        process_names = await self._process_names(repo, {row.id for _, row in authed.values()})

        # A repeat of a (process, time) key is the same sample: one row. A process belongs to
        # one server, so the key is checked per (server, time).
        rows, names = plan.rows, plan.names
        taken_at: dict[tuple[int, datetime], set[int]] = {}
        for a, server in authed.values():
            sample = a.sample
            name_to_id = process_names[server.id].get
            at = sample.sampled_at.astimezone(UTC)
            taken = taken_at.setdefault((server.id, at), set())
            first = len(rows)
            for r in sample.processes:
                pid = name_to_id(r.process_name)
                if pid is None:
                    plan.dropped += 1
                elif pid not in taken:
                    taken.add(pid)
                    rows.append((pid, r.count, r.cpu_pct, r.memory_pct, r.oldest_start_unix, at))
                    names.append(r.process_name)
            plan.messages.append((sample, server, range(first, len(rows))))
        return plan

    # --- storage ---------------------------------------------------------------

    async def store(self, repo: IngestRepository, plan: Plan, *, may_be_replay: bool = True,
                    lock_turn: LockTurn | None = None) -> BatchResult:
        """Write the batch (inside the caller's transaction) and build its events.

        Hot path (tens of thousands of samples/s): plain tuples, one COPY, one UPDATE
        from a staged COPY; the event JSON is encoded from procwatch_contracts.fast's
        mirror of SampleRecorded (tests validate it against the model).

        `may_be_replay` False (no message of the batch was delivered before) skips the
        replay-safe insert: a sample stored already then fails the transaction with
        UniqueViolation, and the caller redelivers the batch, which takes that path.

        `lock_turn` (batches handled concurrently): the row locks are taken only after the
        previous batch holds its own, and the next batch may lock once this one does.
        """
        dropped = plan.dropped
        phase = self.stats.phase_s
        rows, names, per_message = plan.rows, plan.names, plan.messages

        # Rows first, row locks second: the COPY of this batch can run while another batch
        # still holds the watched_processes rows (the FK check takes KEY SHARE, which does
        # not conflict with the FOR NO KEY UPDATE below).
        t1 = time.perf_counter()
        try:
            ids = await repo.insert_samples(
                rows, await self.sample_ids.take(repo, len(rows)), may_be_replay=may_be_replay) if rows else []
        except ForeignKeyViolation:
            # A process was deleted since the name cache was filled: refresh and retry the batch.
            for _, server, _ in per_message:
                self.processes.invalidate(server.id)
            raise
        t2 = time.perf_counter()
        if lock_turn is not None:
            await lock_turn.wait()
        locked = await repo.lock_processes(list({r[0] for r in rows}))
        if lock_turn is not None:
            lock_turn.release()

        # Paused, renamed or deleted since the name cache was filled: not stored after all.
        gone = [i for i, r in enumerate(rows)
                if (p := locked.get(r[0])) is None or not p.enabled or p.process_name != names[i]]
        if gone:
            await repo.delete_samples([ids[i] for i in gone if ids[i] is not None])
            for i in gone:
                ids[i] = None
            gone_set = set(gone)
            per_message = [(m, srv, [i for i in idx if i not in gone_set]) for m, srv, idx in per_message]
            dropped += len(gone)
            for _, server, _ in per_message:
                self.processes.invalidate(server.id)

        # The newest message per server sets its agent version, unless it is older than what
        # one of its processes already holds (a late tick).
        versions: dict[int, tuple[datetime, str]] = {}
        for sample, server, msg_rows in per_message:
            at = rows[msg_rows[0]][5] if msg_rows else sample.sampled_at
            stale = any((last := locked[rows[i][0]].last_sample_at) is not None and at < last for i in msg_rows)
            prev_version = versions.get(server.id)
            if not stale and (prev_version is None or at >= prev_version[0]):
                versions[server.id] = (at, sample.agent_version)
        inserted_count = sum(1 for i in ids if i is not None)

        # Chain "previous" through each process's new samples in time order, starting
        # from the last_* values as they were before this batch (read under the row lock).
        gone_set = set(gone)
        out: list[RecordedSampleView | None] = [None] * len(rows)
        per_process: dict[int, list[int]] = {}
        late: list[int] = []
        for i, r in enumerate(rows):
            if ids[i] is not None:
                per_process.setdefault(r[0], []).append(i)
            elif i not in gone_set:
                late.append(i)  # already stored: a replay after a crash between commit and publish
        configs: dict[int, ProcessAlertConfigView] = {}
        updates: list[ProcessUpdate] = []
        newest_at: dict[int, datetime] = {}
        for pid, idxs in per_process.items():
            proc = locked[pid]
            cfg = configs[pid] = _alert_config(proc)
            if len(idxs) > 1:
                idxs.sort(key=lambda i: rows[i][5])
            p_count, p_oldest, p_at = proc.last_count, proc.last_oldest_start_unix, proc.last_sample_at
            newest = None
            for i in idxs:
                pid_, count, cpu, mem, oldest, at = rows[i]
                if p_at is None or at > p_at:
                    out[i] = RecordedSampleView(
                        sample_id=ids[i], watched_process_id=pid, process_name=names[i],
                        count=count, cpu_pct=cpu, memory_pct=mem, oldest_start_unix=oldest,
                        recorded_at=at, previous_count=p_count, previous_oldest_start_unix=p_oldest,
                        previous_recorded_at=p_at, is_latest=True, config=cfg, alerted_state=proc.alerted_state,
                    )
                    p_count, p_oldest, p_at = count, oldest, at
                    newest = rows[i]
                else:
                    late.append(i)  # older than the last sample: stored, never alerts
            if newest is not None:
                newest_at[pid] = newest[5]
            updates.append(ProcessUpdate(
                id=pid, inserted=len(idxs),
                last_count=newest[1] if newest else None, last_cpu_pct=newest[2] if newest else None,
                last_memory_pct=newest[3] if newest else None, last_sample_at=newest[5] if newest else None,
                last_oldest_start_unix=newest[4] if newest else None,
            ))

        if late:
            # Replays and late samples: read them back with their predecessor in time, so the
            # event is complete and the same on every replay (same Nats-Msg-Id, deduplicated).
            index = {(rows[i][0], rows[i][5]): i for i in late}
            for s in await repo.stored_samples([rows[i][0] for i in late], [rows[i][5] for i in late]):
                i = index.get((s.watched_process_id, s.recorded_at))
                if i is None:
                    continue
                pid, count, cpu, mem, oldest, at = rows[i]
                proc = locked[pid]
                last_at = proc.last_sample_at
                batch_newest = newest_at.get(pid)
                out[i] = RecordedSampleView(
                    sample_id=s.sample_id, watched_process_id=pid, process_name=names[i],
                    count=count, cpu_pct=cpu, memory_pct=mem, oldest_start_unix=oldest,
                    recorded_at=at, previous_count=s.previous_count,
                    previous_oldest_start_unix=s.previous_oldest_start_unix,
                    previous_recorded_at=s.previous_recorded_at,
                    is_latest=(last_at is None or at >= last_at) and (batch_newest is None or at >= batch_newest),
                    config=configs.get(pid) or _alert_config(proc), alerted_state=proc.alerted_state,
                )

        t3 = time.perf_counter()
        phase["store_lock_chain"] += t3 - t2
        await repo.update_processes(updates)
        last_seen = self.liveness_stamps(plan.seen)
        await repo.update_servers({sid: v for sid, (_, v) in versions.items()}, last_seen)
        t4 = time.perf_counter()

        events: list[OutgoingEvent] = []
        event_ids: set[str] = set()
        for sample, server, msg_rows in sorted(per_message, key=lambda m: (m[1].id, m[0].sampled_at)):
            samples = [out[i] for i in msg_rows if out[i] is not None]
            if not samples:
                continue
            msg_id = event_msg_id(server.id, sample.sampled_at)
            if msg_id in event_ids:
                continue
            event_ids.add(msg_id)
            payload = encode_sample_recorded(SampleRecordedView(
                v=1, server_id=server.id, hostname=server.hostname, user_id=server.user_id,
                agent_version=sample.agent_version, sampled_at=sample.sampled_at.astimezone(UTC), samples=samples,
                server_seen_at=plan.seen.get(server.id),
            ))
            events.append(OutgoingEvent(subjects.samples_recorded(server.id), msg_id, payload))
        t5 = time.perf_counter()
        phase["store_insert"] += t2 - t1
        phase["store_update"] += t4 - t3
        phase["store_events"] += t5 - t4
        return BatchResult(events=events, inserted=inserted_count, duplicates=len(rows) - inserted_count,
                           dropped=dropped, last_seen=last_seen)

    # --- liveness ----------------------------------------------------------------

    def liveness_stamps(self, seen: dict[int, datetime]) -> dict[int, datetime]:
        """The servers whose last_seen_at is worth writing: moved forward by >= last_seen_step_s
        since the value this process last committed (procwatch_domain.liveness.should_stamp)."""
        written = self._last_seen_written
        step = self.last_seen_step_s
        return {sid: at for sid, at in seen.items() if should_stamp(written.get(sid), at, step)}

    def last_seen_committed(self, stamps: dict[int, datetime]) -> None:
        """After the batch's commit: remember what was written (a rolled-back batch is redelivered
        and stamps again)."""
        written = self._last_seen_written
        for sid, at in stamps.items():
            if (prev := written.get(sid)) is None or at > prev:
                written[sid] = at

    async def watch_list(self, repo: IngestRepository, server_id: int) -> list[str]:
        return await repo.enabled_process_names(server_id)
