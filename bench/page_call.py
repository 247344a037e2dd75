"""Benchmark: `POST /v1/page` on the demo shop next to a bare Starlette endpoint, on loopback.

Both run under uvicorn (one worker, uvloop + httptools) in subprocesses started by this
script; requests come from this process over keep-alive connections. Prints a table and
writes bench/results/page_call.json.

    .venv/bin/python bench/page_call.py [--requests 3000] [--concurrency 8]
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench" / "results" / "page_call.json"
BODY = {
    "shop": "demo",
    "page": {"url": "http://127.0.0.1/demo/product/22632", "referrer": "", "type": "product", "item_id": "22632"},
    "slots": [
        {"id": "top-banner", "widget": "banner", "attrs": {"placement": "top"}},
        {"id": "home-hero", "widget": "banner", "attrs": {}},
    ],
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, path: str, timeout: float = 60) -> None:
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


def run_load(port: int, headers: dict, body: bytes, requests: int, concurrency: int) -> dict:
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    lock = threading.Lock()
    per_thread = requests // concurrency

    def worker() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        mine = []
        for _ in range(per_thread):
            started = time.perf_counter()
            conn.request("POST", "/v1/page?shop=demo", body=body, headers=headers)
            response = conn.getresponse()
            response.read()
            mine.append(time.perf_counter() - started)
            with lock:
                statuses[response.status] = statuses.get(response.status, 0) + 1
        with lock:
            latencies.extend(mine)

    started = time.perf_counter()
    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    latencies.sort()
    ms = [x * 1000 for x in latencies]
    return {
        "requests": len(ms), "concurrency": concurrency, "statuses": statuses,
        "req_per_s": round(len(ms) / elapsed, 1),
        "p50_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[int(len(ms) * 0.90) - 1], 3),
        "p99_ms": round(ms[int(len(ms) * 0.99) - 1], 3),
        "max_ms": round(ms[-1], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
    vitrine_port, bare_port = free_port(), free_port()
    py = sys.executable
    vitrine = start([py, "-m", "server.cli", "--data-dir", str(data_dir), "demo", "--port", str(vitrine_port)])
    bare = start([py, "-m", "uvicorn", "bench.bare_app:app", "--port", str(bare_port), "--log-level", "warning",
                  "--no-access-log"])
    try:
        wait_for(vitrine_port, "/v1/health")
        wait_for(bare_port, "/")
        body = json.dumps(BODY).encode()
        # A returning visitor from the UK: token from a first call, geo from X-Forwarded-For.
        conn = http.client.HTTPConnection("127.0.0.1", vitrine_port)
        conn.request("POST", "/v1/page?shop=demo", body=body, headers={"Content-Type": "application/json"})
        token = json.loads(conn.getresponse().read())["token"]
        headers = {"Content-Type": "application/json", "X-Visitor-Token": token, "X-Forwarded-For": "81.2.69.160",
                   "User-Agent": "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"}
        rows = {}
        for name, port in (("bare Starlette endpoint", bare_port), ("vitrine POST /v1/page", vitrine_port)):
            run_load(port, headers, body, min(300, args.requests), 1)  # warm-up
            rows[name + ", 1 connection"] = run_load(port, headers, body, args.requests // 2, 1)
            rows[name + f", {args.concurrency} connections"] = run_load(port, headers, body, args.requests, args.concurrency)
    finally:
        for proc in (vitrine, bare):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"{'case':<48} {'req/s':>8} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, r in rows.items():
        print(f"{name:<48} {r['req_per_s']:>8} {r['p50_ms']:>8} {r['p90_ms']:>8} {r['p99_ms']:>8} {r['max_ms']:>8}")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "page_call", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "note": "client in the same machine competes for the 2 cores; one uvicorn worker each",
        "results": rows,
    }, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
