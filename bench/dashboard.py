"""Benchmark: the dashboard's pages served from the rollups by a real `vitrine serve`.

A year of a large shop's rollups is written straight into a migrated store (SQLite file, or a
new PostgreSQL database): by hour and by day, the shop's totals, the credited orders and 300
keys (40 campaigns, 120 slots, 40 strategies, 100 experiment variants), about 2.7 million
rows, and the totals of 8 experiments and the hold-out. A signed-in client then asks for the
overview over 7, 30 and 90 days, the campaigns and panels page over 30 days and the
experiments page, one after another on one kept-alive connection. Baseline in the same run:
GET /v1/health on the same server and connection.

    .venv/bin/python bench/dashboard.py [--backend sqlite|postgresql|both] [--requests 50]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres]

Prints the timings and writes bench/results/dashboard.json.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import platform
import re
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
RESULTS = ROOT / "bench" / "results" / "dashboard.json"
SHOP = "demo"
EMAIL, PASSWORD = "bench@shop.example", "bench password 1"

import random  # noqa: E402

import sqlalchemy as sa  # noqa: E402

from server.admin.auth import hash_password  # noqa: E402
from server.models import utcnow  # noqa: E402
from server.store import open_store  # noqa: E402
from server.store.schema import experiment_totals, rollups  # noqa: E402
from servers import free_port, healthy, server_env, with_demo_shop  # noqa: E402

KEYS = ([("campaign", f"campaign-{n}") for n in range(40)] + [("slot", f"slot-{n}") for n in range(120)]
        + [("strategy", f"strategy-{n}") for n in range(40)] + [("variant", f"exp-{n % 8}:v{n // 8}") for n in range(100)])
PAGES = [("overview, 7 days", "/admin/demo/?days=7"), ("overview, 30 days", "/admin/demo/?days=30"),
         ("overview, 90 days", "/admin/demo/?days=90"), ("campaigns and panels, 30 days", "/admin/demo/campaigns?days=30"),
         ("experiments", "/admin/demo/experiments")]


ZERO = dict(page_views=0, impressions=0, clicks=0, closes=0, orders=0, revenue=0.0, view_orders=0, view_revenue=0.0,
            visitors=0)


def row(**values) -> dict:
    return {**ZERO, **values}


def fill(store, days: int, now: datetime) -> tuple[int, float]:
    """Rollup rows for `days` days up to now; (rows, seconds)."""
    rng = random.Random(7)
    started = time.perf_counter()
    first = (now - timedelta(days=days - 1)).replace(hour=0, minute=0, second=0, microsecond=0)
    written = 0
    with store.engine.begin() as conn:
        for d in range(days):
            day = first + timedelta(days=d)
            rows = []
            for period, starts in (("day", [day]), ("hour", [day + timedelta(hours=h) for h in range(24)])):
                share = 1 if period == "day" else 1 / 24
                for start in starts:
                    views = int(rng.uniform(20_000, 40_000) * share)
                    rows.append(row(shop=SHOP, period=period, start=start, dimension="total", key="",
                                     page_views=views, impressions=views * 2, clicks=views // 20, orders=views // 60,
                                     revenue=views * 0.6, visitors=views // 3 if period == "day" else 0))
                    rows.append(row(shop=SHOP, period=period, start=start, dimension="credited", key="",
                                     orders=views // 150, revenue=views * 0.25, view_orders=views // 200,
                                     view_revenue=views * 0.15))
                    for dimension, key in KEYS:
                        shown = int(rng.uniform(0, 400) * share * 24 if period == "day" else rng.uniform(0, 400))
                        rows.append(row(shop=SHOP, period=period, start=start, dimension=dimension, key=key,
                                         impressions=shown, clicks=shown // 25, orders=shown // 300,
                                         revenue=shown * 0.1, view_orders=shown // 500, view_revenue=shown * 0.05))
            conn.execute(sa.insert(rollups), rows)
            written += len(rows)
        totals = []
        for exp in [f"exp-{n}" for n in range(8)] + ["holdout"]:
            variants = ("holdout", "personalized") if exp == "holdout" else [f"v{n}" for n in range(100) if n % 8 == 0][:3]
            for variant in variants:
                visitors = rng.randrange(20_000, 40_000)
                conversions = int(visitors * rng.uniform(0.03, 0.05))
                totals.append(dict(shop=SHOP, experiment=exp, variant=variant, visitors=visitors, conversions=conversions,
                                   orders=conversions + conversions // 5, revenue=conversions * 31.0,
                                   revenue_sq=conversions * 31.0 ** 2 * 1.4, first_exposed=first, last_exposed=now))
        conn.execute(sa.insert(experiment_totals), totals)
    return written, time.perf_counter() - started


class Client:
    """One kept-alive HTTP connection with the session's cookies."""

    def __init__(self, port: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: str | None = None) -> tuple[int, str]:
        headers = {"Cookie": "; ".join(f"{k}={v}" for k, v in self.cookies.items())}
        if body is not None:
            headers["Content-Type"] = "application/x-www-form-urlencoded"
        self.conn.request(method, path, body=body, headers=headers)
        response = self.conn.getresponse()
        text = response.read().decode()
        for header in response.headers.get_all("set-cookie") or []:
            name, _, rest = header.partition("=")
            self.cookies[name] = rest.split(";", 1)[0]
        return response.status, text

    def sign_in(self) -> None:
        status, page = self.request("GET", "/admin/login")
        token = re.search(r'name="csrf" value="([^"]+)"', page).group(1)
        status, _ = self.request("POST", "/admin/login", urlencode({"csrf": token, "email": EMAIL, "password": PASSWORD}))
        assert status == 303, f"sign-in failed: {status}"


