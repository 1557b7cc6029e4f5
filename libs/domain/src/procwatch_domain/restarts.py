"""The seed's restart rule, used by the API (`recent_restarts`) and the alerter alike."""

from __future__ import annotations

from collections.abc import Iterable


def is_restart(previous_oldest_start_unix: int | None, oldest_start_unix: int | None) -> bool:
    """A restart is counted when oldest_start_unix increases between consecutive samples.

    A sample with no running PID carries `null`; going down and coming back is a
    `down` episode, not a restart, because no two consecutive samples both have a
    start time that increased.
    """
    return (
        previous_oldest_start_unix is not None
        and oldest_start_unix is not None
        and oldest_start_unix > previous_oldest_start_unix
    )


def count_restarts(oldest_starts_in_time_order: Iterable[int | None]) -> int:
    restarts = 0
    previous: int | None = None
    first = True
    for current in oldest_starts_in_time_order:
        if not first and is_restart(previous, current):
            restarts += 1
        previous, first = current, False
    return restarts
