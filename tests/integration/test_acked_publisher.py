"""AckedPublisher against a real NATS JetStream: a future per message that says whether the stream
stored it, like nats-py's publish_async."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from nats.js.api import DiscardPolicy
from nats.js.errors import APIError, NoStreamResponseError

from procwatch_messaging.publish import AckedPublisher
from tests.support.streams import throwaway_stream

pytestmark = pytest.mark.integration


@pytest.fixture
async def stream(nats_url):
    """A throwaway stream of at most 3 messages (new ones refused); yields (nc, js, subject)."""
    async with throwaway_stream(nats_url, "PUBTEST", max_msgs=3, discard=DiscardPolicy.NEW) as (nc, js, subject, _):
        yield nc, js, subject


async def test_each_future_gives_the_stored_sequence_and_duplicates_the_first(stream):
    nc, js, subject = stream
    publisher = AckedPublisher(nc)
    futures = [await publisher.publish_async(subject, f"m{i}".encode(), headers={"Nats-Msg-Id": f"id-{i}"})
               for i in range(2)]
    again = await publisher.publish_async(subject, b"m0 again", headers={"Nats-Msg-Id": "id-0"})
    assert await asyncio.wait_for(asyncio.gather(*futures, again), 5) == [1, 2, 1]
    stored = await js.get_msg(await js.find_stream_name_by_subject(subject), 2)
    assert stored.data == b"m1"
    assert publisher.awaiting_acks == 0  # nothing left behind


async def test_a_refused_message_and_a_subject_without_stream_fail_their_future(stream):
    nc, _, subject = stream
    publisher = AckedPublisher(nc)
    for i in range(3):
        await asyncio.wait_for(await publisher.publish_async(subject, b"x", headers={"Nats-Msg-Id": f"f-{i}"}), 5)
    with pytest.raises(APIError):  # the stream is full and refuses new messages
        await asyncio.wait_for(await publisher.publish_async(subject, b"x", headers={"Nats-Msg-Id": "f-3"}), 5)
    with pytest.raises(NoStreamResponseError):
        await asyncio.wait_for(await publisher.publish_async(f"nostream.{uuid.uuid4().hex}", b"x"), 5)


async def test_a_future_given_up_on_leaves_no_entry(stream):
    nc, _, subject = stream
    publisher = AckedPublisher(nc)
    future = await publisher.publish_async(subject, b"x")
    future.cancel()
    await asyncio.sleep(0)  # done callbacks run on the next loop iteration
    assert publisher.awaiting_acks == 0
