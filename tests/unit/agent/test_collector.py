import pytest

from procwatch_agent.collector import PidReading, aggregate, cpu_percent
from procwatch_contracts.messages import ProcessReading

pytestmark = pytest.mark.unit

GIB = 1024**3


def test_no_pids_reports_zero_and_null_start():
    assert aggregate("nginx", [], 8 * GIB) == ProcessReading(
        process_name="nginx", count=0, cpu_pct=0.0, memory_pct=0.0, oldest_start_unix=None
    )


def test_sums_cpu_and_memory_and_takes_oldest_start():
    readings = [
        PidReading(pid=10, cpu_pct=12.5, rss_bytes=GIB // 2, create_time=1716566400.9),
        PidReading(pid=11, cpu_pct=150.25, rss_bytes=GIB // 4, create_time=1716566500.0),
        PidReading(pid=12, cpu_pct=0.0, rss_bytes=GIB // 4, create_time=1716566450.2),
    ]
    r = aggregate("nginx", readings, 8 * GIB)
    assert r.count == 3
    assert r.cpu_pct == 162.75  # per-core percent: may exceed 100
    assert r.memory_pct == 12.5  # 1 GiB of 8 GiB
    assert r.oldest_start_unix == 1716566400  # int seconds, truncated


def test_rounding_and_no_negative_values():
    r = aggregate("x", [PidReading(pid=1, cpu_pct=-0.5, rss_bytes=1, create_time=5.0)], 3)
    assert r.cpu_pct == 0.0
    assert r.memory_pct == 33.33


def test_unknown_total_memory_gives_zero_percent():
    r = aggregate("x", [PidReading(pid=1, cpu_pct=1.0, rss_bytes=100, create_time=5.0)], 0)
    assert r.memory_pct == 0.0 and r.count == 1


@pytest.mark.parametrize(
    ("prev_cpu", "prev_wall", "cpu", "wall", "expected"),
    [
        (1.0, 100.0, 1.5, 101.0, 50.0),  # half a core
        (1.0, 100.0, 3.0, 101.0, 200.0),  # two full cores
        (1.0, 100.0, 1.0, 101.0, 0.0),  # idle
        (1.0, 100.0, 2.0, 100.0, 0.0),  # no time elapsed: undefined -> 0
        (2.0, 100.0, 1.0, 101.0, 0.0),  # counter went backwards (reused pid): never negative
    ],
)
def test_cpu_percent(prev_cpu, prev_wall, cpu, wall, expected):
    assert cpu_percent(prev_cpu, prev_wall, cpu, wall) == pytest.approx(expected)
