"""A watched PID's death reaches the broker at once, not at the next tick (real NATS, real processes).

The agent runs with a 60 s interval; a SIGKILLed sleeper must show up as an
out-of-cadence sample with count 0 within 2 s — through pidfd, and through the
polling fallback.
"""

from __future__ import annotations

import asyncio
import signal
import time

import pytest

from procwatch_agent.runner import Agent
from procwatch_contracts.messages import AgentSample
from tests.integration.agent.procs import program_copy, spawn, stop, unique_name
from tests.integration.agent.test_agent_nats import (  # noqa: F401 - nc is a fixture
    SampleReader, WatchListStub, nc, new_server_id, reading, settings,
)

pytestmark = pytest.mark.integration

INTERVAL_S = 60.0
DEADLINE_S = 2.0


async def started(nc, nats_url, names, **kw) -> tuple[Agent, asyncio.Task, SampleReader, WatchListStub]:
    server_id = new_server_id()
    stub = await WatchListStub(nc, server_id, names, interval=INTERVAL_S).start()
    reader = await SampleReader(nc.jetstream(), server_id).start()
    # The names also come from the flags, so the very first tick (before the broker answers) has them.
    agent = Agent(settings(nats_url, server_id, names=names, **kw))
    task = asyncio.create_task(agent.run())
    return agent, task, reader, stub


async def first_sample(reader: SampleReader, agent: Agent) -> tuple[AgentSample, str]:
    """The first tick's sample (flushed when the broker connects), once the watch list is in force."""
    [msg] = await reader.next(timeout=15)
    deadline = time.monotonic() + 10
    while not agent.watch_list_received and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    assert agent.watch_list_received and agent.interval == INTERVAL_S
    return AgentSample.model_validate_json(msg.data), msg.headers["Nats-Msg-Id"]


async def shut(agent: Agent, task: asyncio.Task, stub: WatchListStub) -> None:
    agent.stop()
    await asyncio.wait_for(task, 10)
    await stub.stop()


@pytest.mark.parametrize("mode", ["pidfd", "poll"])
async def test_sigkill_is_reported_out_of_cadence(nc, nats_url, tmp_path, mode):
    name = unique_name()
    proc = spawn(program_copy(tmp_path, name), "600")
    agent, task, reader, stub = await started(nc, nats_url, [name], exit_watch=mode)
    try:
        sample, first_id = await first_sample(reader, agent)
        assert reading(sample, name).count == 1
        assert agent.exits.mode == mode and len(agent.exits) == 1

        killed_at = time.monotonic()
        proc.send_signal(signal.SIGKILL)
        [msg] = await reader.next(timeout=DEADLINE_S)
        took = time.monotonic() - killed_at
        gone = AgentSample.model_validate_json(msg.data)
        assert took < DEADLINE_S and agent.interval == INTERVAL_S  # long before the next tick
        assert [(p.process_name, p.count, p.oldest_start_unix) for p in gone.processes] == [(name, 0, None)]
        assert msg.headers["Nats-Msg-Id"] == f"{gone.server_id}-{int(gone.sampled_at.timestamp() * 1000)}"
        assert msg.headers["Nats-Msg-Id"] != first_id
        assert agent.urgent.sent_total >= 1 and len(agent.exits) == 0
    finally:
        stop(proc)
        await shut(agent, task, stub)


async def test_deaths_together_are_one_message_and_a_respawn_is_reported(nc, nats_url, tmp_path):
    a, b = unique_name(), unique_name()
    exe_a, exe_b = program_copy(tmp_path, a), program_copy(tmp_path, b)
    procs = [spawn(exe_a, "600"), spawn(exe_b, "600")]
    agent, task, reader, stub = await started(nc, nats_url, [a, b], urgent_coalesce_ms=50, respawn_recheck=1.0)
    try:
        sample, _ = await first_sample(reader, agent)
        assert [p.count for p in sample.processes] == [1, 1]
        sent_before = agent.urgent.sent_total

        for p in procs:
            p.send_signal(signal.SIGKILL)
        [msg] = await reader.next(timeout=DEADLINE_S)
        both = AgentSample.model_validate_json(msg.data)
        assert sorted((p.process_name, p.count) for p in both.processes) == sorted([(a, 0), (b, 0)])
        assert agent.urgent.sent_total == sent_before + 1

        # A supervisor starts `a` again: the recheck one second later reports it (not the 60 s tick).
        procs.append(spawn(exe_a, "600"))
        [msg] = await reader.next(timeout=DEADLINE_S + 1.0)
        back = AgentSample.model_validate_json(msg.data)
        assert [(p.process_name, p.count) for p in back.processes] == [(a, 1)]
        assert reading(back, a).oldest_start_unix is not None
    finally:
        stop(*procs)
        await shut(agent, task, stub)


async def test_one_of_two_pids_dying_lowers_the_count_at_once(nc, nats_url, tmp_path):
    name = unique_name()
    exe = program_copy(tmp_path, name)
    older = spawn(exe, "600")
    time.sleep(1.1)  # distinct start seconds
    younger = spawn(exe, "600")
    agent, task, reader, stub = await started(nc, nats_url, [name])
    try:
        sample, _ = await first_sample(reader, agent)
        before = reading(sample, name)
        assert before.count == 2

        older.send_signal(signal.SIGKILL)
        [msg] = await reader.next(timeout=DEADLINE_S)
        after = reading(AgentSample.model_validate_json(msg.data), name)
        # The oldest PID died: the oldest start time increases, which the restart rule counts.
        assert after.count == 1 and after.oldest_start_unix > before.oldest_start_unix
        assert after.memory_pct > 0
    finally:
        stop(older, younger)
        await shut(agent, task, stub)


async def test_tick_mode_waits_for_the_tick(nc, nats_url, tmp_path):
    name = unique_name()
    proc = spawn(program_copy(tmp_path, name), "600")
    agent, task, reader, stub = await started(nc, nats_url, [name], exit_watch="tick")
    try:
        await first_sample(reader, agent)
        proc.send_signal(signal.SIGKILL)
        proc.wait(5)
        with pytest.raises(AssertionError, match="expected 1 samples, got 0"):
            await reader.next(timeout=DEADLINE_S)
    finally:
        stop(proc)
        await shut(agent, task, stub)
