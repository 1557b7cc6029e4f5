"""The collector against real processes on this machine (no broker needed)."""

import time

import pytest

from procwatch_agent.collector import Collector
from tests.integration.agent.procs import program_copy, spawn, stop, unique_name

pytestmark = pytest.mark.integration


def by_name(readings):
    return {r.process_name: r for r in readings}


def test_counts_matching_pids_and_oldest_start(tmp_path):
    name = unique_name()
    exe = program_copy(tmp_path, name)
    first = spawn(exe, "60")
    time.sleep(1.1)  # distinct create times (second resolution)
    second = spawn(exe, "60")
    try:
        collector = Collector()
        r = by_name(collector.collect([name, unique_name()]))
        assert r[name].count == 2
        assert r[name].oldest_start_unix == int(first_create(first))
        assert r[name].memory_pct > 0
        # a name with no PIDs
        other = next(v for k, v in r.items() if k != name)
        assert (other.count, other.cpu_pct, other.memory_pct, other.oldest_start_unix) == (0, 0.0, 0.0, None)
        # prefix of the name is not the name (pgrep -x)
        assert by_name(collector.collect([name[:-1]]))[name[:-1]].count == 0
    finally:
        stop(first, second)
    assert by_name(Collector().collect([name]))[name].count == 0


def first_create(proc) -> float:
    import psutil

    return psutil.Process(proc.pid).create_time()


def test_name_longer_than_fifteen_chars(tmp_path):
    long_name = unique_name(length=20)
    sibling = long_name[:15] + "zzzzz"  # same comm, different full name
    proc = spawn(program_copy(tmp_path, long_name), "60")
    try:
        r = by_name(Collector().collect([long_name, sibling, long_name[:15]]))
        assert r[long_name].count == 1
        assert r[sibling].count == 0
        assert r[long_name[:15]].count == 1  # what `pgrep -x <first 15 chars>` finds too
    finally:
        stop(proc)


def test_cpu_is_measured_between_ticks(tmp_path):
    name = unique_name()
    busy = spawn(program_copy(tmp_path, name, "/bin/sh"), "-c", "while :; do :; done")
    try:
        collector = Collector()
        assert by_name(collector.collect([name]))[name].cpu_pct == 0.0  # first sight: no delta yet
        deadline = time.monotonic() + 10
        cpu = 0.0
        while cpu <= 20 and time.monotonic() < deadline:
            time.sleep(0.5)
            cpu = by_name(collector.collect([name]))[name].cpu_pct
        assert cpu > 20, cpu  # a busy loop uses most of a core (shared 2-core machine: be lenient)
    finally:
        stop(busy)


def test_vanished_and_zombie_processes_do_not_count_or_crash(tmp_path):
    name = unique_name()
    exe = program_copy(tmp_path, name)
    zombie = spawn(exe, "0")  # exits at once; not reaped yet -> zombie
    deadline = time.monotonic() + 5
    import psutil

    while psutil.Process(zombie.pid).status() != psutil.STATUS_ZOMBIE and time.monotonic() < deadline:
        time.sleep(0.02)
    try:
        assert by_name(Collector().collect([name]))[name].count == 0
    finally:
        stop(zombie)
