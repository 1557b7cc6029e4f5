"""The live-updates hub as pure code: numbering, per-user rings and Last-Event-ID resume, fan-out to
the right user's clients only, bounded client queues, channel expiry, and the event payloads."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest

from procwatch_api.live import (
    ALERT, HEARTBEAT, RESET, SAMPLE, SERVER, LiveClient, LiveHub, alert_updates, parse_event_id, sample_updates,
)
from procwatch_contracts.fast import (
    ProcessAlertConfigView, RecordedSampleView, SampleRecordedView, encode_sample_recorded,
)
from procwatch_contracts.messages import AlertEvent, AlertServer
from procwatch_domain.rules import SETTINGS

pytestmark = pytest.mark.unit

AT = datetime(2026, 12, 1, 10, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def frames(chunk: bytes | None) -> list[dict]:
    """Parse text/event-stream frames into dicts of their fields."""
    out = []
    for block in (chunk or b"").decode().split("\n\n"):
        if block.strip():
            out.append(dict(line.split(": ", 1) for line in block.split("\n")))
    return out


def update(n: int) -> list[tuple[str, bytes]]:
    return [(SAMPLE, orjson.dumps({"n": n}))]


def test_events_are_numbered_by_boot_and_increasing_sequence():
    hub = LiveHub(boot="b00t")
    client = hub.connect(1, None)
    for n in range(3):
        hub.publish(1, update(n))
    got = frames(client.take())
    ids = [parse_event_id(f["id"]) for f in got]
    assert [boot for boot, _ in ids] == ["b00t"] * 3
    assert ids[0][1] < ids[1][1] < ids[2][1]
    assert [orjson.loads(f["data"])["n"] for f in got] == [0, 1, 2]
    assert all(f["event"] == SAMPLE for f in got)


def test_fan_out_reaches_every_client_of_the_user_and_no_other_user():
    hub = LiveHub()
    a1, a2, b = hub.connect(1, None), hub.connect(1, None), hub.connect(2, None)
    hub.publish(1, update(7))
    assert len(frames(a1.take())) == 1 and len(frames(a2.take())) == 1
    assert b.take() == b""


def test_resume_delivers_exactly_the_missed_events():
    hub = LiveHub(boot="x")
    first = hub.connect(1, None)
    for n in range(5):
        hub.publish(1, update(n))
    last_seen = frames(first.take())[1]["id"]  # the browser saw two, then lost the connection
    hub.disconnect(1, first)
    again = hub.connect(1, last_seen)
    assert [orjson.loads(f["data"])["n"] for f in frames(again.take())] == [2, 3, 4]


def test_resume_at_the_head_delivers_nothing():
    hub = LiveHub(boot="x")
    c = hub.connect(1, None)
    hub.publish(1, update(0))
    head = frames(c.take())[-1]["id"]
    assert hub.connect(1, head).take() == b""


@pytest.mark.parametrize("last_id", ["other-1", "x-99", "garbage", "x-", "-3", "x-1-"])
def test_an_id_of_another_boot_a_future_id_or_garbage_gets_a_reset(last_id):
    hub = LiveHub(boot="x")
    hub.connect(1, None)
    hub.publish(1, update(0))
    got = frames(hub.connect(1, last_id).take())
    assert [f["event"] for f in got] == [RESET]
    assert got[0]["id"] == hub.head  # the next reconnect resumes from here


def test_an_id_older_than_the_ring_gets_a_reset():
    hub = LiveHub(boot="x", ring_size=3)
    ids = [f["id"] for f in frames(_published(hub, 5))]  # the first two left the ring
    assert [f["event"] for f in frames(hub.connect(1, ids[0]).take())] == [RESET]
    assert [orjson.loads(f["data"])["n"] for f in frames(hub.connect(1, ids[1]).take())] == [2, 3, 4]


def _published(hub: LiveHub, count: int, user_id: int = 1) -> bytes:
    client = hub.connect(user_id, None)
    for n in range(count):
        hub.publish(user_id, update(n))
    return client.take()


def test_ids_from_before_a_users_channel_existed_get_a_reset_whose_id_then_resumes():
    hub = LiveHub(boot="x")
    other_id = frames(_published(hub, 1, user_id=2))[0]["id"]  # user 1 had no channel yet
    reset = frames(hub.connect(1, other_id).take())
    assert [f["event"] for f in reset] == [RESET]
    assert hub.connect(1, reset[0]["id"]).take() == b""  # from the reset on, nothing is missed
    hub.publish(1, update(1))
    assert len(frames(hub.connect(1, reset[0]["id"]).take())) == 1


def test_more_missed_events_than_a_queue_holds_is_a_reset_not_a_dropped_client():
    hub = LiveHub(boot="x", ring_size=50, client_queue=3)
    first = frames(_published(hub, 10))[0]["id"]
    client = hub.connect(1, first)
    assert [f["event"] for f in frames(client.take())] == [RESET]
    assert not client.dropped


def test_a_slow_client_is_dropped_and_never_holds_back_a_fast_one():
    hub = LiveHub(client_queue=2)
    slow, fast = hub.connect(1, None), hub.connect(1, None)
    for n in range(3):
        hub.publish(1, update(n))
        assert len(frames(fast.take())) == 1
    assert slow.dropped and hub.dropped_clients == 1
    assert len(frames(slow.take())) == 2  # what it had queued is still written, then its stream ends
    assert slow.take() is None
    hub.publish(1, update(3))
    assert len(frames(fast.take())) == 1
    assert hub.dropped_clients == 1  # counted once, not once per event it misses


def test_user_channels_expire_after_the_resume_window_without_clients():
    clock = Clock()
    hub = LiveHub(boot="x", resume_window_s=100, clock=clock)
    c = hub.connect(1, None)
    hub.publish(1, update(0))
    seen = frames(c.take())[0]["id"]
    hub.disconnect(1, c)
    clock.now += 50
    hub.publish(1, update(1))  # kept while the browser may come back
    resumed = hub.connect(1, seen)
    got = frames(resumed.take())
    assert len(got) == 1
    hub.disconnect(1, resumed)
    clock.now += 101
    hub.sweep()
    hub.publish(1, update(2))  # nobody to keep it for
    assert [f["event"] for f in frames(hub.connect(1, got[0]["id"]).take())] == [RESET]


def test_a_user_has_at_most_max_clients_per_user():
    hub = LiveHub(max_clients_per_user=2)
    c1 = hub.connect(1, None)
    assert hub.connect(1, None) is not None and hub.connect(1, None) is None
    hub.disconnect(1, c1)
    assert hub.connect(1, None) is not None and hub.clients_of(1) == 2


async def test_a_client_stream_wakes_on_an_event_and_ends_once_dropped():
    client = LiveClient(10)
    client.offer(b"data: 1\n\n")
    assert await client.next_chunk() == b"data: 1\n\n"
    client.close()
    assert await client.next_chunk() is None


def test_heartbeats_go_to_the_streams_that_were_sent_nothing_since_the_last_tick():
    hub = LiveHub()
    idle, busy = hub.connect(1, None), hub.connect(2, None)
    hub.heartbeat()  # both new: nothing sent yet
    assert idle.take() == HEARTBEAT and busy.take() == HEARTBEAT
    hub.publish(2, update(0))
    hub.heartbeat()
    assert idle.take() == HEARTBEAT and HEARTBEAT not in busy.take()


def _recorded(process_id: int, count: int, *, is_latest: bool = True, alerted_state: str | None = None):
    config = ProcessAlertConfigView(*(s.default for s in SETTINGS))
    return RecordedSampleView(
        sample_id=1, watched_process_id=process_id, process_name=f"p{process_id}", count=count, cpu_pct=12.5,
        memory_pct=3.0, oldest_start_unix=None, recorded_at=AT, previous_count=None,
        previous_oldest_start_unix=None, previous_recorded_at=None, is_latest=is_latest, config=config,
        alerted_state=alerted_state,
    )


def _event(*samples) -> SampleRecordedView:
    return SampleRecordedView(server_id=5, hostname="web-01", user_id=9, agent_version="1", sampled_at=AT,
                              samples=list(samples), server_seen_at=AT)


def test_sample_updates_carry_the_status_and_skip_late_samples():
    updates = sample_updates(_event(_recorded(1, 2), _recorded(2, 0), _recorded(3, 1, alerted_state="cpu"),
                                    _recorded(4, 1, is_latest=False)))
    kinds = [k for k, _ in updates]
    assert kinds == [SERVER, SAMPLE, SAMPLE, SAMPLE]
    server = orjson.loads(updates[0][1])
    assert server == {"server_id": 5, "online": True, "last_seen_at": "2026-12-01T10:00:00Z"}
    samples = [orjson.loads(d) for _, d in updates[1:]]
    assert [(s["process_id"], s["status"]) for s in samples] == [(1, "up"), (2, "down"), (3, "alerting")]
    assert samples[0] == {"server_id": 5, "process_id": 1, "status": "up", "last_count": 2, "last_cpu_pct": 12.5,
                          "last_memory_pct": 3.0, "last_sample_at": "2026-12-01T10:00:00Z"}


def _alert(type_: str, state: str, reason: str | None = None) -> AlertEvent:
    return AlertEvent(id="a1", type=type_, state=state, occurred_at=AT, user_id=9,
                      server=AlertServer(id=5, hostname="web-01"), reason=reason)


@pytest.mark.parametrize(("state", "reason", "online"), [
    ("firing", None, False), ("resolved", "recovered", True), ("resolved", "flag_disabled", None),
])
def test_server_offline_alerts_also_move_the_server(state, reason, online):
    updates = alert_updates(_alert("server_offline", state, reason))
    assert updates[0][0] == ALERT and orjson.loads(updates[0][1])["state"] == state
    servers = [orjson.loads(d) for k, d in updates if k == SERVER]
    assert [s["online"] for s in servers] == ([] if online is None else [online])


def test_the_hub_routes_broker_messages_by_their_user_and_ignores_garbage():
    hub = LiveHub()
    hub.on_sample_recorded(b"not json")  # nobody connected: not even decoded
    mine, other = hub.connect(9, None), hub.connect(10, None)
    hub.on_sample_recorded(b"{\"v\": 1}")  # undecodable: skipped
    hub.on_sample_recorded(encode_sample_recorded(_event(_recorded(1, 1))))
    hub.on_alert(_alert("process_down", "firing").model_dump_json().encode())
    assert [f["event"] for f in frames(mine.take())] == [SERVER, SAMPLE, ALERT]
    assert other.take() == b""


def test_parse_event_id():
    assert parse_event_id("ab12-34") == ("ab12", 34)
    assert parse_event_id("34") is None and parse_event_id("ab-x") is None


def test_reset_all_tells_every_stream_and_forgets_what_came_before():
    hub = LiveHub(boot="x")
    a, b = hub.connect(1, None), hub.connect(2, None)
    hub.publish(1, update(0))
    before = frames(a.take())[0]["id"]
    hub.reset_all()
    resets = [frames(a.take()), frames(b.take())]
    assert [[f["event"] for f in got] for got in resets] == [[RESET], [RESET]]
    assert [f["event"] for f in frames(hub.connect(1, before).take())] == [RESET]
    assert hub.connect(1, resets[0][0]["id"]).take() == b""
