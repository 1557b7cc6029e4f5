"""Helpers for the fault and lifecycle suites: services as real subprocesses (so signals and kill -9 are real)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


class ServiceProcess:
    """`procwatch <service>` as a child process, its output in a log file."""

    def __init__(self, service: str, env: dict[str, str], log_path: Path):
        self.service, self.env, self.log_path = service, env, log_path
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> ServiceProcess:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        env = {**os.environ, **self.env}
        self.log = open(self.log_path, "ab")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "procwatch.cli", self.service], env=env, cwd=REPO,
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout)
        finally:
            self.log.close()

    def kill9(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGKILL)
            self.wait(10)

    def stop(self, timeout: float = 20) -> int | None:
        if not self.alive():
            return self.proc.returncode if self.proc else None
        self.signal(signal.SIGTERM)
        try:
            return self.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill9()
            return None

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
