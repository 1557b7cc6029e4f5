"""ExitWatch's books (which PID counts for which names), without any waking mechanism."""

import pytest

from procwatch_agent.collector import Matched
from procwatch_agent.exits import ExitWatch, make_exit_watch

pytestmark = pytest.mark.unit


def test_full_scan_replaces_and_partial_scan_touches_only_its_names():
    reported = []
    w = ExitWatch(reported.append)
    w.update({1: Matched(100, ("a",)), 2: Matched(200, ("b",))})
    assert len(w) == 2
    # a partial scan of `a` that no longer finds PID 1 drops it, leaves PID 2 (`b`) alone
    w.update({}, frozenset({"a"}))
    assert len(w) == 1
    w.exited(2)
    assert reported == [("b",)]
    w.exited(2)  # reported once only
    assert reported == [("b",)]


def test_a_reused_pid_is_a_new_process():
    reported = []
    w = ExitWatch(reported.append)
    w.update({1: Matched(100, ("a",))})
    w.update({1: Matched(999, ("a",))})  # same PID, another start time
    w.exited(1)
    assert reported == [("a",)]
    assert len(w) == 0


def test_full_scan_forgets_pids_that_are_gone():
    w = ExitWatch(lambda names: None)
    w.update({1: Matched(100, ("a",))})
    w.update({})
    assert len(w) == 0


def test_unknown_mode_is_refused():
    with pytest.raises(ValueError):
        make_exit_watch("inotify", lambda n: None, None, 0.25)

