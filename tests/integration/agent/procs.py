"""Real, uniquely named processes for the agent tests (copies of /bin/sleep and /bin/sh)."""

from __future__ import annotations

import shutil
import subprocess
import uuid
from pathlib import Path


def unique_name(prefix: str = "pw", length: int = 15) -> str:
    return (prefix + uuid.uuid4().hex)[:length]


def program_copy(tmp: Path, name: str, source: str = "/bin/sleep") -> Path:
    path = tmp / name
    shutil.copy2(source, path)
    return path


def spawn(path: Path, *args: str) -> subprocess.Popen:
    return subprocess.Popen([str(path), *args], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def stop(*procs: subprocess.Popen) -> None:
    """Kill and reap (a reaped child leaves no zombie behind)."""
    for p in procs:
        if p.poll() is None:
            p.kill()
        p.wait(10)
