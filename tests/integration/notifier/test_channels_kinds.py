"""Email through a real SMTP server (the mail catcher `procwatch up` runs, aiosmtpd), and chat
channels in a burst: a bounded number of messages, a digest, Slack's `text`, Discord's embeds."""

from __future__ import annotations

import email
import time
from email import policy

import orjson
import pytest

from procwatch.mailcatcher import MailCatcher
from tests.integration.notifier.conftest import body_of, insert_channel

pytestmark = pytest.mark.integration


async def test_email_through_smtp_lands_as_an_eml_file(notify_world, tmp_path):
    w = notify_world
    catcher = MailCatcher(tmp_path / "mail")
    smtp_url = catcher.start()
    try:
        channel_id = insert_channel(w.database_url, w.user.id, "email",
                                    orjson.dumps(["ops@example.test", "oncall@example.test"]).decode())
        await w.start(smtp_url=smtp_url, mail_from="alerts@procwatch.test")
        event = w.event(type_="process_memory_high", value=41.5, threshold=25.0, process_name="java")
        await w.publish(event)
        await w.until(lambda: list((tmp_path / "mail").glob("*.eml")), what="a mail file")
        (path,) = list((tmp_path / "mail").glob("*.eml"))
        message = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert message["From"] == "alerts@procwatch.test"
        assert message["To"] == "ops@example.test, oncall@example.test"
        assert message["Subject"] == f"[procwatch] java memory is above its threshold on {w.server.hostname}"
        assert message["X-Procwatch-Alert-Id"].strip() == event.id  # folded: a long header
        text = message.get_content()
        for fact in (w.server.hostname, "java", "value 41.5% against threshold 25%", "since 2026-12-01"):
            assert fact in text
        await w.until(lambda: w.deliveries(channel_id)[0]["status"] == "delivered")
    finally:
        catcher.stop()


async def test_email_without_smtp_server_is_retried_not_lost(notify_world):
    w = notify_world
    channel_id = insert_channel(w.database_url, w.user.id, "email", '["ops@example.test"]')
    await w.start(smtp_url="smtp://127.0.0.1:9")  # nothing listens there
    await w.publish(w.event())
    await w.until(lambda: w.deliveries(channel_id) and w.deliveries(channel_id)[0]["attempts"] >= 2)
    row = w.deliveries(channel_id)[0]
    assert row["status"] == "pending" and row["last_error"]


@pytest.mark.parametrize("kind", ["slack", "discord"])
async def test_a_burst_of_30_becomes_five_messages_and_a_digest(notify_world, kind):
    w = notify_world
    channel = w.chat(kind, f"/{kind}")
    await w.start()
    events = [w.event(process_id=i, process_name=f"worker-{i}") for i in range(30)]
    started = time.monotonic()
    await w.publish(*events)
    await w.until(lambda: len(w.deliveries(channel.id)) == 30 and
                  all(d["status"] == "delivered" for d in w.deliveries(channel.id)), timeout=30,
                  what="all 30 delivered")
    messages = [body_of(r) for r in w.receiver.at(f"/{kind}")]
    assert 2 <= len(messages) <= 7, len(messages)
    times = [r.at for r in w.receiver.at(f"/{kind}")]
    gap = 1.0 if kind == "slack" else 2.0
    assert all(b - a >= gap * 0.95 for a, b in zip(times, times[1:]))
    if kind == "slack":
        assert all(m["text"] for m in messages)
        everything = " ".join(m["text"] + orjson.dumps(m["blocks"]).decode() for m in messages)
    else:
        assert all(len(m["embeds"]) <= 10 for m in messages)
        everything = " ".join(e.get("description", "") + e["title"] for m in messages for e in m["embeds"])
    for i in range(30):
        assert f"worker-{i} is down" in everything
    assert "alerts on" in everything  # a digest went out
    assert time.monotonic() - started < 30


async def test_the_burst_state_carries_over_to_the_next_replica(notify_world):
    """Replica A sends 3 messages of a Discord burst and stops; replica B picks the channel up
    paced from A's last message and 3 messages into the burst: 2 more single messages, then the
    digest (a replica starting afresh would have sent 5 singles at once)."""
    w = notify_world
    channel = w.chat("discord", "/discord-replicas")
    first = await w.start()
    await w.publish(*[w.event(process_id=i, process_name=f"worker-{i}") for i in range(3)])
    await w.until(lambda: sum(d["status"] == "delivered" for d in w.deliveries(channel.id)) == 3, timeout=20,
                  what="replica A's 3 messages")
    await first.stop()
    await w.start()
    await w.publish(*[w.event(process_id=i, process_name=f"worker-{i}") for i in range(3, 8)])
    await w.until(lambda: len(w.deliveries(channel.id)) == 8 and
                  all(d["status"] == "delivered" for d in w.deliveries(channel.id)), timeout=30,
                  what="all 8 delivered")
    received = w.receiver.at("/discord-replicas")
    embeds = [len(body_of(r)["embeds"]) for r in received]
    assert len(received) == 6, embeds  # 3 by A, 2 by B one by one, then B's digest of the other 3
    assert "alerts on" in orjson.dumps(body_of(received[-1])).decode()
    times = [r.at for r in received]
    assert all(b - a >= 2.0 * 0.95 for a, b in zip(times, times[1:])), times
