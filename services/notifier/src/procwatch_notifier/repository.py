"""All SQL of the notifier: deliveries written from alert events, claimed, settled.

A delivery row is the notifier's to-do item, one per (channel, alert id). Its life:
pending (next_attempt_at due) -> claimed (still pending, next_attempt_at pushed one lease
ahead) -> delivered | pending again (retry, next_attempt_at = the schedule's) | failed |
dead (gave up) | skipped (channel disabled before it went out).

Order within a channel: only a channel's OLDEST pending delivery (its head, lowest id)
decides whether the channel is due, and a claim takes the first deliveries of a channel in
id order. A claimed head is leased (next_attempt_at in the future), so no replica claims
anything else of that channel until it is settled or its lease runs out: one sender per
channel at a time, in alert order (a resolved never overtakes its firing). Claimers
serialise per channel on the channel row (FOR NO KEY UPDATE SKIP LOCKED: replicas split
the channels between them, and inserting deliveries, which only takes KEY SHARE, is never blocked).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import AsyncConnection

from procwatch_domain.maintenance import WINDOW_COLUMNS, Window, window_from_row


@dataclass(frozen=True, slots=True)
class NewDelivery:
    """An alert event as the insert needs it."""

    alert_id: str
    alert_type: str
    alert_state: str
    user_id: int
    server_id: int
    payload: str
    # A firing event's episode (its own id, or the episode it reminds of / notifies after maintenance).
    episode_id: str | None = None
    reminder: int = 0


@dataclass(frozen=True, slots=True)
class DueReminder:
    """An open, unacknowledged episode whose last notification to a channel is older than the
    channel's repeat_every_s: the payload of that last notification and its reminder number."""

    channel_id: int
    episode_id: str
    reminder: int
    payload: str
    alert_type: str
    user_id: int
    server_id: int
    watched_process_id: int | None


@dataclass(frozen=True, slots=True)
class Channel:
    id: int
    type: str
    format: str
    name: str
    target_encrypted: str
    secret_encrypted: str | None
    enabled: bool
    updated_at: datetime
    since_paced_s: float | None  # chat burst state: seconds since its last message (None: never)
    burst_streak: int  # messages in its current burst


@dataclass(frozen=True, slots=True)
class Claimed:
    """A delivery this replica holds (leased) and sends now."""

    id: int
    channel_id: int
    alert_id: str
    payload: str
    attempts: int
    age_s: float  # since the delivery was created


INSERT_DELIVERIES = """
insert into deliveries (channel_id, alert_id, alert_type, alert_state, payload, status, attempts,
                        next_attempt_at, created_at, episode_id, reminder)
select c.id, e.alert_id, e.alert_type, e.alert_state, e.payload, 'pending', 0, now(), now(), e.episode_id,
       e.reminder
from unnest(%(alert_ids)b::text[], %(types)b::text[], %(states)b::text[], %(payloads)b::text[],
            %(user_ids)b::bigint[], %(server_ids)b::bigint[], %(episode_ids)b::text[], %(reminders)b::int[])
     with ordinality as e(alert_id, alert_type, alert_state, payload, user_id, server_id, episode_id, reminder, ord)
join channels c on c.user_id = e.user_id and c.enabled
 and (c.alert_types is null or e.alert_type = any(c.alert_types))
 and (c.server_ids is null or e.server_id = any(c.server_ids))
 and (c.send_resolved or e.alert_state = 'firing')
order by e.ord, c.id
on conflict (channel_id, alert_id) do nothing
"""

DUE_REMINDERS = """
select channel_id, episode_id, reminder, payload, type, user_id, server_id, watched_process_id from (
    select distinct on (d.channel_id, d.episode_id)
           d.channel_id, d.episode_id, d.reminder, d.payload, a.type, a.user_id, a.server_id,
           a.watched_process_id, d.created_at, c.repeat_every_s
    from alerts a
    join channels c on c.user_id = a.user_id and c.enabled and c.repeat_every_s is not null
     and (c.alert_types is null or a.type = any(c.alert_types))
     and (c.server_ids is null or a.server_id = any(c.server_ids))
    join deliveries d on d.channel_id = c.id and d.episode_id = a.event_id
    where a.resolved_at is null and a.type <> 'process_restarted' and a.acknowledged_at is null
    order by d.channel_id, d.episode_id, d.reminder desc, d.id desc
) last
where created_at <= now() - make_interval(secs => repeat_every_s)
order by created_at
limit %(limit)s
"""

