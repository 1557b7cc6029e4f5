"""SampleIdPool: one ingest process hands its id blocks out across batches (pure logic)."""

from __future__ import annotations

import pytest

from procwatch_ingest.service import SampleIdPool

pytestmark = pytest.mark.unit


class _Blocks:
    """A stand-in repository for the pool's pure logic: hands out consecutive blocks."""

    def __init__(self, block: int) -> None:
        self.block, self.next, self.calls = block, 1, 0

    async def allocate_id_blocks(self, blocks: int) -> list[int]:
        self.calls += 1
        firsts = [self.next + i * self.block for i in range(blocks)]
        self.next += blocks * self.block
        return firsts


async def test_the_pool_hands_out_each_id_once_and_asks_only_when_it_runs_out():
    blocks = _Blocks(10)
    pool = SampleIdPool(block=10)
    sizes = [3, 3, 3, 1, 25, 0, 7]
    taken = [await pool.take(blocks, n) for n in sizes]
    assert [len(t) for t in taken] == sizes
    flat = [i for t in taken for i in t]
    assert flat == list(range(1, len(flat) + 1))  # each once, in order, no gaps within a process
    assert blocks.calls == 3  # the first block served four batches, 25 needed three more, the last 7 one more