def timed(client: Client, path: str, n: int) -> dict:
    times = []
    for _ in range(n):
        started = time.perf_counter()
        status, _ = client.request("GET", path)
        times.append((time.perf_counter() - started) * 1000)
        assert status == 200, f"{path}: {status}"
    times.sort()
    return {"p50_ms": round(statistics.median(times), 2), "p95_ms": round(times[int(len(times) * 0.95) - 1], 2),
            "max_ms": round(times[-1], 2)}


def run_backend(url: str, data_dir: Path, requests: int) -> dict:
    now = utcnow()
    store = open_store(url)
    try:
        store.migrate()
        rows, took = fill(store, 365, now)
        store.save_admin_user(EMAIL, hash_password(PASSWORD), SHOP, now)
        if url.startswith("postgresql"):
            with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(sa.text("VACUUM ANALYZE rollups"))
    finally:
        store.close()
    print(f"  {rows:,} rollup rows written in {took:.0f} s", flush=True)
    port = free_port()
    env = server_env(VITRINE_DATABASE_URL=url, VITRINE_SECRET_KEYS="bench-key")
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "server.cli", "--data-dir", str(data_dir), "serve", "--port", str(port)],
                               cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not healthy(f"http://127.0.0.1:{port}"):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the server did not start:\n{(data_dir / 'server.log').read_text()}")
            time.sleep(0.2)
        client = Client(port)
        client.sign_in()
        for _, path in PAGES:  # warm: templates compiled, connections opened
            client.request("GET", path)
        out = {"rollup_rows": rows, "baseline: GET /v1/health": timed(client, "/v1/health", requests)}
        for name, path in PAGES:
            out[name] = timed(client, path, requests)
        return out
    finally:
        process.terminate()
        process.wait(10)
        log.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--requests", type=int, default=50)
    args = parser.parse_args()
    results = {"machine": platform.processor() or platform.machine(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "requests": args.requests,
               "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "backends": {}}
    for backend in ("sqlite", "postgresql") if args.backend == "both" else (args.backend,):
        print(f"{backend}:", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            data_dir = with_demo_shop(Path(tmp))
            drop = None
            if backend == "sqlite":
                url = f"sqlite:///{data_dir / 'vitrine.db'}"
            else:
                name = f"vitrine_bench_{secrets.token_hex(4)}"
                admin = sa.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                url = sa.engine.make_url(args.postgres_url).set(database=name).render_as_string(hide_password=False)
                drop = (admin, name)
            try:
                found = results["backends"][backend] = run_backend(url, data_dir, args.requests)
            finally:
                if drop is not None:
                    admin, name = drop
                    with admin.connect() as conn:
                        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    admin.dispose()
        for name, numbers in found.items():
            if isinstance(numbers, dict):
                print(f"  {name:<32} p50 {numbers['p50_ms']:>7.1f} ms   p95 {numbers['p95_ms']:>7.1f} ms", flush=True)
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
