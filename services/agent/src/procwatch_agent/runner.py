"""The agent's loop: ask for the watch list, read the process table, publish.

Each tick:
1. request the watch list on `agent.config.<server_id>` (short timeout; on any
   failure the last known list and interval stay in force);
2. read the process table for those names (`collector`);
3. publish the `AgentSample` (`publisher`: buffered through broker outages);
4. hand the matched PIDs to the exit watch (`exits`).

Between ticks:
- a watched PID exiting wakes the loop (`exits`), and after a few milliseconds
  of coalescing an out-of-cadence sample of the affected names goes out
  (`urgent`: coalescing, the per-minute cap, the respawn recheck);
- a `processes.changed.<server_id>` message (the API's lifecycle event, received
  on a plain core-NATS subscription) refreshes the watch list at once.

The broker connection is made in the background and retried forever, so ticks
are sampled and buffered even while the broker has never been reachable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime, timedelta
from importlib.metadata import PackageNotFoundError, version

import nats.errors
from nats.aio.client import Client as NatsClient
from pydantic import ValidationError

from procwatch_agent.collector import Collector
from procwatch_agent.exits import ExitWatch, make_exit_watch
from procwatch_agent.publisher import Publisher
from procwatch_agent.settings import AgentSettings
from procwatch_agent.urgent import UrgentSamples
from procwatch_contracts import subjects
from procwatch_contracts.messages import (
    MAX_PROCESSES_PER_MESSAGE,
    AgentSample,
    WatchListReply,
    WatchListRequest,
)

log = logging.getLogger("procwatch.agent")

try:
    AGENT_VERSION = version("procwatch-agent")
except PackageNotFoundError:  # pragma: no cover - running from a source tree without metadata
    AGENT_VERSION = "0.0.0"


def utc_now_ms() -> datetime:
    """Now in UTC, truncated to milliseconds (the `Nats-Msg-Id` resolution)."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


def build_sample(server_id: int, sampled_at: datetime, readings) -> AgentSample:
    return AgentSample(v=1, server_id=server_id, agent_version=AGENT_VERSION, sampled_at=sampled_at,
                       processes=list(readings)[:MAX_PROCESSES_PER_MESSAGE])


