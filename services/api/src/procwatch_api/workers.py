"""Several API worker processes, each listening on its own SO_REUSEPORT socket on the same host:port.

uvicorn's `workers=` has every worker accept from one shared socket: a burst of keep-alive
connections lands unevenly (32/0 … 17/15 seen with wrk's 32), and the busier worker sets the p99.
With one socket per worker, Linux hashes each new connection onto one of the sockets.

The parent only supervises: it restarts a worker that dies (with a backoff), forwards SIGTERM /
SIGINT as SIGTERM to every worker, and exits 0 once they are gone.

Metrics: a scrape of GET /metrics reaches one worker (the kernel picks), so the workers share
their metrics through prometheus_client's multiprocess mode: the parent points
PROMETHEUS_MULTIPROC_DIR at an empty directory before it spawns them (a fresh temporary one, or
the operator's, emptied), every worker writes its values there, and any worker's /metrics sums
them all (procwatch_runtime.metrics.render). A dead worker's files stay (its counts still
count); `mark_process_dead` drops its live gauges.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import os
import shutil
import signal
import socket
import sys
import tempfile
import time
from pathlib import Path
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

import uvicorn

from procwatch_runtime.metrics import MULTIPROC_DIR_ENV

log = logging.getLogger("procwatch.api.workers")

APP = "procwatch_api.app:create_app"
# Worker exit codes the supervisor does not restart after: uvicorn's own for a failed lifespan
# startup, and ours for a port the worker could not bind.
STARTUP_FAILURE = 3
BIND_FAILED = 4
# Workers get this long to drain after SIGTERM, then SIGKILL: under docker's default 10 s grace.
STOP_TIMEOUT_S = 8.0
# A worker that served this long before dying is restarted at once; quicker deaths back off.
STABLE_AFTER_S = 10.0
FIRST_BACKOFF_S = 0.5
MAX_BACKOFF_S = 30.0
PR_SET_PDEATHSIG = 1


def reuseport_balances() -> bool:
    # BSD and macOS have SO_REUSEPORT too, but do not spread connections across the sockets.
    return sys.platform.startswith("linux") and hasattr(socket, "SO_REUSEPORT")


def exit_cleanly_on_signals(*signals: int) -> None:
    """After a graceful shutdown uvicorn re-raises the signal it caught with the previous handler
    restored: with the default one the process dies by SIGTERM (exit -15). This handler makes that
    (and a signal arriving before uvicorn installs its own) a normal exit 0."""

    def _exit(signum: int, frame: object) -> None:
        raise SystemExit(0)

    for sig in signals:
        signal.signal(sig, _exit)


def bind_socket(host: str, port: int, *, reuseport: bool) -> socket.socket:
    """A bound TCP socket, not yet listening: uvicorn listens once the app has started, so a
    (re)starting worker is handed no connections before it can answer them."""
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)[0]
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuseport:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


class _Server(uvicorn.Server):
    """uvicorn.Server that tells the supervisor once it listens."""

    def __init__(self, config: uvicorn.Config, ready: Connection) -> None:
        super().__init__(config)
        self._ready = ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            with contextlib.suppress(OSError):  # the supervisor is gone: PDEATHSIG stops this worker
                self._ready.send_bytes(b"1")
            self._ready.close()


def _die_with_parent(parent_pid: int) -> None:
    # A SIGKILLed supervisor must not leave workers holding the port (Linux only; best effort).
    with contextlib.suppress(Exception):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        raise SystemExit(0)


def _worker(index: int, host: str, port: int, uvicorn_kwargs: dict[str, Any], log_level: str,
            ready: Connection, parent_pid: int) -> None:
    """One worker process (spawned): bind its own socket, then run uvicorn on it. The app (and its
    settings, from the inherited environment) is built here, by the factory."""
    from procwatch_runtime.logs import configure_logging

    configure_logging(log_level)
    # A Ctrl-C reaches the workers too; both signals end a worker with 0, the parent decides the rest.
    exit_cleanly_on_signals(signal.SIGTERM, signal.SIGINT)
    _die_with_parent(parent_pid)
    try:
        sock = bind_socket(host, port, reuseport=True)
    except OSError as exc:
        log.error("worker could not bind its socket",
                  extra={"worker": index, "host": host, "port": port, "error": str(exc)})
        raise SystemExit(BIND_FAILED) from None
    _Server(uvicorn.Config(APP, factory=True, **uvicorn_kwargs), ready).run(sockets=[sock])


@dataclass
class _Slot:
    index: int
    process: multiprocessing.process.BaseProcess | None = None
    ready: Connection | None = None  # read end; None once the worker said it listens (or died)
    started_at: float = 0.0
    quick_deaths: int = 0
    restart_at: float | None = None


class Supervisor:
    def __init__(self, host: str, port: int, workers: int, uvicorn_kwargs: dict[str, Any], log_level: str):
        self.host, self.port, self.log_level = host, port, log_level
        self.uvicorn_kwargs = uvicorn_kwargs
        self.slots = [_Slot(i) for i in range(workers)]
        self.ctx = multiprocessing.get_context("spawn")
        self.stop_signal: int | None = None
        self.ever_served = False

    def run(self) -> int:
        """Until SIGTERM / SIGINT (-> 0) or a worker that cannot start (-> 1)."""
        try:
            # Fails here, before any worker, when anything holds the port (another instance of
            # this API included: a plain bind conflicts with SO_REUSEPORT sockets too).
            probe = bind_socket(self.host, self.port, reuseport=False)
        except OSError as exc:
            log.error("cannot bind the API port", extra={"host": self.host, "port": self.port, "error": str(exc)})
            return 1
        self.port = probe.getsockname()[1]  # port 0: every worker must bind the same one
        probe.close()

        wake_r, wake_w = os.pipe()
        os.set_blocking(wake_r, False)
        os.set_blocking(wake_w, False)
        old_wakeup = signal.set_wakeup_fd(wake_w)  # a signal interrupts wait() below
        old_handlers = {sig: signal.signal(sig, self._on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
        try:
            log.info("starting API workers", extra={"workers": len(self.slots), "host": self.host, "port": self.port})
            for slot in self.slots:
                self._start(slot)
            code = self._supervise(wake_r)
            self._stop_all()
            return code
        finally:
            signal.set_wakeup_fd(old_wakeup)
            for sig, handler in old_handlers.items():
                signal.signal(sig, handler)
            os.close(wake_r)
            os.close(wake_w)

    def _on_signal(self, signum: int, frame: object) -> None:
        self.stop_signal = signum

    def _supervise(self, wake_r: int) -> int:
        while self.stop_signal is None:
            pending = [s.restart_at for s in self.slots if s.restart_at is not None]
            timeout = max(0.0, min(pending) - time.monotonic()) if pending else None
            waitables: list[Any] = [wake_r]
            waitables += [s.process.sentinel for s in self.slots if s.process is not None]
            waitables += [s.ready for s in self.slots if s.ready is not None]
            wait(waitables, timeout)
            with contextlib.suppress(BlockingIOError):
                os.read(wake_r, 512)
            if self.stop_signal is not None:
                break
            for slot in self.slots:
                self._check_ready(slot)
                if slot.process is not None and slot.process.exitcode is not None:
                    fatal = self._reap(slot)
                    if fatal:
                        return 1
                if slot.restart_at is not None and time.monotonic() >= slot.restart_at:
                    self._start(slot)
        log.info("stopping API workers", extra={"signal": signal.Signals(self.stop_signal).name})
        return 0

    def _start(self, slot: _Slot) -> None:
        ready_r, ready_w = self.ctx.Pipe(duplex=False)
        slot.process = self.ctx.Process(
            target=_worker, name=f"procwatch-api-worker-{slot.index}",
            args=(slot.index, self.host, self.port, self.uvicorn_kwargs, self.log_level, ready_w, os.getpid()),
        )
        slot.process.start()
        ready_w.close()  # the worker holds the only write end: EOF on ready_r means it died
        slot.ready, slot.started_at, slot.restart_at = ready_r, time.monotonic(), None
        log.info("API worker started", extra={"worker": slot.index, "pid": slot.process.pid})

    def _check_ready(self, slot: _Slot) -> None:
        if slot.ready is None or not slot.ready.poll():
            return
        with contextlib.suppress(EOFError, OSError):
            slot.ready.recv_bytes()
            self.ever_served = True
            log.info("API worker listening", extra={"worker": slot.index, "pid": slot.process.pid})
        slot.ready.close()
        slot.ready = None

    def _reap(self, slot: _Slot) -> bool:
        """A worker exited on its own: schedule its restart; True if restarting is pointless."""
        process = slot.process
        process.join()
        code, pid = process.exitcode, process.pid
        slot.process = None
        if os.environ.get(MULTIPROC_DIR_ENV):
            from prometheus_client import multiprocess

            multiprocess.mark_process_dead(pid)
        if slot.ready is not None:
            slot.ready.close()
            slot.ready = None
        extra: dict[str, Any] = {"worker": slot.index, "pid": pid, "exit_code": code}
        if code < 0:
            extra["signal"] = signal.Signals(-code).name
        # A port taken under the worker, or an app that never started anywhere, will not get better.
        if code == BIND_FAILED or (code == STARTUP_FAILURE and not self.ever_served):
            log.error("API worker could not start; stopping", extra=extra)
            return True
        lived = time.monotonic() - slot.started_at
        if lived >= STABLE_AFTER_S:
            slot.quick_deaths = 0
            delay = 0.0
        else:
            slot.quick_deaths += 1
            delay = min(MAX_BACKOFF_S, FIRST_BACKOFF_S * 2 ** (slot.quick_deaths - 1))
        slot.restart_at = time.monotonic() + delay
        log.warning("API worker exited; restarting", extra={**extra, "lived_s": round(lived, 1), "restart_in_s": delay})
        return False

    def _stop_all(self) -> None:
        running = [s.process for s in self.slots if s.process is not None and s.process.exitcode is None]
        for process in running:
            process.terminate()  # SIGTERM: uvicorn finishes in-flight requests, then the app's lifespan
        deadline = time.monotonic() + STOP_TIMEOUT_S
        while (alive := [p for p in running if p.exitcode is None]) and time.monotonic() < deadline:
            wait([p.sentinel for p in alive], deadline - time.monotonic())
        for process in running:
            if process.exitcode is None:
                log.warning("API worker did not stop in time; killing",
                            extra={"pid": process.pid, "timeout_s": STOP_TIMEOUT_S})
                process.kill()
            process.join()
        for slot in self.slots:
            if slot.ready is not None:
                slot.ready.close()
                slot.ready = None
        log.info("API workers stopped", extra={"workers": len(running)})


@contextlib.contextmanager
def shared_metrics_dir(enabled: bool):
    """PROMETHEUS_MULTIPROC_DIR for the workers to come (see the module docstring): the operator's,
    emptied of a previous run's files, or a temporary one removed afterwards."""
    if not enabled:
        yield None
        return
    given = os.environ.get(MULTIPROC_DIR_ENV)
    if given:
        Path(given).mkdir(parents=True, exist_ok=True)
        for stale in Path(given).glob("*.db"):
            stale.unlink(missing_ok=True)
        yield given
        return
    path = tempfile.mkdtemp(prefix="procwatch-api-metrics-")
    os.environ[MULTIPROC_DIR_ENV] = path
    try:
        yield path
    finally:
        os.environ.pop(MULTIPROC_DIR_ENV, None)
        shutil.rmtree(path, ignore_errors=True)


def serve_workers(settings: Any, uvicorn_kwargs: dict[str, Any]) -> int:
    """Run settings.workers API processes on settings.host:port until SIGTERM / SIGINT; returns the
    process exit code. `uvicorn_kwargs`: uvicorn.Config arguments other than the app, host and port."""
    with shared_metrics_dir(settings.metrics_enabled):
        return _serve_workers(settings, uvicorn_kwargs)


def _serve_workers(settings: Any, uvicorn_kwargs: dict[str, Any]) -> int:
    if not reuseport_balances():
        log.info("SO_REUSEPORT does not balance here; uvicorn's workers share one socket",
                 extra={"platform": sys.platform, "workers": settings.workers})
        uvicorn.run(APP, factory=True, host=settings.host, port=settings.port, workers=settings.workers,
                    **uvicorn_kwargs)
        return 0
    return Supervisor(settings.host, settings.port, settings.workers, uvicorn_kwargs, settings.log_level).run()
