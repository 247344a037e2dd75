"""Shared pieces of the HTTP benchmarks: free ports, starting servers, a keep-alive load loop,
wrk runs with their statuses counted, CPU time of process trees, and the machine's facts."""

from __future__ import annotations

import http.client
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
WRK_SCRIPT = ROOT / "bench" / "wrk_report.lua"
# uvicorn's fastest settings, spelled out so that a missing uvloop or httptools fails
# loudly instead of measuring asyncio's loop and h11.
UVICORN_FAST = ["--loop", "uvloop", "--http", "httptools"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(port: int, path: str, timeout: float = 120, proc: subprocess.Popen | None = None) -> None:
    """Until `path` answers; gives up after `timeout` seconds, or as soon as `proc` exits."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"server for port {port} exited with code {proc.returncode} before answering")
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", path)
            conn.getresponse().read()
            return
        except OSError:
            time.sleep(0.2)
    raise SystemExit(f"server on port {port} did not start")


def start(args: list[str], env: dict | None = None, cwd: Path = ROOT, log: Path | None = None) -> subprocess.Popen:
    """A server process; its output goes to `log` (appended) or nowhere."""
    out = open(log, "ab") if log else subprocess.DEVNULL
    try:
        return subprocess.Popen(args, cwd=cwd, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT)
    finally:
        if log:
            out.close()


def start_bare(port: int, log: Path | None = None) -> subprocess.Popen:
    """The baseline: bench/bare_app.py under uvicorn, one worker, uvloop + httptools, no access log."""
    return start([sys.executable, "-m", "uvicorn", "bench.bare_app:app", "--port", str(port),
                  "--log-level", "warning", "--no-access-log", *UVICORN_FAST], log=log)


def stop(proc: subprocess.Popen, timeout: float = 15) -> None:
    """SIGTERM (uvicorn shuts its workers down), then SIGKILL if it lingers."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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


# -- wrk ---------------------------------------------------------------------------------
def require_wrk() -> str:
    """The wrk binary, or exit with how to install it."""
    path = shutil.which("wrk")
    if path is None:
        raise SystemExit(
            "wrk is not installed. On Debian or Ubuntu: `sudo apt-get install -y wrk` "
            "(as root: `apt-get update && apt-get install -y wrk`); elsewhere, from the system's packages"
        )
    return path


def tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds used so far by process `pid` and all its descendants (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    parents: dict[int, int] = {}
    times: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        times[int(entry)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += times.get(current, 0.0)
        todo += [child for child, parent in parents.items() if parent == current]
    return total


def machine_busy_seconds() -> float:
    """CPU seconds all processes of the machine have used so far, every core added up (Linux)."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    idle = ticks[3] + ticks[4]  # idle, iowait
    return (sum(ticks[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def run_wrk(
    url: str, connections: int, duration_s: float, *, method: str = "GET", headers: dict | None = None,
    body: bytes | None = None, threads: int = 1, timeout_s: float = 10, env: dict | None = None,
    server_pid: int | None = None,
) -> dict:
    """One wrk run (bench/wrk_report.lua counts every status): rate, latency, errors, CPU used.

    `env` goes to the Lua script (WRK_EVENTS=1 and friends). CPU is measured for wrk itself
    and, with `server_pid`, for the server's process tree, in % of one core; what the rest of
    the machine used meanwhile is `others_cpu_pct` (other people's work on a shared machine)."""
    wrk = require_wrk()
    # wrk takes whole seconds.
    args = [wrk, "-t", str(max(1, min(threads, connections))), "-c", str(connections),
            "-d", f"{max(1, round(duration_s))}s", "--timeout", f"{max(1, round(timeout_s))}s", "-s", str(WRK_SCRIPT)]
    for name, value in (headers or {}).items():
        args += ["-H", f"{name}: {value}"]
    args.append(url)
    wrk_env = {**os.environ, "WRK_METHOD": method, **(env or {})}
    body_file = None
    if body is not None:
        with tempfile.NamedTemporaryFile("wb", prefix="wrk-body-", delete=False) as f:
            f.write(body)
        body_file = Path(f.name)
        wrk_env["WRK_BODY_FILE"] = str(body_file)
    server_before = tree_cpu_seconds(server_pid) if server_pid else 0.0
    busy_before = machine_busy_seconds()
    own_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        done = subprocess.run(args, env=wrk_env, capture_output=True, text=True, timeout=duration_s + timeout_s + 30)
    finally:
        if body_file:
            body_file.unlink(missing_ok=True)
    wall = time.perf_counter() - started
    own_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    server_cpu = tree_cpu_seconds(server_pid) - server_before if server_pid else None
    busy = machine_busy_seconds() - busy_before
    line = next((l for l in done.stdout.splitlines() if l.startswith("WRK_JSON ")), None)
    if done.returncode != 0 or line is None:
        raise SystemExit(f"wrk failed (exit {done.returncode}): {done.stderr.strip() or done.stdout.strip()}")
    raw = json.loads(line.removeprefix("WRK_JSON "))
    seconds = raw["duration_us"] / 1e6
    lat = raw["latency_us"]
    statuses = {int(k): v for k, v in sorted(raw["statuses"].items(), key=lambda kv: int(kv[0]))}
    ok = sum(v for k, v in statuses.items() if 200 <= k < 300)
    errors = raw["errors"]
    wrk_cpu = (own_after.ru_utime + own_after.ru_stime) - (own_before.ru_utime + own_before.ru_stime)
    return {
        "connections": connections, "threads": int(args[2]), "duration_s": round(seconds, 2),
        "requests": raw["requests"], "req_per_s": round(raw["requests"] / seconds, 1),
        "ok_per_s": round(ok / seconds, 1), "statuses": statuses, "non_2xx": raw["requests"] - ok,
        "socket_errors": {k: errors[k] for k in ("connect", "read", "write")}, "timeouts": errors["timeout"],
        "p50_ms": lat["p50"] / 1000, "p75_ms": lat["p75"] / 1000, "p90_ms": lat["p90"] / 1000,
        "p99_ms": lat["p99"] / 1000, "p99_9_ms": lat["p99_9"] / 1000, "max_ms": lat["max"] / 1000,
        "mean_ms": round(lat["mean"] / 1000, 3),
        "over_budget_pct": round(raw["over_budget_pct"], 2), "budget_ms": raw["budget_ms"],
        "wrk_cpu_pct": round(100 * wrk_cpu / wall, 1),
        "server_cpu_pct": round(100 * server_cpu / wall, 1) if server_cpu is not None else None,
        "others_cpu_pct": round(max(0.0, 100 * (busy - wrk_cpu - (server_cpu or 0.0)) / wall), 1),
    }


def machine_info(tree: Path = ROOT) -> dict:
    """CPU count and model, Python, and the commit of `tree` (with whether it had uncommitted changes)."""
    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True, check=True).stdout.strip()
        except (OSError, subprocess.CalledProcessError):
            return ""

    model = ""
    try:
        with open("/proc/cpuinfo") as f:
            model = next((l.split(":", 1)[1].strip() for l in f if l.startswith("model name")), "")
    except OSError:
        pass
    wrk_version = ""
    if shutil.which("wrk"):
        wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" [")[0].strip()
    return {
        "cpus": os.cpu_count(), "cpu_model": model, "load_average_1m": round(os.getloadavg()[0], 2),
        "python": platform.python_version(), "platform": platform.platform(), "wrk": wrk_version,
        "commit": git("rev-parse", "HEAD"), "uncommitted_changes": bool(git("status", "--porcelain", "--untracked-files=no")),
    }
