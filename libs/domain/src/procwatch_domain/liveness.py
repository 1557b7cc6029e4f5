"""Server liveness (issue 15): when a server counts as online, offline or never seen, and when the
alerter may judge that at all. Pure functions, no I/O.

- A server is *seen* when an authenticated agent message of it (a sample, or the heartbeat: an
  AgentSample with `processes: []`) reaches ingest. The time is the broker's (JetStream's stored
  timestamp), never the agent's `sampled_at`: a skewed agent clock neither fakes life nor death.
- Its *deadline* is `last_seen_at + offline_after_s`; once it passes, the server is offline and,
  with `alert_on_offline` on, a `server_offline` alert fires. The next message resolves it
  (`recovered`); turning the flag off (`flag_disabled`) or deleting the server (`deleted`) does too.
- Silence only means death while the pipeline in front of the alerter is caught up: while ingest
  lags (or cannot be asked), nobody is judged, and afterwards a server is judged only once a whole
  `offline_after_s` of it lies inside the time the pipeline has been healthy (`LivenessGate`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from procwatch_domain.alerts import alert_stamp
from procwatch_domain.rules import ALERT_TYPES, Setting

SERVER_OFFLINE = "server_offline"
# Alert types about a server rather than one of its processes (AlertEvent.process is null).
SERVER_ALERT_TYPES: tuple[str, ...] = (SERVER_OFFLINE,)
# Every AlertEvent.type: the process rules' (procwatch_domain.rules) and the server-level ones.
ALL_ALERT_TYPES: tuple[str, ...] = ALERT_TYPES + SERVER_ALERT_TYPES

# The agent's push interval unless the watch-list reply says otherwise (ingest's interval_seconds).
DEFAULT_PUSH_INTERVAL_S = 10.0
OFFLINE_AFTER_MIN_S = 30
OFFLINE_AFTER_MAX_S = 86_400


def default_offline_after_s(push_interval_s: float = DEFAULT_PUSH_INTERVAL_S) -> int:
    """Three missed pushes, and at least OFFLINE_AFTER_MIN_S."""
    return min(OFFLINE_AFTER_MAX_S, max(OFFLINE_AFTER_MIN_S, math.ceil(3 * push_interval_s)))


# The server's liveness settings (a column of servers and a field of the API's server each).
OFFLINE_AFTER = Setting("offline_after_s", int, default_offline_after_s(), OFFLINE_AFTER_MIN_S,
                        OFFLINE_AFTER_MAX_S, "seconds without any message from the agent before the server"
                        " is offline")
ALERT_ON_OFFLINE = Setting("alert_on_offline", bool, True, description="whether going offline alerts")
SERVER_SETTINGS: tuple[Setting, ...] = (OFFLINE_AFTER, ALERT_ON_OFFLINE)

ServerStatus = Literal["pending", "online", "offline"]


def server_status(last_seen_at: datetime | None, offline_deadline_at: datetime | None,
                  declared_offline: bool, now: datetime) -> ServerStatus:
    """pending: never seen; offline: declared so by the alerter, or its deadline passed; else online."""
    if last_seen_at is None:
        return "pending"
    if declared_offline or (offline_deadline_at is not None and offline_deadline_at <= now):
        return "offline"
    return "online"


def server_alert_id(server_id: int, alert_type: str, state: str, at: datetime) -> str:
    """Deterministic id (and Nats-Msg-Id) of a server-level alert event: `at` is the deadline that
    passed (firing), or the last_seen_at that proved recovery / the resolve time (resolved)."""
    return f"alert-server-{server_id}-{alert_type}-{state}-{alert_stamp(at)}"


def should_stamp(last_written: datetime | None, seen_at: datetime, min_step_s: float) -> bool:
    """Whether ingest writes `seen_at` as the server's last_seen_at: only when it moved forward by
    at least `min_step_s` since the value it last wrote (a fleet pushing every second costs a write
    per server per step, not per message). last_seen_at then lags the truth by < min_step_s."""
    return last_written is None or (seen_at - last_written).total_seconds() >= min_step_s


@dataclass(frozen=True)
class PipelineState:
    """What the alerter's job read of ingest's durable consumer on AGENT_SAMPLES."""

    reachable: bool  # the JetStream API answered
    backlog: int = 0  # num_pending + num_ack_pending
    oldest_unacked_age_s: float = 0.0  # how long the oldest message not yet acked has waited


def pipeline_caught_up(state: PipelineState, max_backlog: int, max_lag_s: float) -> bool:
    """Ingest has stamped (practically) everything agents sent: reachable, a small backlog, and
    nothing waiting longer than `max_lag_s` (a count alone misses a small fleet's stalled ingest)."""
    return state.reachable and state.backlog <= max_backlog and state.oldest_unacked_age_s <= max_lag_s


class LivenessGate:
    """Since when the pipeline has been caught up without a break (monotonic seconds).

    `observe(caught_up, now)` once per check; `judgeable_after_s(now)` is None while it is not, else
    how long it has been (less the extra grace). A server may be declared offline only when its whole
    offline_after_s lies inside that time: a server whose messages are still queued, or who could not
    reach a broker that was down, is never judged on that gap. The first check after the job starts
    opens the window (a restarted alerter waits as well), and so does a check after a gap longer than
    `max_gap_s` (another replica ran the job meanwhile, or this one could not: what happened in between
    was not seen)."""

    def __init__(self, extra_grace_s: float = 0.0, max_gap_s: float = float("inf")) -> None:
        self.extra_grace_s = extra_grace_s
        self.max_gap_s = max_gap_s
        self.healthy_since: float | None = None
        self.last_observed: float | None = None

    def observe(self, caught_up: bool, now: float) -> None:
        gap = self.last_observed is not None and now - self.last_observed > self.max_gap_s
        self.last_observed = now
        if not caught_up or gap:
            self.healthy_since = None
        if caught_up and self.healthy_since is None:
            self.healthy_since = now

    def judgeable_after_s(self, now: float) -> float | None:
        """The largest offline_after_s that may be judged now (None: judge nobody)."""
        if self.healthy_since is None:
            return None
        return now - self.healthy_since - self.extra_grace_s
