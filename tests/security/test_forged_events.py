"""A forged `samples.recorded.<server_id>` event (anyone who may publish on the broker) can
neither put its own text into alerts nor alert on another tenant's process (issue 14, finding 2).

The alerter takes the hostname and the process name from the database, never from the event,
and ignores samples whose process does not belong to the event's server and user. Real NATS
and PostgreSQL; the alerter fixtures of tests/integration/alerter are reused."""

from __future__ import annotations

import pytest

from tests.integration.alerter.conftest import world  # noqa: F401  (a fixture; `js` is session-wide)
from tests.support.factories import make_user

pytestmark = pytest.mark.integration


async def test_alerts_carry_the_database_names_not_the_events(world):
    proc = world.process("nginx")
    await world.start_alerter()
    sample = world.sample(proc, 1, count=0).model_copy(update={"process_name": "evil$(reboot)"})
    forged = world.event(sample).model_copy(update={"hostname": "attacker.example<script>"})
    await world.publish(forged)
    [(alert, _)] = await world.alerts(1)
    assert (alert.type, alert.state) == ("process_down", "firing")
    assert alert.server.hostname == world.server.hostname != "attacker.example<script>"
    assert alert.process.process_name == "nginx"


async def test_a_sample_naming_another_users_process_raises_no_alert(world):
    """The event names the victim's server (whose process it is) but another user: ignored.
    A sentinel (a real down of a second process, after it in the stream) shows the forged
    event was handled: any alert it caused would have come first."""
    victim = world.process("postgres")
    sentinel = world.process("redis")
    attacker = make_user(world.database_url)
    await world.start_alerter()
    forged = world.event(world.sample(victim, 1, count=0)).model_copy(update={"user_id": attacker.id})
    await world.publish(forged)
    await world.send(sentinel, 2, count=0)
    [(alert, _)] = await world.alerts(1)
    assert (alert.process.id, alert.type) == (sentinel.id, "process_down")
    assert world.history(victim.id) == []
    assert world.row(victim.id)["alerted_state"] is None
