"""Shared pieces of the HTTP benchmarks: free ports, starting servers, a keep-alive load loop."""

from __future__ import annotations

import http.client
import os
import socket
import statistics
import subprocess
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, path: str, timeout: float = 120) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def start(args: list[str], env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, cwd=ROOT, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_bare(port: int) -> subprocess.Popen:
    """The baseline: bench/bare_app.py under uvicorn, one worker."""
    import sys

    return start([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
                  "--log-level", "warning", "--no-access-log"])


def percentiles(samples_s: list[float]) -> dict:
    """p50, p99 and mean, in milliseconds, of timings in seconds."""
    ms = sorted(x * 1000 for x in samples_s)
    return {
        "n": len(ms),
        "p50_ms": round(statistics.median(ms), 4),
        "p99_ms": round(ms[max(0, int(len(ms) * 0.99) - 1)], 4),
        "mean_ms": round(statistics.fmean(ms), 4),
    }


def run_load(
    port: int, method: str, path: str, headers: Callable[[int], dict] | dict, body: bytes | None,
    requests: int, concurrency: int,
) -> dict:
    """`requests` requests over `concurrency` keep-alive connections; latency percentiles and rate.

    `headers` may be a function of the request number (a different visitor per request)."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    per_thread = max(1, requests // concurrency)

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        for n in range(per_thread):
            h = headers(offset + n) if callable(headers) else headers
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=h)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker, args=(i * per_thread,)) for i in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    ms = sorted(x * 1000 for x in latencies)
    return {
        "requests": len(ms), "concurrency": concurrency, "statuses": statuses,
        "req_per_s": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(len(ms) * 0.90) - 1], 3),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
        "max_ms": round(ms[-1], 3),
    }


def print_table(rows: dict[str, dict]) -> None:
    print(f"{'case':<52} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, r in rows.items():
        print(f"{name:<52} {r['req_per_s']:>8} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8}")
