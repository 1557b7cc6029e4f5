"""The offline job (issue 15): declares servers offline and resolves those alerts, every
`offline_check_every_s` on the worker runtime (procwatch_messaging.jobs, one replica at a time).

Each run:
1. asks JetStream how far ingest's durable consumer on AGENT_SAMPLES is behind (`probe`): the
   messages pending or unacked, and how much older the oldest unacked one is than the stream's
   newest (both times are the broker's);
2. feeds that to the LivenessGate (procwatch_domain.liveness): while ingest lags or the broker
   cannot be asked, nobody is declared offline, and afterwards a server only once its whole
   offline_after_s lies inside the caught-up time (so does the job's first run after a start);
3. runs AlerterService.detect_offline in one transaction: resolutions first (a scan of the OPEN
   server_offline alerts only), then the due servers (partial index on offline_deadline_at) whose
   deadline passed more than ingest's current lag ago;
   the alert events go through the outbox and out in commit order (Handlers.run_unit).

The sample hot paths are untouched: ingest only stamps last_seen_at (docs/ingest.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from procwatch_contracts import subjects
from procwatch_domain.liveness import LivenessGate, PipelineState, pipeline_caught_up

from procwatch_alerter.service import AlerterService, Outcome
from procwatch_alerter.settings import AlerterSettings

if TYPE_CHECKING:
    from nats.js import JetStreamContext

log = logging.getLogger("procwatch.alerter.offline")

RunUnit = Callable[[Callable[[AlerterService], Awaitable[Outcome]]], Awaitable[Outcome]]
API_TIMEOUT_S = 2.0


class OfflineDetector:
    def __init__(self, settings: AlerterSettings, js: Callable[[], JetStreamContext], run_unit: RunUnit,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self._js = js
        self._run_unit = run_unit
        self._clock = clock
        # A check missed for a few periods (another replica held the job's lock, or this one failed)
        # reopens the window: what happened meanwhile was not seen by this replica.
        self.gate = LivenessGate(settings.offline_grace_s, max_gap_s=max(5.0, 5 * settings.offline_check_every_s))
        self.last_state: PipelineState | None = None
        # Counters (tests, the bench, the final log line).
        self.fired = 0
        self.resolved = 0
        self.gated_runs = 0

    async def probe(self) -> PipelineState:
        """Ingest's lag on AGENT_SAMPLES, from the JetStream API: the backlogs of its durables (one per
        ingest partition) summed, the oldest unacked message of any. Unreachable (or no such durable:
        ingest never started) counts as not caught up, and so does a stream without a leader: on a
        cluster, while AGENT_SAMPLES elects a new one, agents' publishes fail and the consumers
        (led elsewhere) look idle, as if every agent had fallen silent."""
        stream = subjects.AGENT_SAMPLES_STREAM
        backlog, oldest = 0, None
        try:
            js = self._js()
            stream_info = await asyncio.wait_for(js.stream_info(stream), API_TIMEOUT_S)
            if stream_info.cluster is not None and not stream_info.cluster.leader:
                return PipelineState(reachable=False)
            for durable in self.settings.ingest_durables:
                info = await js.consumer_info(stream, durable, timeout=API_TIMEOUT_S)
                pending = (info.num_pending or 0) + (info.num_ack_pending or 0)
                if pending == 0:
                    continue
                backlog += pending
                floor = info.ack_floor.stream_seq if info.ack_floor and info.ack_floor.stream_seq else 0
                first = await js.get_msg(stream, seq=floor + 1, next=True,
                                         subject=info.config.filter_subject or subjects.AGENT_SAMPLES_SUBJECTS)
                if first.time and (oldest is None or oldest.time is None or first.time < oldest.time):
                    oldest = first
            if backlog == 0:
                return PipelineState(reachable=True)
            newest = await js.get_msg(stream, seq=stream_info.state.last_seq)
        except Exception as exc:  # broker down, timeout, durable missing: judge nobody
            log.debug("ingest lag unknown", extra={"error": type(exc).__name__})
            return PipelineState(reachable=False)
        age = (newest.time - oldest.time).total_seconds() if newest.time and oldest and oldest.time else 0.0
        return PipelineState(reachable=True, backlog=backlog, oldest_unacked_age_s=max(0.0, age))

    async def run(self) -> None:
        """One run (the periodic job's function)."""
        s = self.settings
        state = await self.probe()
        caught_up = pipeline_caught_up(state, s.offline_max_backlog, s.offline_max_lag_s)
        if self.last_state is not None and caught_up != self._caught_up(self.last_state):
            log.info("ingest caught up: liveness judged again after each server's offline_after_s" if caught_up
                     else "ingest behind or unreachable: no server is declared offline meanwhile",
                     extra={"reachable": state.reachable, "backlog": state.backlog,
                            "lag_s": round(state.oldest_unacked_age_s, 1)})
        self.last_state = state
        self.gate.observe(caught_up, self._clock())
        judgeable = self.gate.judgeable_after_s(self._clock())
        if judgeable is None:
            self.gated_runs += 1
        lag_s = state.oldest_unacked_age_s
        outcome = await self._run_unit(lambda svc: svc.detect_offline(judgeable, s.offline_batch, lag_s))
        for alert in outcome.alerts:
            if alert.state == "firing":
                self.fired += 1
            else:
                self.resolved += 1
            log.info("alert", extra={"alert_id": alert.id, "type": alert.type, "state": alert.state,
                                     "server_id": alert.server.id, "reason": alert.reason})

    def _caught_up(self, state: PipelineState) -> bool:
        return pipeline_caught_up(state, self.settings.offline_max_backlog, self.settings.offline_max_lag_s)