# Channels whose head (oldest pending delivery) is due, oldest due first.
DUE_CHANNELS = """
select channel_id from (
    select distinct on (channel_id) channel_id, next_attempt_at
    from deliveries where status = 'pending'
    order by channel_id, id
) heads
where next_attempt_at <= now() and not (channel_id = any(%(busy)s::bigint[]))
order by next_attempt_at
limit %(limit)s
"""

LOCK_CHANNELS = """
select id, type, format, name, target_encrypted, secret_encrypted, enabled, updated_at,
       extract(epoch from clock_timestamp() - paced_at)::float8, burst_streak
from channels where id = any(%(ids)s::bigint[])
order by id
for no key update skip locked
"""

# Re-read after the lock (a new snapshot): a head another replica leased meanwhile is not due.
CLAIM = """
with pending as (
    select id, channel_id, next_attempt_at,
           row_number() over w as position,
           first_value(next_attempt_at) over w as head_due
    from deliveries
    where status = 'pending' and channel_id = any(%(ids)s::bigint[])
    window w as (partition by channel_id order by id)
), picked as (
    select p.id from pending p
    where p.head_due <= now()
      and p.position <= case when p.channel_id = any(%(chat_ids)s::bigint[])
                             then %(per_chat_channel)s else %(per_channel)s end
)
update deliveries d
set next_attempt_at = now() + make_interval(secs => %(lease_s)s)
from picked where d.id = picked.id
returning d.id, d.channel_id, d.alert_id, d.payload, d.attempts,
          extract(epoch from now() - d.created_at)::float8
"""


MARK_DELIVERED = """
update deliveries d
set status = 'delivered', delivered_at = now(), attempts = d.attempts + 1, next_attempt_at = null,
    last_status_code = m.code, last_error = null
from unnest(%(ids)s::bigint[], %(codes)s::int[]) as m(id, code)
where d.id = m.id and d.status = 'pending'
"""


# The users' maintenance windows that may be in effect now.
USERS_WINDOWS_SQL = (f"select {', '.join(WINDOW_COLUMNS)} from maintenance_windows"
                     " where user_id = any(%s) and (effective_until is null or effective_until > now())")


