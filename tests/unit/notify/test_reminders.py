"""A reminder as the notifier builds it: its own id (so its own webhook-id), the episode it reminds of,
its number, and a title that says so."""

from __future__ import annotations

import pytest

from procwatch_notifier.reminders import reminder_event, reminder_id
from procwatch_notify.render import describe, render

pytestmark = pytest.mark.unit


def test_reminder_keeps_the_episode_and_gets_its_own_id(make_alert):
    first = make_alert(value=0.0)
    second = reminder_event(first, first.id, 1)
    third = reminder_event(second, first.id, 2)
    assert (second.id, third.id) == (f"{first.id}.reminder-1", f"{first.id}.reminder-2") == (
        reminder_id(first.id, 1), reminder_id(first.id, 2))
    assert (third.episode_id, third.reminder, third.occurred_at, third.state) == (first.id, 2, first.occurred_at,
                                                                                  "firing")
    assert first.reminder == 0 and first.episode_id is None


def test_after_maintenance_the_reminder_drops_the_reason(make_alert):
    ended = make_alert().model_copy(update={"reason": "maintenance_ended", "episode_id": "alert-1-first"})
    assert "still firing after maintenance" in describe(ended).title
    reminder = reminder_event(ended, "alert-1-first", 1)
    assert reminder.reason is None and reminder.id == "alert-1-first.reminder-1"


def test_titles_say_reminder(make_alert):
    first = make_alert()
    assert "[reminder" not in describe(first).title
    again = reminder_event(first, first.id, 3)
    assert describe(again).title.startswith("[reminder 3] ")
    assert b"[reminder 3]" in render("slack", "standard", again).body