class Agent:
    def __init__(self, settings: AgentSettings, collector: Collector | None = None) -> None:
        if settings.server_id is None:
            raise ValueError("a server id is required (--server-id or PROCWATCH_AGENT_SERVER_ID)")
        self.settings = settings
        self.server_id: int = settings.server_id
        self.names: list[str] = list(dict.fromkeys(settings.names))
        self.interval: float = settings.interval or settings.default_interval
        self.collector = collector or Collector()
        self.nc = NatsClient()
        self.publisher = Publisher(self.nc, settings.key.get_secret_value(), settings.buffer_ticks,
                                   settings.publish_timeout)
        self.watch_list_received = False
        self._connect_task: asyncio.Task | None = None
        self._connected = asyncio.Event()
        self._wake = asyncio.Event()
        self._refresh_wanted = False
        self._stopping = False
        self._changes_seen = 0
        self._last_sampled_at: datetime | None = None
        self.urgent = UrgentSamples(settings.urgent_coalesce_ms / 1000, settings.urgent_max_per_minute,
                                    settings.respawn_recheck)
        # Books only until run() installs the waking kind (pidfd or poll): tick() alone needs no loop.
        self.exits: ExitWatch = ExitWatch(self._on_exit)

    # --- broker connection ------------------------------------------------

    @property
    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.settings.key.get_secret_value()}"}

    def start_connecting(self) -> None:
        """Connect in the background, retrying forever; returns at once."""
        if self._connect_task is None:
            self._connect_task = asyncio.create_task(self._connect(), name="procwatch-agent-connect")

    async def wait_connected(self, timeout: float) -> bool:
        try:
            await asyncio.wait_for(self._connected.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def _connect(self) -> None:
        async def on_error(exc: Exception) -> None:
            log.debug("broker connection error", extra={"error": type(exc).__name__, "detail": str(exc)})

        async def on_disconnected() -> None:
            if not self._stopping:
                log.warning("broker disconnected; sampling continues into the buffer")

        async def on_reconnected() -> None:
            log.info("broker reconnected", extra={"buffered": len(self.publisher.buffer)})
            self._wake_to_refresh()  # flush the buffer and refresh the list without waiting a whole tick

        await self.nc.connect(
            servers=self.settings.nats_servers,
            name=f"procwatch-agent-{self.server_id}",
            allow_reconnect=True,
            max_reconnect_attempts=-1,
            reconnect_time_wait=2,
            connect_timeout=2,
            # A per-server inbox prefix lets the broker allow replies to this agent only
            # (deploy/nats: subscribe `_INBOX.agent.<id>.>`, not all of `_INBOX.>`).
            inbox_prefix=f"_INBOX.agent.{self.server_id}",
            error_cb=on_error,
            disconnected_cb=on_disconnected,
            reconnected_cb=on_reconnected,
        )
        await self.nc.subscribe(subjects.processes_changed(self.server_id), cb=self._on_process_changed)
        self._connected.set()
        log.info("broker connected", extra={"server_id": self.server_id})
        self._wake_to_refresh()

    async def _on_process_changed(self, msg) -> None:
        self._changes_seen += 1
        log.info("watched processes changed; refreshing the watch list", extra={"subject": msg.subject})
        self._wake_to_refresh()

    def _wake_to_refresh(self) -> None:
        self._refresh_wanted = True
        self._wake.set()

    def _on_exit(self, names: tuple[str, ...]) -> None:
        self.urgent.note_exit(names, asyncio.get_running_loop().time())
        self._wake.set()

    # --- one tick ---------------------------------------------------------

    async def refresh_watch_list(self) -> bool:
        """Ask for the watch list; on any failure keep the last known one."""
        if not self.nc.is_connected:
            return False
        request = WatchListRequest(agent_version=AGENT_VERSION).model_dump_json().encode()
        try:
            msg = await self.nc.request(subjects.agent_config(self.server_id), request,
                                        timeout=self.settings.config_timeout, headers=self._auth_headers)
            reply = WatchListReply.model_validate_json(msg.data)
        except (nats.errors.Error, TimeoutError, OSError) as exc:
            log.warning("watch-list request failed; keeping the last list",
                        extra={"error": type(exc).__name__, "names": len(self.names)})
            return False
        except ValidationError as exc:
            log.warning("watch-list reply malformed; keeping the last list", extra={"errors": exc.error_count()})
            return False
        if reply.error:
            log.warning("watch-list request refused; keeping the last list", extra={"error": reply.error})
            return False
        if reply.server_id != self.server_id:
            log.warning("watch-list reply for another server ignored", extra={"reply_server_id": reply.server_id})
            return False
        names = list(dict.fromkeys(reply.process_names))
        interval = self.settings.interval or max(reply.interval_seconds, self.settings.min_interval)
        if names != self.names or interval != self.interval:
            log.info("watch list updated", extra={"names": len(names), "interval_s": interval})
        self.names, self.interval = names, interval
        self.watch_list_received = True
        return True

    def next_sample_time(self) -> datetime:
        """Now, to the millisecond, and later than the previous sample: the message id is
        `<server_id>-<sampled_at ms>`, so two samples in one millisecond would be one."""
        at = utc_now_ms()
        if self._last_sampled_at is not None and at <= self._last_sampled_at:
            at = self._last_sampled_at + timedelta(milliseconds=1)
        self._last_sampled_at = at
        return at

    def sample(self) -> AgentSample:
        """A regular tick's sample: every watched name; the matched PIDs are watched for exit."""
        readings = self.collector.collect(self.names)
        self.exits.update(self.collector.matched)
        self.urgent.covered_by_tick()
        return build_sample(self.server_id, self.next_sample_time(), readings)

    def urgent_sample(self, names: tuple[str, ...]) -> AgentSample:
        """An out-of-cadence sample of `names` (still watched ones only), scanned now (a peek:
        the CPU window is left to the ticks). The scan also finds an instance started since the
        last tick, so starting a new instance before stopping the old one is never a false down."""
        names = tuple(n for n in names if n in self.names)
        readings = self.collector.collect(names, peek=True) if names else []
        self.exits.update(self.collector.matched, frozenset(names))
        return build_sample(self.server_id, self.next_sample_time(), readings)

    async def tick(self) -> AgentSample:
        await self.refresh_watch_list()
        sample = self.sample()
        await self.publisher.publish(sample)
        return sample

    async def send_urgent(self, now: float) -> AgentSample | None:
        """Publish the out-of-cadence sample that is due, if any."""
        names = self.urgent.take(now)
        if not names:
            return None
        sample = self.urgent_sample(names)
        if not sample.processes:
            return None
        await self.publisher.publish(sample)
        self.urgent.sent(tuple(p.process_name for p in sample.processes),
                         tuple(p.count for p in sample.processes), now)
        log.info("watched process exited; out-of-cadence sample sent",
                 extra={"names": len(sample.processes), "sent_total": self.urgent.sent_total})
        return sample

    def recheck(self, now: float) -> None:
        """The respawn recheck: counts changed since the out-of-cadence sample become news."""
        names = self.urgent.recheck_due(now)
        if names:
            counts = tuple(r.count for r in self.collector.collect(names, peek=True))
            self.exits.update(self.collector.matched, frozenset(names))
            self.urgent.recheck_done(counts, now)

    # --- the loop ---------------------------------------------------------

    def stop(self) -> None:
        self._stopping = True
        self._wake.set()

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.exits = make_exit_watch(self.settings.exit_watch, self._on_exit, loop, self.settings.exit_poll_interval)
        self.start_connecting()
        log.info("agent started", extra={"server_id": self.server_id,
                                         "nats_url": ",".join(map(_redact, self.settings.nats_servers)),
                                         "buffer_ticks": self.settings.buffer_ticks, "exit_watch": self.exits.mode})
        next_tick = loop.time()
        try:
            while not self._stopping:
                now = loop.time()
                if now >= next_tick:
                    await self.tick()
                    next_tick += self.interval
                    if next_tick <= loop.time():  # a slow tick: skip the missed slots
                        next_tick = loop.time() + self.interval
                    continue
                urgent_at = self.urgent.due_at(now)
                if urgent_at is not None and now >= urgent_at:
                    await self.send_urgent(now)
                    continue
                recheck_at = self.urgent.recheck_at()
                if recheck_at is not None and now >= recheck_at:
                    self.recheck(now)
                    continue
                wake_at = min(t for t in (next_tick, urgent_at, recheck_at) if t is not None)
                try:
                    await asyncio.wait_for(self._wake.wait(), wake_at - now)
                except TimeoutError:
                    continue
                self._wake.clear()
                if self._stopping:
                    break
                if self._refresh_wanted:
                    # Connected, reconnected or the watch list changed: act now, not next tick.
                    self._refresh_wanted = False
                    await self.refresh_watch_list()
                    await self.publisher.flush()
        finally:
            await self.close()

    async def close(self) -> None:
        self._stopping = True
        self.exits.close()
        if self.nc.is_connected:
            await self.publisher.flush()
        if self._connect_task is not None and not self._connect_task.done():
            self._connect_task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._connect_task
        with contextlib.suppress(Exception):
            await self.nc.close()
        if len(self.publisher.buffer):
            log.warning("agent stopped with unsent samples", extra={"buffered": len(self.publisher.buffer)})
        if self._connect_task is not None:
            log.info("agent stopped", extra={"published": self.publisher.published, "dropped": self.publisher.dropped})


def _redact(url: str) -> str:
    """A NATS URL without its password (agents may carry credentials in it)."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return parts._replace(netloc=netloc).geturl()
