"""Real, uniquely named processes for the agent tests (copies of /bin/sleep and /bin/sh)."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from pathlib import Path


def unique_name(prefix: str = "pw", length: int = 15) -> str:
    return (prefix + uuid.uuid4().hex)[:length]


def program_copy(tmp: Path, name: str, source: str = "/bin/sleep") -> Path:
    path = tmp / name
    shutil.copy2(source, path)
    return path


def spawn(path: Path, *args: str, timeout: float = 5.0) -> subprocess.Popen:
    """Start the program and return once the kernel shows it under its own name: Popen may return
    (vfork) while the child is still in exec, its /proc entry still the parent's (`pytest`)."""
    proc = subprocess.Popen([str(path), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if Path(f"/proc/{proc.pid}/comm").read_text().strip() == path.name[:15]:
                return proc
        except OSError:
            return proc  # already gone: the caller's assertions tell
        time.sleep(0.005)
    raise AssertionError(f"{path.name} did not exec within {timeout} s")


def stop(*procs: subprocess.Popen) -> None:
    """Kill and reap (a reaped child leaves no zombie behind)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
