"""`procwatch api` with several workers as a real process tree (procwatch_api.workers): one
SO_REUSEPORT socket per worker, new connections spread over them, a killed worker restarted,
SIGTERM a clean exit 0; a taken port fails fast."""

from __future__ import annotations

import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from procwatch.embedded import free_port
from procwatch_api.workers import reuseport_balances

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not reuseport_balances(), reason="per-worker sockets need Linux SO_REUSEPORT"),
]

REPO = Path(__file__).resolve().parents[3]
# Generous: a deadline, not a wait (polled); a loaded 2-core CI host needs more than a quiet one.
START_TIMEOUT_S = 90


def wait_for(check, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"{what} not met within {timeout} s (last: {last!r})")


@contextmanager
def api(urls: tuple[str, str, str], port: int, workers: int, log: Path) -> Iterator[subprocess.Popen]:
    database_url, redis_url, nats_url = urls
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "NATS_URL": nats_url,
           "PROCWATCH_API_PORT": str(port), "PROCWATCH_API_WORKERS": str(workers)}
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "procwatch.cli", "api"], env=env, cwd=REPO,
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            yield proc
        finally:
            if proc.poll() is None:  # a failed test: take the workers down with it
                with suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)


def healthz(port: int) -> int | None:
    """Status of GET /healthz on a new connection, None if nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        conn.request("GET", "/healthz")
        return conn.getresponse().status
    except OSError:
        return None
    finally:
        conn.close()


def tcp_sockets(pid: int, port: int, status: str) -> list:
    try:
        return [c for c in psutil.Process(pid).net_connections("tcp") if c.status == status and c.laddr.port == port]
    except psutil.NoSuchProcess:
        return []


def listening_workers(parent: int, port: int) -> dict[int, set[str]]:
    """Child pid -> the inodes of its sockets listening on `port` (children without one left out:
    e.g. multiprocessing's resource tracker, or a worker still starting)."""
    out = {}
    for child in psutil.Process(parent).children():
        inodes = set()
        for c in tcp_sockets(child.pid, port, psutil.CONN_LISTEN):
            with suppress(OSError):
                inodes.add(os.readlink(f"/proc/{child.pid}/fd/{c.fd}"))
        if inodes:
            out[child.pid] = inodes
    return out


def healthz_count(metrics_text: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(metrics_text) for s in family.samples
               if s.name == "procwatch_api_request_duration_seconds_count" and s.labels.get("route") == "/healthz")


def assert_metrics_sum_every_worker(port: int, at_least: int) -> None:
    """Scrapes on new connections (they land on either worker) all count the same /healthz requests."""
    totals = set()
    for _ in range(6):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/metrics")
            response = conn.getresponse()
            assert response.status == 200
            totals.add(healthz_count(response.read().decode()))
        finally:
            conn.close()
    assert len(totals) == 1 and totals.pop() >= at_least, totals


@pytest.fixture
def urls(database_url, redis_url, nats_url) -> tuple[str, str, str]:
    return database_url, redis_url, nats_url


def test_two_workers_own_sockets_share_connections_restart_and_stop_cleanly(urls, tmp_path):
    port, log = free_port(), tmp_path / "api.log"
    with api(urls, port, 2, log) as proc:
        workers = wait_for(lambda: len(w := listening_workers(proc.pid, port)) == 2 and w,
                           START_TIMEOUT_S, "two workers listening")
        wait_for(lambda: healthz(port) == 200, START_TIMEOUT_S, "GET /healthz")
        # One socket each, none shared, none left in the supervisor.
        sockets = [inode for inodes in workers.values() for inode in inodes]
        assert len(sockets) == len(set(sockets)) == 2, workers
        assert not tcp_sockets(proc.pid, port, psutil.CONN_LISTEN)

        # 40 new connections, all kept open: the kernel must have handed some to each worker.
        conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=5) for _ in range(40)]
        try:
            for conn in conns:
                conn.request("GET", "/healthz")
                response = conn.getresponse()
                response.read()
                assert response.status == 200
            per_worker = {pid: len(tcp_sockets(pid, port, psutil.CONN_ESTABLISHED)) for pid in workers}
        finally:
            for conn in conns:
                conn.close()
        assert sum(per_worker.values()) == 40 and min(per_worker.values()) > 0, per_worker
        # Both served some: whichever worker answers a scrape counts them all (multiprocess metrics).
        assert_metrics_sum_every_worker(port, at_least=40)

        # A worker that dies is replaced; the other one keeps answering meanwhile.
        victim, survivor = sorted(workers)
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: healthz(port) == 200, 5, "GET /healthz from the surviving worker")
        after = wait_for(lambda: len(w := listening_workers(proc.pid, port)) == 2 and victim not in w and w,
                         START_TIMEOUT_S, "the killed worker replaced")
        assert survivor in after
        assert f"pid={victim} exit_code=-9" in log.read_text()

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()
    assert not [pid for pid in after if psutil.pid_exists(pid)], log.read_text()


def test_one_worker_exits_0_on_sigterm(urls, tmp_path):
    port, log = free_port(), tmp_path / "api.log"
    with api(urls, port, 1, log) as proc:
        wait_for(lambda: healthz(port) == 200, START_TIMEOUT_S, "GET /healthz")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()


def test_a_taken_port_fails_fast_without_starting_workers(urls, tmp_path):
    log = tmp_path / "api.log"
    with socket.socket() as taken:  # a plain socket: no SO_REUSEPORT, so nobody may share the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with api(urls, port, 2, log) as proc:
            assert proc.wait(15) != 0
    output = log.read_text()
    assert "cannot bind the API port" in output, output
    assert "API worker started" not in output, output
