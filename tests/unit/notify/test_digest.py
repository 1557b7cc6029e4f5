"""The burst rule: 5 messages per 10 s one by one, then one digest; paced per service."""

from __future__ import annotations

import pytest

from procwatch_notify.digest import MIN_INTERVAL_S, Pacer, Turn

pytestmark = pytest.mark.unit


def simulate(service: str, arrivals: list[float], until: float) -> list[tuple[float, int]]:
    """Events arriving at `arrivals`; returns (time, events) of each message sent."""
    pacer = Pacer(MIN_INTERVAL_S[service])
    now, queue, messages = 0.0, sorted(arrivals), []
    while queue and now <= until:
        now = max(now, queue[0])
        waiting = [t for t in queue if t <= now]
        turn = pacer.plan(now, len(waiting))
        now += turn.wait_s
        waiting = [t for t in queue if t <= now]
        take = min(turn.take, len(waiting)) if turn.digest else 1
        messages.append((now, take))
        pacer.record(now)
        queue = queue[take:]
    return messages


@pytest.mark.parametrize("service", ["slack", "discord"])
def test_200_at_once_is_five_messages_and_one_digest(service):
    messages = simulate(service, [0.0] * 200, until=120)
    assert [n for _, n in messages] == [1, 1, 1, 1, 1, 195]
    gaps = [b - a for (a, _), (b, _) in zip(messages, messages[1:])]
    assert min(gaps) >= MIN_INTERVAL_S[service]


def test_rate_limits_hold_for_any_burst():
    for service, per_minute in (("slack", 60), ("discord", 30)):
        messages = simulate(service, [i * 0.01 for i in range(5000)], until=600)
        for start, _ in messages:
            assert sum(1 for t, _ in messages if start <= t < start + 60) <= per_minute
        assert sum(n for _, n in messages) == 5000


def test_a_slow_trickle_gets_one_message_per_event():
    messages = simulate("slack", [i * 3.0 for i in range(10)], until=60)
    assert [n for _, n in messages] == [1] * 10


def test_a_resumed_pacer_continues_the_burst_and_the_pacing():
    pacer = Pacer.resume(MIN_INTERVAL_S["slack"], now=100.0, since_last_s=0.25, streak=5)
    turn = pacer.plan(100.0, 7)
    assert turn.wait_s == pytest.approx(0.75)  # 1 s after the other replica's last message
    assert turn.take == 7  # the burst already had its 5 single messages: the rest is one digest
    fresh = Pacer.resume(MIN_INTERVAL_S["slack"], now=100.0, since_last_s=None, streak=0)
    assert fresh.plan(100.0, 7) == Turn(wait_s=0.0, take=1)
    ended = Pacer.resume(MIN_INTERVAL_S["slack"], now=100.0, since_last_s=60.0, streak=5)
    assert ended.plan(100.0, 7) == Turn(wait_s=0.0, take=1)  # 10 s without a message ended that burst
