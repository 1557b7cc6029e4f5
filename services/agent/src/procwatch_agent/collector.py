"""Read the process table (/proc, `procfs`) and sum the matching PIDs per watched name.

The arithmetic is pure (`cpu_percent`, `aggregate`) and tested without /proc;
`Collector` is the thin reading layer around it. A scan reads one small file
(`comm`) per process and `stat` only for the processes whose comm can match.

- CPU: per-core percent like `top` — CPU seconds (user + system) used since the
  previous tick divided by the wall time between them, times 100, so a busy
  multi-threaded process may exceed 100. A PID seen for the first time has no
  previous reading and contributes 0 on that tick.
- Memory: resident set size / total physical memory * 100, summed over PIDs
  (shared pages count once per PID, as `ps` does).
- Oldest start: the smallest create time among the PIDs, as int unix seconds.

A *peek* (`collect(names, peek=True)`: the out-of-cadence samples sent after a
watched PID exits) reads count, memory and start times now but leaves the CPU
window alone: each PID reports the CPU percent measured at the last regular
tick (0 for a PID first seen), so CPU figures and CPU alerts keep the tick's
cadence and a window of a few milliseconds never produces a spike.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from procwatch_agent import procfs
from procwatch_agent.matcher import WatchIndex
from procwatch_contracts.messages import ProcessReading

log = logging.getLogger("procwatch.agent.collector")


@dataclass(frozen=True)
class PidReading:
    pid: int
    cpu_pct: float
    rss_bytes: int
    create_time: float


class Matched(NamedTuple):
    """A matched PID of the last scan: `start_ticks` tells it from a later process given the same PID."""

    start_ticks: int
    names: tuple[str, ...]


class _CpuMark(NamedTuple):
    start_ticks: int
    cpu_ticks: int
    at: float  # the collector's clock
    cpu_pct: float  # measured at that reading


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
    """Reads matching PIDs; remembers each PID's CPU time between ticks for the delta.

    `matched` holds the PIDs the last scan matched (pid -> `Matched`): the runner
    watches them for exit."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._boot_time = procfs.boot_time()
        self._total_memory = procfs.total_memory_bytes()
        self._previous: dict[int, _CpuMark] = {}
        self.matched: dict[int, Matched] = {}

    def collect(self, names: Iterable[str], *, peek: bool = False) -> list[ProcessReading]:
        index = WatchIndex.of(names)
        by_name = self.read(index, peek=peek)
        return [aggregate(name, by_name.get(name, []), self._total_memory) for name in index.names]

    def read(self, index: WatchIndex, *, peek: bool = False) -> dict[str, list[PidReading]]:
        found: dict[str, list[PidReading]] = {}
        matched: dict[int, Matched] = {}
        seen: dict[int, _CpuMark] = {}
        if index.names:
            now = self._clock()
            for pid in procfs.pids():
                try:
                    reading, names, mark = self._read_one(pid, index, now, peek)
                except procfs.ProcessGone:
                    continue  # exited while we looked: it is simply not there this time
                if reading is None:
                    continue
                matched[pid] = Matched(mark.start_ticks, names)
                seen[pid] = mark
                for name in names:
                    found.setdefault(name, []).append(reading)
        self.matched = matched
        if not peek:
            self._previous = seen
        return found

    def _read_one(self, pid: int, index: WatchIndex, now: float, peek: bool):
        comm = procfs.comm(pid)
        if not index.candidates(comm):
            return None, (), None
        st = procfs.stat(pid)
        # A zombie has exited and only waits for its parent to reap it: it is not running.
        if st.state == "Z":
            return None, (), None
        cmdline0 = exe = None
        if index.needs_full_name(comm):
            cmdline0, exe = procfs.cmdline0(pid), procfs.exe(pid)
        names = tuple(index.match(comm, cmdline0, exe))
        if not names:
            return None, (), None
        reading, mark = self._reading(pid, st, now, peek)
        return reading, names, mark

    def _reading(self, pid: int, st: procfs.PidStat, now: float, peek: bool) -> tuple[PidReading, _CpuMark]:
        previous = self._previous.get(pid)
        if previous is not None and previous.start_ticks != st.start_ticks:
            previous = None  # the PID was reused by another process
        if peek:
            cpu = previous.cpu_pct if previous is not None else 0.0
            mark = previous or _CpuMark(st.start_ticks, st.cpu_ticks, now, 0.0)
        else:
            cpu = 0.0
            if previous is not None:
                cpu = cpu_percent(previous.cpu_ticks / procfs.CLK_TCK, previous.at,
                                  st.cpu_ticks / procfs.CLK_TCK, now)
            mark = _CpuMark(st.start_ticks, st.cpu_ticks, now, cpu)
        reading = PidReading(pid=pid, cpu_pct=cpu, rss_bytes=st.rss_pages * procfs.PAGE_SIZE,
                             create_time=self._boot_time + st.start_ticks / procfs.CLK_TCK)
        return reading, mark
