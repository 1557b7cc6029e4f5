"""Exact process-name matching, the way `pgrep -x NAME` does it (pure: no psutil).

Linux keeps a process's name (`comm`, what `pgrep` and `ps -o comm` show) in
16 bytes, so every name is cut to its first 15 characters. Two rules follow:

- A watched name of at most 15 characters matches a process whose comm equals
  it exactly (this is `pgrep -x`).
- A longer watched name can never equal a comm, so `pgrep -x` would never match
  it. Here it matches a process whose comm equals its first 15 characters AND
  whose full name — the basename of `cmdline[0]`, or else of the executable
  path — equals the whole watched name. The second check keeps
  `my-long-service-a` from matching `my-long-service-b`.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field

COMM_LEN = 15


def comm_of(name: str) -> str:
    """The comm the kernel would keep for a process named `name`."""
    return name[:COMM_LEN]


def full_names(cmdline0: str | None, exe: str | None) -> set[str]:
    """A process's untruncated name candidates: basename of cmdline[0] (also of its
    first word, for processes that rewrite their title, e.g. "nginx: worker") and
    basename of the executable."""
    names: set[str] = set()
    for path in (cmdline0, cmdline0.split(" ", 1)[0] if cmdline0 else None, exe):
        if path:
            names.add(os.path.basename(path.rstrip("/")))
    names.discard("")
    return names


def full_name_matches(watched: str, cmdline0: str | None, exe: str | None) -> bool:
    return watched in full_names(cmdline0, exe)


def matches(watched: str, comm: str, cmdline0: str | None = None, exe: str | None = None) -> bool:
    """Does a process with this comm (and cmdline[0] / exe) count as `watched`?"""
    comm = comm_of(comm)
    if len(watched) <= COMM_LEN:
        return comm == watched
    return comm == comm_of(watched) and full_name_matches(watched, cmdline0, exe)


@dataclass(frozen=True)
class WatchIndex:
    """The watched names, indexed by the comm they can match, for one pass over all processes."""

    names: tuple[str, ...]
    _by_comm: dict[str, tuple[str, ...]] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def of(cls, names: Iterable[str]) -> WatchIndex:
        unique = tuple(dict.fromkeys(n for n in names if n))
        by_comm: dict[str, list[str]] = {}
        for name in unique:
            by_comm.setdefault(comm_of(name), []).append(name)
        return cls(unique, {k: tuple(v) for k, v in by_comm.items()})

    def candidates(self, comm: str) -> tuple[str, ...]:
        """Watched names a process with this comm may match (cheap: no cmdline needed)."""
        return self._by_comm.get(comm_of(comm), ())

    def needs_full_name(self, comm: str) -> bool:
        return any(len(n) > COMM_LEN for n in self.candidates(comm))

    def match(self, comm: str, cmdline0: str | None = None, exe: str | None = None) -> list[str]:
        """Every watched name this process counts for."""
        return [n for n in self.candidates(comm) if matches(n, comm, cmdline0, exe)]
