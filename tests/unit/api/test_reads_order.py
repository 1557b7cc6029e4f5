"""repository.Reads turns the get statement's one row (samples as column arrays) into newest-first rows,
sorts them should PostgreSQL ever hand the aggregated rows over in another order, and reads across
every partition only when the recent ones do not hold the newest samples."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta

from procwatch_api.repository import _PROCESS_NAMES, ALL_SAMPLES_SINCE, Reads

T0 = datetime(2026, 11, 28, 12, 0, 0)
RECENT = T0 - timedelta(days=1)


class RowReads(Reads):
    """Reads with the statement's results given (by `since`), no pool."""

    def __init__(self, rows: list[tuple], older: list[tuple] | None = None) -> None:
        self.results = {RECENT: rows, ALL_SAMPLES_SINCE: older}
        self.sinces: list[datetime] = []

    async def _rows(self, sql, params):
        self.sinces.append(params["since"])
        return self.results[params["since"]]


def get_row(times: list[datetime] | None, samples_total: int | None = None) -> tuple:
    process = {name: i for i, name in enumerate(_PROCESS_NAMES)}
    process["samples_total"] = len(times or ()) if samples_total is None else samples_total
    if times is None:
        arrays = (None,) * 7
    else:
        n = len(times)
        arrays = (list(range(n)), [9] * n, [1] * n, [1.5] * n, [2.5] * n, [int(t.timestamp()) for t in times], times)
    return (7, 3, *process.values(), *arrays)


def read(rows: list[tuple]):
    return asyncio.run(RowReads(rows).process_with_newest_samples("h", 3, 9, 100, RECENT))


def test_arrays_become_sample_rows_in_the_order_given():
    times = [T0 - timedelta(seconds=10 * i) for i in range(5)]
    found = read([get_row(times)])
    assert (found.user_id, found.server_found) == (7, True)
    assert found.process["process_name"] == _PROCESS_NAMES.index("process_name")
    assert [s[6] for s in found.samples] == times
    assert found.samples[0] == (0, 9, 1, 1.5, 2.5, int(times[0].timestamp()), times[0])


def test_rows_out_of_order_are_sorted_newest_first():
    times = [T0 - timedelta(seconds=s) for s in (30, 0, 20, 10)]
    found = read([get_row(times)])
    assert [s[6] for s in found.samples] == sorted(times, reverse=True)
    assert [s[0] for s in found.samples] == [1, 3, 2, 0]  # each row kept together


def test_a_process_without_samples_and_the_missing_cases():
    assert read([get_row(None)]).samples == []
    assert read([]).user_id is None  # token unknown or revoked
    no_process = (7, 3, *(None,) * len(_PROCESS_NAMES), *(None,) * 7)
    assert (read([no_process]).server_found, read([no_process]).process) == (True, None)
    no_server = (7, None, *(None,) * len(_PROCESS_NAMES), *(None,) * 7)
    assert read([no_server]).server_found is False


def test_older_samples_are_read_across_every_partition_only_when_the_recent_ones_fall_short():
    recent = [T0 - timedelta(seconds=10 * i) for i in range(3)]
    older = recent + [RECENT - timedelta(days=3)]
    # All of the process's samples are recent: one statement.
    reads = RowReads([get_row(recent, samples_total=3)])
    found = asyncio.run(reads.process_with_newest_samples("h", 3, 9, 100, RECENT))
    assert (len(found.samples), reads.sinces) == (3, [RECENT])
    # The counter says there are more: the second statement, over every partition, answers.
    reads = RowReads([get_row(recent, samples_total=4)], [get_row(older, samples_total=4)])
    found = asyncio.run(reads.process_with_newest_samples("h", 3, 9, 100, RECENT))
    assert ([s[6] for s in found.samples], reads.sinces) == (older, [RECENT, ALL_SAMPLES_SINCE])
    # A full page of recent samples is the newest page whatever the counter says.
    page = [T0 - timedelta(seconds=i) for i in range(100)]
    reads = RowReads([get_row(page, samples_total=10_000)])
    asyncio.run(reads.process_with_newest_samples("h", 3, 9, 100, RECENT))
    assert reads.sinces == [RECENT]
