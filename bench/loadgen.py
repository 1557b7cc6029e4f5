"""A small closed-loop HTTP/1.1 load generator (keep-alive, N connections, fixed duration).

Runs in its own process (`run_in_subprocess` starts `python -m bench.loadgen`), so it does not share an event loop or
a GIL with the API under test. Written on asyncio streams rather than httpx: at
thousands of requests/s on a 2-core machine the client's own CPU matters, and this
one spends ~30 µs per request. Each connection sends a request, reads the response
(status line, headers, Content-Length body) and sends the next; the latency of a
request is from just before the write to the last body byte.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class LoadResult:
    requests: int
    seconds: float
    latencies_s: list[float]
    statuses: dict[int, int]
    errors: int = 0
    sample_bodies: list[bytes] = field(default_factory=list)

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


async def _connection(host: str, port: int, requests: list[bytes], start_index: int, warmup_until: float,
                      deadline: float, latencies: list[float], statuses: Counter, bodies: list[bytes],
                      errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    i = start_index
    n = len(requests)
    perf = time.perf_counter
    try:
        while True:
            t0 = perf()
            if t0 >= deadline:
                break
            writer.write(requests[i % n])
            i += 1
            status_line = await reader.readline()
            if not status_line:
                errors[0] += 1
                break
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            body = await reader.readexactly(length) if length else b""
            t1 = perf()
            if t0 >= warmup_until:
                latencies.append(t1 - t0)
                statuses[int(status_line.split(b" ", 2)[1])] += 1
                if len(bodies) < 3:
                    bodies.append(body)
    finally:
        writer.close()


async def _run(host: str, port: int, paths: list[str], headers: dict[str, str], concurrency: int,
               seconds: float, warmup: float) -> LoadResult:
    head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    requests = [f"GET {p} HTTP/1.1\r\nHost: {host}:{port}\r\n{head}\r\n".encode() for p in paths]
    latencies: list[float] = []
    statuses: Counter = Counter()
    bodies: list[bytes] = []
    errors = [0]
    start = time.perf_counter()
    warmup_until = start + warmup
    deadline = warmup_until + seconds
    await asyncio.gather(*(
        _connection(host, port, requests, c * 7919, warmup_until, deadline, latencies, statuses, bodies, errors)
        for c in range(concurrency)
    ))
    # Requests that started in the window; the window ends at the deadline.
    return LoadResult(requests=len(latencies), seconds=seconds, latencies_s=latencies,
                      statuses=dict(statuses), errors=errors[0], sample_bodies=bodies)


def _entry(args: dict) -> LoadResult:
    coro = _run(args["host"], args["port"], args["paths"], args["headers"], args["concurrency"], args["seconds"],
                args["warmup"])
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def run_in_subprocess(host: str, port: int, paths: list[str], headers: dict[str, str], *,
                      concurrency: int = 32, seconds: float = 10.0, warmup: float = 2.0) -> LoadResult:
    """Generate the load from a separate process (`python -m bench.loadgen`) and return its measurements."""
    args = {"host": host, "port": port, "paths": paths, "headers": headers, "concurrency": concurrency,
            "seconds": seconds, "warmup": warmup}
    root = Path(__file__).resolve().parent.parent
    done = subprocess.run([sys.executable, "-m", "bench.loadgen"], input=json.dumps(args).encode(),
                          capture_output=True, cwd=root, timeout=seconds + warmup + 120)
    if done.returncode != 0:
        raise RuntimeError(f"load generator failed: {done.stderr.decode()[-2000:]}")
    out = json.loads(done.stdout)
    return LoadResult(requests=out["requests"], seconds=out["seconds"], latencies_s=out["latencies_s"],
                      statuses={int(k): v for k, v in out["statuses"].items()}, errors=out["errors"],
                      sample_bodies=[b.encode() for b in out["sample_bodies"]])


if __name__ == "__main__":
    result = _entry(json.loads(sys.stdin.buffer.read()))
    sys.stdout.write(json.dumps({
        "requests": result.requests, "seconds": result.seconds, "latencies_s": result.latencies_s,
        "statuses": result.statuses, "errors": result.errors,
        "sample_bodies": [b.decode() for b in result.sample_bodies],
    }))
