"""Read the process table (psutil) and sum the matching PIDs per watched name.

The arithmetic is pure (`cpu_percent`, `aggregate`) and tested without psutil;
`Collector` is the thin psutil layer around it.

- CPU: per-core percent like `top` — CPU seconds (user + system) used since the
  previous tick divided by the wall time between them, times 100, so a busy
  multi-threaded process may exceed 100. A PID seen for the first time has no
  previous reading and contributes 0 on that tick.
- Memory: resident set size / total physical memory * 100, summed over PIDs
  (shared pages count once per PID, as `ps` does).
- Oldest start: the smallest create time among the PIDs, as int unix seconds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import psutil

from procwatch_agent.matcher import WatchIndex
from procwatch_contracts.messages import ProcessReading

log = logging.getLogger("procwatch.agent.collector")


@dataclass(frozen=True)
class PidReading:
    pid: int
    cpu_pct: float
    rss_bytes: int
    create_time: float


def cpu_percent(prev_cpu_s: float, prev_wall: float, cpu_s: float, wall: float) -> float:
    """Per-core CPU percent between two readings of one PID (0 when undefined)."""
    elapsed = wall - prev_wall
    used = cpu_s - prev_cpu_s
    if elapsed <= 0 or used <= 0:
        return 0.0
    return used / elapsed * 100.0


def aggregate(process_name: str, readings: Sequence[PidReading], total_memory_bytes: int) -> ProcessReading:
    """One watched name on one tick: all matching PIDs summed."""
    if not readings:
        return ProcessReading(process_name=process_name, count=0, cpu_pct=0.0, memory_pct=0.0,
                              oldest_start_unix=None)
    cpu = sum(max(r.cpu_pct, 0.0) for r in readings)
    rss = sum(max(r.rss_bytes, 0) for r in readings)
    memory = rss / total_memory_bytes * 100.0 if total_memory_bytes > 0 else 0.0
    return ProcessReading(
        process_name=process_name,
        count=len(readings),
        cpu_pct=round(cpu, 2),
        memory_pct=round(memory, 2),
        oldest_start_unix=max(int(min(r.create_time for r in readings)), 0),
    )


class Collector:
    """Reads matching PIDs; remembers each PID's CPU time between ticks for the delta."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        # pid -> (create_time, cpu seconds, clock) of the previous reading; create_time
        # tells a reused PID from the process we saw before.
        self._previous: dict[int, tuple[float, float, float]] = {}

    def collect(self, names: Iterable[str]) -> list[ProcessReading]:
        index = WatchIndex.of(names)
        by_name = self.read(index)
        total = psutil.virtual_memory().total
        return [aggregate(name, by_name.get(name, []), total) for name in index.names]

    def read(self, index: WatchIndex) -> dict[str, list[PidReading]]:
        found: dict[str, list[PidReading]] = {}
        seen: dict[int, tuple[float, float, float]] = {}
        if not index.names:
            self._previous = {}
            return found
        for proc in psutil.process_iter(["name"]):
            comm = proc.info.get("name")
            if not comm or not index.candidates(comm):
                continue
            try:
                reading, matched, state = self._read_one(proc, comm, index)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue  # exited while we looked: it is simply not there this tick
            except psutil.AccessDenied:
                log.debug("process not readable", extra={"pid": proc.pid})
                continue
            if reading is None:
                continue
            seen[proc.pid] = state
            for name in matched:
                found.setdefault(name, []).append(reading)
        self._previous = seen
        return found

    def _read_one(
        self, proc: psutil.Process, comm: str, index: WatchIndex
    ) -> tuple[PidReading | None, list[str], tuple[float, float, float]]:
        with proc.oneshot():
            # A zombie has exited and only waits for its parent to reap it: it is not running.
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None, [], (0.0, 0.0, 0.0)
            cmdline0 = exe = None
            if index.needs_full_name(comm):
                cmdline = _or_none(proc.cmdline)
                cmdline0 = cmdline[0] if cmdline else None
                exe = _or_none(proc.exe)
            matched = index.match(comm, cmdline0, exe)
            if not matched:
                return None, [], (0.0, 0.0, 0.0)
            create_time = proc.create_time()
            times = _or_none(proc.cpu_times)
            memory = _or_none(proc.memory_info)
        now = self._clock()
        cpu_s = (times.user + times.system) if times is not None else 0.0
        cpu = 0.0
        previous = self._previous.get(proc.pid)
        if previous is not None and previous[0] == create_time and times is not None:
            cpu = cpu_percent(previous[1], previous[2], cpu_s, now)
        reading = PidReading(pid=proc.pid, cpu_pct=cpu, rss_bytes=memory.rss if memory is not None else 0,
                             create_time=create_time)
        return reading, matched, (create_time, cpu_s, now)


def _or_none(read):
    """A field we may not be allowed to read (another user's process): None, but the PID still counts."""
    try:
        return read()
    except psutil.AccessDenied:
        return None
