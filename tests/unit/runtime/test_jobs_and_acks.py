"""Pure parts of the worker runtime: the periodic jobs' schedule and lock key, the ack / nak /
dead-letter policy mapping and the dead-letter headers."""

from __future__ import annotations

import itertools
import random

import psycopg
import pytest
from nats.aio.msg import Msg

from procwatch_contracts import subjects
from procwatch_messaging import acks
from procwatch_messaging.acks import Action, FailurePolicy, Poison
from procwatch_messaging.jobs import PeriodicJob, advisory_lock_key, delays, first_delay, next_delay

pytestmark = pytest.mark.unit


# --- schedule ------------------------------------------------------------------------------


def test_the_first_run_comes_within_one_period_and_replicas_started_together_spread_out():
    firsts = [first_delay(10.0, random.Random(seed)) for seed in range(200)]
    assert all(0.0 <= d <= 10.0 for d in firsts)
    assert max(firsts) - min(firsts) > 5.0  # spread, not all at once


def test_later_runs_come_every_period_plus_or_minus_the_jitter():
    rng = random.Random(7)
    gaps = [next_delay(10.0, 0.2, rng) for _ in range(500)]
    assert all(8.0 <= g <= 12.0 for g in gaps)
    assert min(gaps) < 8.5 and max(gaps) > 11.5  # the whole band is used
    assert abs(sum(gaps) / len(gaps) - 10.0) < 0.3  # on average, every period


def test_no_jitter_means_exactly_every_period_after_the_first_run():
    schedule = list(itertools.islice(delays(3.0, 0.0, random.Random(1)), 5))
    assert 0.0 <= schedule[0] <= 3.0
    assert schedule[1:] == [3.0, 3.0, 3.0, 3.0]


def test_a_job_refuses_a_nonsense_schedule():
    with pytest.raises(ValueError):
        PeriodicJob("x", lambda: None, every_s=0)
    with pytest.raises(ValueError):
        PeriodicJob("x", lambda: None, every_s=1, jitter=1.0)


def test_the_advisory_lock_key_is_stable_per_name_distinct_and_a_signed_bigint():
    key = advisory_lock_key("offline-servers")
    assert key == advisory_lock_key("offline-servers")  # every replica computes the same key
    assert key != advisory_lock_key("offline-servers-2")
    assert -(2**63) <= key < 2**63
    assert PeriodicJob("a", lambda: None, every_s=1, database_url="postgresql://x/y").exclusive
    assert not PeriodicJob("a", lambda: None, every_s=1).exclusive


# --- policy mapping --------------------------------------------------------------------------

POLICY = FailurePolicy(transient=(psycopg.OperationalError, OSError), retry_base_s=0.5, retry_max_s=10.0,
                       max_attempts=3)


def test_retry_delay_doubles_per_delivery_and_is_capped():
    assert [acks.retry_delay(n, 0.5, 10.0) for n in (1, 2, 3, 4, 5, 6, 100)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_a_transient_error_is_naked_with_the_backoff_at_every_delivery_never_dead_lettered():
    for delivered, delay in [(1, 0.5), (2, 1.0), (10, 10.0), (1000, 10.0)]:
        d = POLICY.on_error(psycopg.OperationalError("db down"), delivered)
        assert (d.action, d.delay_s) == (Action.NAK, delay)


def test_an_unexpected_error_is_retried_then_dead_lettered_with_its_type_as_reason():
    assert POLICY.on_error(KeyError("x"), 1).action is Action.NAK
    assert POLICY.on_error(KeyError("x"), 2).action is Action.NAK
    d = POLICY.on_error(KeyError("x"), 3)
    assert (d.action, d.reason) == (Action.DEAD_LETTER, "processing_failed: KeyError")


def test_poison_is_dead_lettered_at_once_with_its_reason_truncated():
    d = POLICY.on_error(Poison("invalid ProcessChanged: " + "x" * 500), 1)
    assert d.action is Action.DEAD_LETTER
    assert d.reason.startswith("invalid ProcessChanged: ") and len(d.reason) == acks.MAX_REASON_CHARS


def _jetstream_msg(subject: str = "processes.changed.12", stream_seq: int = 41, delivered: int = 2) -> Msg:
    # A message as JetStream delivers it: its metadata is in the ack reply subject.
    reply = f"$JS.ACK.PROCESS_EVENTS.alerter-lifecycle.{delivered}.{stream_seq}.7.1716566400000000000.0"
    return Msg(_client=None, subject=subject, reply=reply, data=b"{}", headers=None)


def test_dead_letter_headers_carry_the_reason_the_original_subject_and_an_id_per_stored_message():
    msg = _jetstream_msg()
    headers = acks.dead_letter_headers(msg, "invalid: bad", {"Procwatch-Original-Msg-Id": "m1"})
    assert headers == {
        subjects.REASON_HEADER: "invalid: bad",
        subjects.ORIGINAL_SUBJECT_HEADER: "processes.changed.12",
        "Nats-Msg-Id": "dl-PROCESS_EVENTS-41",  # a redelivery is parked once
        "Procwatch-Original-Msg-Id": "m1",
    }
    assert acks.num_delivered(msg) == 2
    core = Msg(_client=None, subject="x", reply="", data=b"")
    assert "Nats-Msg-Id" not in acks.dead_letter_headers(core, "r") and acks.num_delivered(core) == 1
