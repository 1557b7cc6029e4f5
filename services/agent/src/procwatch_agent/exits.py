"""Learn that a watched PID exited when it happens, not at the next tick.

After every scan the runner hands the matched PIDs to an `ExitWatch`; when one of
them exits, the watch calls `on_exit(names)` with the watched names that PID
counted for. Three ways, chosen by `PROCWATCH_AGENT_EXIT_WATCH`:

- `pidfd` (Linux ≥ 5.3, Python ≥ 3.9; no privilege needed): one `os.pidfd_open`
  descriptor per matched PID, registered with the event loop (`add_reader`). The
  kernel makes it readable the moment the process exits (zombie or reaped), so
  the loop wakes at once and costs nothing while nothing dies.
- `poll`: every `PROCWATCH_AGENT_EXIT_POLL_INTERVAL` seconds, re-read
  /proc/<pid>/stat of the watched PIDs only (gone, zombie, or a new start time
  under the same PID = exited). For kernels without pidfd.
- `tick`: nothing between ticks; a death is seen by the next regular scan.

`auto` (the default) takes `pidfd` when the kernel has it, else `poll`.

A PID is identified by (pid, start time): when the descriptor is opened after the
scan, the start time is checked again, so a PID that died and was reused in
between counts as the exit it was and is never watched by mistake.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Callable, Mapping

from procwatch_agent import procfs
from procwatch_agent.collector import Matched

log = logging.getLogger("procwatch.agent.exits")

OnExit = Callable[[tuple[str, ...]], None]
MODES = ("auto", "pidfd", "poll", "tick")


class ExitWatch:
    """The watched PIDs and the names each counts for; subclasses add the waking mechanism.
    This base class alone is the `tick` mode: it keeps the books and never wakes anyone."""

    mode = "tick"

    def __init__(self, on_exit: OnExit) -> None:
        self._on_exit = on_exit
        self._watched: dict[int, Matched] = {}

    def __len__(self) -> int:
        return len(self._watched)

    def update(self, matched: Mapping[int, Matched], scanned_names: frozenset[str] | None = None) -> None:
        """Bring the watch in line with a scan. `scanned_names` None: a scan of every watched
        name (PIDs not in `matched` are no longer watched); else only PIDs counting for
        one of those names are reconsidered."""
        for pid, known in list(self._watched.items()):
            now = matched.get(pid)
            if now is not None and now.start_ticks == known.start_ticks:
                if scanned_names is None:
                    self._watched[pid] = now
                else:
                    untouched = tuple(n for n in known.names if n not in scanned_names)
                    self._watched[pid] = Matched(known.start_ticks, tuple(dict.fromkeys(untouched + now.names)))
                continue
            if scanned_names is None or any(n in scanned_names for n in known.names):
                del self._watched[pid]
                self._forget(pid)
        for pid, m in matched.items():
            if pid not in self._watched:
                self._watched[pid] = m
                self._watch(pid, m)

    def exited(self, pid: int) -> None:
        """The PID is gone: stop watching it and report its names."""
        known = self._watched.pop(pid, None)
        self._forget(pid)
        if known is not None:
            self._on_exit(known.names)

    def close(self) -> None:
        for pid in list(self._watched):
            self._forget(pid)
        self._watched.clear()

    def _watch(self, pid: int, m: Matched) -> None:
        pass

    def _forget(self, pid: int) -> None:
        pass

    def _still_same(self, pid: int, m: Matched) -> bool:
        try:
            st = procfs.stat(pid)
        except procfs.ProcessGone:
            return False
        return st.state != "Z" and st.start_ticks == m.start_ticks


class PidfdExitWatch(ExitWatch):
    mode = "pidfd"

    def __init__(self, on_exit: OnExit, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(on_exit)
        self._loop = loop
        self._fds: dict[int, int] = {}
        self._short_of_fds = False
        raise_fd_limit()

    def _watch(self, pid: int, m: Matched) -> None:
        try:
            fd = os.pidfd_open(pid)
        except ProcessLookupError:
            self._loop.call_soon(self.exited, pid)  # gone since the scan
            return
        except OSError as exc:  # out of descriptors: the next tick still sees the exit
            if not self._short_of_fds:  # once, not once per PID
                self._short_of_fds = True
                log.warning("cannot watch every PID for exit; the others' deaths wait for the tick",
                            extra={"watched": len(self._fds), "error": type(exc).__name__})
            return
        if not self._still_same(pid, m):
            os.close(fd)
            self._loop.call_soon(self.exited, pid)
            return
        self._fds[pid] = fd
        self._loop.add_reader(fd, self.exited, pid)

    def _forget(self, pid: int) -> None:
        fd = self._fds.pop(pid, None)
        if fd is not None:
            self._loop.remove_reader(fd)
            os.close(fd)


class PollingExitWatch(ExitWatch):
    mode = "poll"

    def __init__(self, on_exit: OnExit, loop: asyncio.AbstractEventLoop, interval_s: float) -> None:
        super().__init__(on_exit)
        self._loop = loop
        self._interval = interval_s
        self._task: asyncio.Task | None = None

    def _watch(self, pid: int, m: Matched) -> None:
        if self._task is None:
            self._task = self._loop.create_task(self._poll(), name="procwatch-agent-exit-poll")

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            for pid, m in list(self._watched.items()):
                if not self._still_same(pid, m):
                    self.exited(pid)

    def close(self) -> None:
        super().close()
        if self._task is not None:
            self._task.cancel()
            self._task = None


def raise_fd_limit() -> None:
    """One descriptor per watched PID: take the soft limit up to the hard one (no privilege needed)."""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ValueError, OSError):
            pass


def pidfd_supported() -> bool:
    if not hasattr(os, "pidfd_open"):
        return False
    try:
        os.close(os.pidfd_open(os.getpid()))
    except OSError:  # ENOSYS: a kernel older than 5.3
        return False
    return True


def make_exit_watch(mode: str, on_exit: OnExit, loop: asyncio.AbstractEventLoop,
                    poll_interval_s: float) -> ExitWatch:
    if mode not in MODES:
        raise ValueError(f"exit watch mode {mode!r} not one of {MODES}")
    if mode == "auto":
        mode = "pidfd" if pidfd_supported() else "poll"
    if mode == "pidfd" and not pidfd_supported():
        log.warning("pidfd_open is not available here (Linux >= 5.3 needed); polling instead")
        mode = "poll"
    if mode == "pidfd":
        return PidfdExitWatch(on_exit, loop)
    if mode == "poll":
        return PollingExitWatch(on_exit, loop, poll_interval_s)
    return ExitWatch(on_exit)
