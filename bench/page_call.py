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
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.loadgen import free_port, print_table, run_load, start, start_bare, wait_for  # noqa: E402

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="vitrine-bench-"))
    vitrine_port, bare_port = free_port(), free_port()
    py = sys.executable
    vitrine = start([py, "-m", "server.cli", "--data-dir", str(data_dir), "demo", "--port", str(vitrine_port)])
    bare = start_bare(bare_port)
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
            path = "/v1/page?shop=demo"
            run_load(port, "POST", path, headers, body, min(300, args.requests), 1)  # warm-up
            rows[name + ", 1 connection"] = run_load(port, "POST", path, headers, body, args.requests // 2, 1)
            rows[name + f", {args.concurrency} connections"] = run_load(
                port, "POST", path, headers, body, args.requests, args.concurrency)
    finally:
        for proc in (vitrine, bare):
            proc.terminate()
            proc.wait(10)
        shutil.rmtree(data_dir, ignore_errors=True)

    print_table(rows)
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
