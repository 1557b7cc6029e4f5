from datetime import UTC, datetime

import pytest

from procwatch_agent.publisher import BoundedBuffer, encode, message_id
from procwatch_contracts.messages import AgentSample

pytestmark = pytest.mark.unit


def test_buffer_keeps_order_and_drops_oldest_when_full():
    buf: BoundedBuffer[int] = BoundedBuffer(3)
    assert [buf.add(i) for i in range(3)] == [None, None, None]
    assert buf.dropped == 0
    assert buf.add(3) == 0
    assert buf.add(4) == 1
    assert list(buf) == [2, 3, 4]
    assert buf.dropped == 2
    assert buf.peek() == 2
    assert buf.pop() == 2
    assert len(buf) == 2


def test_buffer_of_one_keeps_only_newest():
    buf: BoundedBuffer[str] = BoundedBuffer(1)
    buf.add("a")
    buf.add("b")
    assert list(buf) == ["b"] and buf.dropped == 1


def test_buffer_rejects_zero_capacity():
    with pytest.raises(ValueError):
        BoundedBuffer(0)


def test_encode_subject_msg_id_and_payload_roundtrip():
    sample = AgentSample(v=1, server_id=12, agent_version="0.1.0",
                         sampled_at=datetime(2026, 5, 24, 18, 41, 0, 250000, tzinfo=UTC), processes=[])
    out = encode(sample)
    assert out.subject == "agent.samples.12"
    assert out.msg_id == message_id(12, 1779648060250) == "12-1779648060250"
    assert AgentSample.model_validate_json(out.payload) == sample
    assert b'"sampled_at":"2026-05-24T18:41:00.250000Z"' in out.payload
