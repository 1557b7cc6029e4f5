import pytest

from procwatch_agent.procfs import PidStat, parse_stat

pytestmark = pytest.mark.unit

# A real line (fields 1..52), with utime 7, stime 3, starttime 4242, rss 123 pages.
LINE = (b"1234 (sleep) S 1 1234 1234 0 -1 4194304 90 0 0 0 7 3 0 0 20 0 1 0 4242 5500000 123 "
        b"18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 0 0 0 0 0 0 0 0\n")


def test_parse_stat_fields():
    assert parse_stat(LINE) == PidStat(state="S", cpu_ticks=10, start_ticks=4242, rss_pages=123)


def test_parse_stat_comm_with_spaces_and_parentheses():
    tricky = LINE.replace(b"(sleep)", b"(a) Z (b))")
    assert parse_stat(tricky) == PidStat(state="S", cpu_ticks=10, start_ticks=4242, rss_pages=123)


def test_zombie_state():
    assert parse_stat(LINE.replace(b") S ", b") Z ")).state == "Z"
