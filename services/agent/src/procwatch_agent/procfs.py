"""Linux's process table read straight from /proc: only what the agent needs, nothing per tick it can skip.

psutil builds an object per process and reads several files for each; the agent
needs one small file (`comm`) per process to find the watched ones, then one
(`stat`) per *matched* process. `parse_stat` is pure and unit-tested; the rest
are thin file reads. Every read may fail with `ProcessGone` (the process exited
between the directory listing and the read) — callers skip that PID.

Numbers follow psutil's (and `ps`'s) definitions so figures did not move when the
agent stopped using psutil: create time = boot time (`btime` in /proc/stat) +
`starttime` / CLK_TCK; CPU seconds = (utime + stime) / CLK_TCK; RSS = the `rss`
field (pages) × page size.
"""

from __future__ import annotations

import os
from typing import NamedTuple

PROC = "/proc"
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


class ProcessGone(Exception):
    """The PID no longer exists (or is not readable): skip it."""


class PidStat(NamedTuple):
    """The fields of /proc/<pid>/stat the agent uses."""

    state: str  # "R", "S", "Z" (zombie: exited, not reaped), ...
    cpu_ticks: int  # utime + stime, in CLK_TCK units
    start_ticks: int  # since boot, in CLK_TCK units: with the PID, it names one process
    rss_pages: int


def parse_stat(data: bytes) -> PidStat:
    """/proc/<pid>/stat: `pid (comm) state ...`; comm may hold spaces and parentheses,
    so the fields are counted from the last ')'."""
    rest = data[data.rindex(b")") + 2:].split()
    # rest[0] is field 3 (state); utime/stime are fields 14/15, starttime 22, rss 24.
    return PidStat(rest[0].decode(), int(rest[11]) + int(rest[12]), int(rest[19]), int(rest[21]))


def boot_time() -> float:
    with open(f"{PROC}/stat", "rb") as f:
        for line in f:
            if line.startswith(b"btime "):
                return float(line.split()[1])
    raise RuntimeError("no btime in /proc/stat")


def total_memory_bytes() -> int:
    return PAGE_SIZE * os.sysconf("SC_PHYS_PAGES")


def available() -> bool:
    """Is there a Linux /proc to read (the agent's only way of seeing processes)?"""
    return os.path.exists(f"{PROC}/self/stat")


def pids() -> list[int]:
    return [int(name) for name in os.listdir(PROC) if name.isdigit()]


def _read(path: str) -> bytes:
    # os.open/os.read: about half the CPU of open() per file, and a scan reads one per process.
    try:
        fd = os.open(path, os.O_RDONLY)
    except (FileNotFoundError, ProcessLookupError, PermissionError) as exc:
        raise ProcessGone(path) from exc
    try:
        return os.read(fd, 4096)
    except ProcessLookupError as exc:  # ESRCH: the process went between open and read
        raise ProcessGone(path) from exc
    finally:
        os.close(fd)


def comm(pid: int) -> str:
    return _read(f"{PROC}/{pid}/comm").rstrip(b"\n").decode(errors="surrogateescape")


def stat(pid: int) -> PidStat:
    data = _read(f"{PROC}/{pid}/stat")
    if not data:
        raise ProcessGone(pid)
    return parse_stat(data)


def cmdline0(pid: int) -> str | None:
    """The first word of the command line (None when unreadable or empty: kernel threads)."""
    try:
        data = _read(f"{PROC}/{pid}/cmdline")
    except ProcessGone:
        return None
    first = data.split(b"\0", 1)[0]
    return first.decode(errors="surrogateescape") or None


def exe(pid: int) -> str | None:
    """The executable's path (None when not allowed: another user's process without root)."""
    try:
        return os.readlink(f"{PROC}/{pid}/exe")
    except OSError:
        return None
