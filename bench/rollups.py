"""Benchmark: the rollup job (Store.roll_up, server/store/measure_sql.py) over simulated traffic.

The events are the demo's simulated visitors (server/demo/simulate.py: page views, the
hero's and the panel's impressions and clicks, exposures to the hero experiment and the
hold-out, about 1% of visits ending in an order), written into a migrated store (an SQLite
file, or a new PostgreSQL database). Baseline in the same run: one pass reading every event
row in the order the job reads them. Then the reports' reads from the rollups: a month of
the shop's daily totals, and the experiment report (the statistics included).

    .venv/bin/python bench/rollups.py [--events 1000000] [--backend sqlite|postgresql|both]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--results PATH]

Prints the timings and writes bench/results/rollups.json (or --results).
"""

from __future__ import annotations

import argparse
import json
import platform
import secrets
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "rollups.json"

import sqlalchemy as sa  # noqa: E402

from server.demo.simulate import World, simulate  # noqa: E402
from server.imports import read_catalog  # noqa: E402
from server.measure.attribution import Window  # noqa: E402
from server.measure.report import build_report  # noqa: E402
from server.models import utcnow  # noqa: E402
from server.shops import parse_shop_config  # noqa: E402
from server.store import open_store  # noqa: E402
from server.store.schema import events  # noqa: E402

EVENTS_PER_VISITOR = 8.5  # what the simulated visitors make, on average


def run(url: str, n_events: int) -> dict:
    store = open_store(url)
    store.migrate()
    shop = parse_shop_config("demo", ROOT / "server" / "demo" / "demo.toml")
    items = read_catalog(ROOT / "server" / "demo" / "data" / "catalog.csv")
    days = 30
    world = World(visitors_per_day=max(1, int(n_events / EVENTS_PER_VISITOR / days)), days=days, seed=11)
    started = time.perf_counter()
    made = simulate(store, shop, items, world)
    written_s = time.perf_counter() - started
    with store.engine.connect() as conn:
        started = time.perf_counter()
        rows = 0
        for _ in conn.execution_options(yield_per=5000).execute(sa.select(events).order_by(events.c.id)):
            rows += 1
        baseline_s = time.perf_counter() - started
    started = time.perf_counter()
    books = lambda s: shop.audience_book  # noqa: E731
    rolled = store.roll_up(lambda s: Window(), utcnow(), lag_s=0, budget_s=1e9, audiences=books)
    rollup_s = time.perf_counter() - started
    now = utcnow()
    started = time.perf_counter()
    totals = store.rollups("demo", "day", now - timedelta(days=31), now + timedelta(days=1), dimension="total")
    overview_ms = (time.perf_counter() - started) * 1000
    started = time.perf_counter()
    report = build_report(store, shop)
    report_ms = (time.perf_counter() - started) * 1000
    again = time.perf_counter()
    idle = store.roll_up(lambda s: Window(), utcnow(), lag_s=0, audiences=books)
    idle_ms = (time.perf_counter() - again) * 1000
    store.close()
    return {
        "events": made.events, "visitors": made.visitors, "orders": made.orders, "write_s": round(written_s, 1),
        "baseline_read_s": round(baseline_s, 2), "baseline_events_per_s": round(rows / baseline_s),
        "rollup_s": round(rollup_s, 1), "rollup_events_per_s": round(rolled.events / rollup_s),
        "batches": rolled.batches, "credits": rolled.credited,
        "month_of_daily_totals_ms": round(overview_ms, 1), "daily_rows": len(totals),
        "report_ms": round(report_ms, 1), "report_experiments": len(report["experiments"]),
        "idle_rollup_ms": round(idle_ms, 1), "idle_events": idle.events,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=["sqlite", "postgresql", "both"], default="sqlite")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--results", type=Path, default=RESULTS)
    args = parser.parse_args()
    commit = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    results: dict = {"machine": platform.processor() or platform.machine(), "at": datetime.utcnow().isoformat(timespec="seconds"),
                     "commit": commit, "events_asked": args.events, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        if args.backend in ("sqlite", "both"):
            results["runs"]["sqlite"] = run(f"sqlite:///{tmp}/rollups.db", args.events)
            print_run("sqlite", results["runs"]["sqlite"])
        if args.backend in ("postgresql", "both"):
            name = f"vitrine_bench_{secrets.token_hex(4)}"
            admin = sa.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
            try:
                results["runs"]["postgresql"] = run(args.postgres_url.rsplit("/", 1)[0] + f"/{name}", args.events)
                print_run("postgresql", results["runs"]["postgresql"])
            finally:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                admin.dispose()
    args.results.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {args.results}")


def print_run(backend: str, r: dict) -> None:
    print(f"\n{backend}: {r['events']:,} events of {r['visitors']:,} visitors ({r['orders']:,} orders), written in {r['write_s']} s")
    print(f"  {'case':<44} {'time':>10} {'events/s':>12}")
    print(f"  {'baseline: read every event row once':<44} {r['baseline_read_s']:>9} s {r['baseline_events_per_s']:>12,}")
    print(f"  {'roll up every event':<44} {r['rollup_s']:>9} s {r['rollup_events_per_s']:>12,}")
    print(f"  {'roll up again, nothing new':<44} {r['idle_rollup_ms']:>8} ms")
    print(f"  {'a month of daily totals (the overview)':<44} {r['month_of_daily_totals_ms']:>8} ms")
    print(f"  {'the experiment report with its statistics':<44} {r['report_ms']:>8} ms")


if __name__ == "__main__":
    main()