class NotifierRepository:
    def __init__(self, conn: AsyncConnection[Any]) -> None:
        self.conn = conn

    async def insert_deliveries(self, events: list[NewDelivery]) -> int:
        """One delivery per (matching channel, event); an event seen before adds nothing."""
        if not events:
            return 0
        # Binary parameters (%b): psycopg's text-format array dumper escapes every element with
        # a regular expression, which on the payloads cost more than the rest of the batch.
        cur = await self.conn.execute(INSERT_DELIVERIES, {
            "alert_ids": [e.alert_id for e in events], "types": [e.alert_type for e in events],
            "states": [e.alert_state for e in events], "payloads": [e.payload for e in events],
            "user_ids": [e.user_id for e in events], "server_ids": [e.server_id for e in events],
            "episode_ids": [e.episode_id for e in events], "reminders": [e.reminder for e in events],
        })
        return cur.rowcount

    # --- reminders (docs/notifications.md, "Reminders") --------------------------------

    async def due_reminders(self, limit: int) -> list[DueReminder]:
        """Per (channel with repeat_every_s, open unacknowledged episode it was notified of): the last
        notification, when it is older than the cadence. Open episodes only (ix_alerts_open), their
        deliveries by ix_deliveries_channel_episode; the channel's current filters still apply."""
        cur = await self.conn.execute(DUE_REMINDERS, {"limit": limit})
        return [DueReminder(*row) for row in await cur.fetchall()]

    async def windows_of_users(self, user_ids: list[int]) -> list[Window]:
        """The users' maintenance windows that may be in effect now (a reminder inside one is held)."""
        cur = await self.conn.execute(USERS_WINDOWS_SQL, (user_ids,))
        return [window_from_row(r) for r in await cur.fetchall()]

    async def insert_reminders(self, reminders: list[tuple[DueReminder, str, str]]) -> int:
        """(due, reminder's alert id, its payload): one pending delivery each, to its channel only;
        a reminder number already written for the channel and episode adds nothing."""
        if not reminders:
            return 0
        async with self.conn.cursor() as cur:
            await cur.executemany(
                "insert into deliveries (channel_id, alert_id, alert_type, alert_state, payload, status, attempts,"
                " next_attempt_at, created_at, episode_id, reminder)"
                " values (%s, %s, %s, 'firing', %s, 'pending', 0, now(), now(), %s, %s)"
                " on conflict (channel_id, alert_id) do nothing",
                [(due.channel_id, alert_id, due.alert_type, payload, due.episode_id, due.reminder + 1)
                 for due, alert_id, payload in reminders],
            )
            return cur.rowcount

    async def claim(self, *, busy: list[int], max_channels: int, per_channel: int, per_chat_channel: int,
                    lease_s: float, delivered: list[tuple[int, int | None]] = ()
                    ) -> tuple[dict[int, Channel], list[Claimed]]:
        """Mark `delivered` ((id, status code) of deliveries sent since the last claim), then lease
        the next deliveries of up to `max_channels` due channels (not in `busy`), in one
        transaction: the channels (locked while claiming) and their deliveries in id order.

        The transaction commits without waiting for the WAL flush (synchronous_commit off): a
        claim or a delivered mark lost in a database crash only means a delivery is sent again
        (at least once), and it saves a disk flush per cycle. The consumer's inserts, which must
        not be lost once acked, commit normally."""
        async with self.conn.transaction():
            await self.conn.execute("set local synchronous_commit = off")
            if delivered:
                await self.conn.execute(MARK_DELIVERED, {"ids": [d[0] for d in delivered],
                                                         "codes": [d[1] for d in delivered]})
            cur = await self.conn.execute(DUE_CHANNELS, {"busy": busy, "limit": max_channels})
            due = [row[0] for row in await cur.fetchall()]
            if not due:
                return {}, []
            cur = await self.conn.execute(LOCK_CHANNELS, {"ids": due})
            channels = {row[0]: Channel(*row) for row in await cur.fetchall()}
            if not channels:
                return {}, []
            chat_ids = [c.id for c in channels.values() if c.type in ("slack", "discord")]
            cur = await self.conn.execute(CLAIM, {
                "ids": list(channels), "chat_ids": chat_ids, "per_channel": per_channel,
                "per_chat_channel": per_chat_channel, "lease_s": lease_s})
            claimed = sorted((Claimed(*row) for row in await cur.fetchall()), key=lambda c: c.id)
        return channels, claimed

    async def delivered(self, delivered: list[tuple[int, int | None]]) -> None:
        """(id, status code) of deliveries the receiver accepted."""
        if delivered:
            await self.conn.execute(MARK_DELIVERED, {"ids": [d[0] for d in delivered],
                                                     "codes": [d[1] for d in delivered]})

    async def record_paced(self, channel_id: int, streak: int) -> None:
        """A chat channel's message went out now, `streak` messages into its burst (for whichever
        replica sends to it next). Leaves updated_at alone: that one tracks the channel's settings."""
        await self.conn.execute("update channels set paced_at = clock_timestamp(), burst_streak = %s where id = %s",
                                (streak, channel_id))

    async def retry(self, delivery_id: int, in_s: float, status_code: int | None, error: str | None) -> None:
        await self.conn.execute(
            "update deliveries set attempts = attempts + 1, next_attempt_at = now() + make_interval(secs => %s),"
            " last_status_code = %s, last_error = %s where id = %s and status = 'pending'",
            (in_s, status_code, _cut(error), delivery_id))

    async def settle(self, ids: list[int], status: str, status_code: int | None, error: str | None, *,
                     attempted: bool = True) -> None:
        """Final states: failed, dead (attempted) or skipped (never attempted)."""
        if ids:
            await self.conn.execute(
                "update deliveries set status = %s, next_attempt_at = null,"
                " attempts = attempts + %s, last_status_code = coalesce(%s, last_status_code),"
                " last_error = %s where id = any(%s::bigint[]) and status = 'pending'",
                (status, 1 if attempted else 0, status_code, _cut(error), ids))

    async def release(self, ids: list[int]) -> None:
        """Claimed but not attempted (the head before them waits for a retry): due again, still in order."""
        if ids:
            await self.conn.execute(
                "update deliveries set next_attempt_at = now() where id = any(%s::bigint[]) and status = 'pending'",
                (ids,))

    async def disable_channel(self, channel_id: int, reason: str, failed_ids: list[int],
                              status_code: int | None) -> None:
        """A receiver said 410 Gone: the attempted deliveries failed, the channel stops (visible
        in the API) and the rest of its queue is skipped."""
        async with self.conn.transaction():
            await self.settle(failed_ids, "failed", status_code, reason)
            await self.conn.execute(
                "update channels set enabled = false, disabled_reason = %s, updated_at = now() where id = %s",
                (reason[:200], channel_id))
            await self.conn.execute(
                "update deliveries set status = 'skipped', next_attempt_at = null, last_error = %s"
                " where channel_id = %s and status = 'pending'", (f"channel disabled: {reason}"[:300], channel_id))


def _cut(error: str | None) -> str | None:
    return error[:300] if error else error
