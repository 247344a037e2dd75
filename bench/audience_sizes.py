"""Benchmark: `vitrine audiences` (Store.audience_sizes) over a million generated visitors.

The visitors are written straight into a migrated store (SQLite file, or a new PostgreSQL
database), with a shop's mix: most come once and look at a few items, a quarter come back,
one in seven has ordered (some long ago), a few have a cart, a few signed up, some have long
histories (up to the state's 200 events) with searches. Three sets of audiences are counted:
- `builtin`: the built-in audiences alone (columns only);
- `demo`: the demo shop's config (built-ins, a cart value, category views, a visit source);
- `history`: rules that read the state's JSON for most visitors (categories viewed, searches,
  cart categories), the costly kind.
Baselines in the same run: one pass counting the rows, and one pass reading every state's
JSON once.

    .venv/bin/python bench/audience_sizes.py [--visitors 1000000] [--backend sqlite|postgresql|both]
        [--postgres-url postgresql+psycopg://postgres@127.0.0.1:5432/postgres] [--repeat 3]

Prints the timings and writes bench/results/audience_sizes.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import secrets
import statistics
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "audience_sizes.json"
SHOP = "bench"
EPOCH = datetime(1970, 1, 1)

import sqlalchemy as sa  # noqa: E402

from server.audiences import AudiencesConfig, compile_audiences  # noqa: E402
from server.imports import read_catalog  # noqa: E402
from server.models import utcnow  # noqa: E402
from server.shops import parse_shop_config  # noqa: E402
from server.store import open_store  # noqa: E402
from server.store.schema import visitors  # noqa: E402

HISTORY_RULES = {"custom": [
    {"id": "saw_christmas", "viewed_categories": "Christmas"},
    {"id": "christmas_viewers", "category_views": {"category": "Christmas", "min": 3}},
    {"id": "bag_searchers", "searches": {"contains": "bag"}},
    {"id": "gift_cart", "cart_categories": "Gifts"},
    {"id": "returning_bag_searchers", "audience": "returning", "searches": {"contains": "bag"}},
]}


def generate(n: int, item_ids: list[str], now: datetime, rng: random.Random):
    """Rows of the visitors table, in batches of 10,000."""
    countries = ["GB"] * 60 + ["US"] * 12 + ["DE"] * 8 + ["FR"] * 8 + ["IE"] * 5 + ["NL"] * 4 + [""] * 3
    devices = ["mobile"] * 55 + ["desktop"] * 40 + ["tablet"] * 5
    mediums = [("direct", "", "")] * 40 + [("organic", "google", "")] * 30 + [("paid", "google", "winter")] * 6 + \
        [("paid", "facebook", "winter")] * 4 + [("social", "facebook", "")] * 10 + [("email", "newsletter", "spring")] * 5 \
        + [("referral", "blog.example", "")] * 5
    terms = ["bag", "christmas lights", "candle", "mug", "tea towel", "gift bag", "lantern", "cushion"]
    batch = []
    for k in range(n):
        kind = rng.random()
        first_seen = now - timedelta(days=rng.uniform(0, 395))
        visits, orders, revenue, last_order = 1, 0, 0.0, None
        if kind < 0.55:
            events = rng.randint(0, 3)
        elif kind < 0.80:
            visits, events = rng.randint(2, 8), rng.randint(5, 40)
        elif kind < 0.95:
            visits, events = rng.randint(1, 10), rng.randint(3, 60)
            orders = min(12, int(rng.expovariate(0.5)) + 1)
            revenue = round(sum(rng.uniform(5, 80) for _ in range(orders)), 2)
            last_order = now - timedelta(days=rng.uniform(0, 700))
        else:
            visits, events = rng.randint(5, 30), rng.randint(100, 200)
        last_seen = min(now, first_seen + timedelta(days=rng.uniform(0, 30) * (visits - 1)))
        if rng.random() < 0.02:
            last_seen = now - timedelta(minutes=rng.uniform(0, 20))  # in a visit now
        seconds = (last_seen - EPOCH).total_seconds()
        recent = []
        for e in range(events):
            ts = round(seconds - e * rng.uniform(30, 3600), 3)
            if rng.random() < 0.05:
                recent.append(["search", ts, [], rng.choice(terms)])
            else:
                recent.append([rng.choice(("view_item", "page_view")), ts, [rng.choice(item_ids)], ""])
        state: dict | None = {"v": 1, "recent": recent, "closed": []} if events else None
        cart_at = signed_up = None
        if rng.random() < 0.04:
            cart_at = now - timedelta(minutes=rng.uniform(0, 48 * 60))
            at = (cart_at - EPOCH).total_seconds()
            state = state or {"v": 1, "recent": [], "closed": []}
            state["cart"] = [[rng.choice(item_ids), rng.randint(1, 3), round(rng.uniform(1, 20), 2), at]
                             for _ in range(rng.randint(1, 4))]
        if rng.random() < 0.02:
            signed_up = first_seen + timedelta(hours=rng.uniform(0, 48))
            state = state or {"v": 1, "recent": [], "closed": []}
            state["signed_up"] = (signed_up - EPOCH).total_seconds()
        medium, source, campaign = rng.choice(mediums)
        batch.append(dict(
            shop=SHOP, visitor_id=f"v{k:08d}", first_seen=first_seen, last_seen=last_seen, visits=visits,
            page_views=visits * rng.randint(1, 6), orders=orders, revenue=revenue, last_order_at=last_order,
            country=rng.choice(countries), device_class=rng.choice(devices), source=medium, state=state,
            visit_page_views=rng.randint(1, 6), previous_seen=first_seen if visits > 1 else None,
            landing_page=rng.choice(("/", "/", "/category/christmas", "/sale/winter", "/product/22632")),
            referrer_domain="google.com" if medium == "organic" else "", source_name=source, utm_campaign=campaign,
            cart_at=cart_at, signed_up_at=signed_up,
        ))
        if len(batch) == 10_000:
            yield batch
            batch = []
    if batch:
        yield batch


def fill(store, n: int, item_ids: list[str], now: datetime) -> float:
    started = time.perf_counter()
    rng = random.Random(7)
    with store.engine.begin() as conn:
        for batch in generate(n, item_ids, now, rng):
            conn.execute(sa.insert(visitors), batch)
    return time.perf_counter() - started


def books(shop_items) -> dict:
    builtin = compile_audiences(AudiencesConfig())[0]
    demo = parse_shop_config("demo", ROOT / "server" / "demo" / "demo.toml").audience_book
    history = compile_audiences(AudiencesConfig.model_validate(HISTORY_RULES))[0]
    return {"builtin": builtin, "demo": demo, "history": history}


BASELINES = {
    # one pass over the shop's rows, reading a column before the state and none of the JSON
    "count_rows": "SELECT count(*), sum(orders) FROM visitors WHERE shop = 'bench'",
    # the same pass reading every stored state's JSON once (the floor of any history rule)
    "read_every_state": {
        "sqlite": "SELECT count(*) FROM visitors v, json_each(v.state, '$.recent') r WHERE v.shop = 'bench'",
        "postgresql": "SELECT count(*) FROM visitors v, jsonb_array_elements(v.state::jsonb -> 'recent') r "
                      "WHERE v.shop = 'bench'",
    },
}


def measure(store, now: datetime, repeat: int) -> dict:
    found = {}
    for name, sql in BASELINES.items():
        sql = sql if isinstance(sql, str) else sql[store.dialect]
        times = []
        for _ in range(repeat):
            with store.engine.connect() as conn:
                started = time.perf_counter()
                conn.execute(sa.text(sql)).all()
                times.append(time.perf_counter() - started)
        found[name] = {"seconds_min": round(min(times), 3), "seconds_median": round(statistics.median(times), 3)}
        print(f"  baseline {name}: {min(times):6.2f} s", flush=True)
    for name, book in books(None).items():
        times, sizes = [], None
        for _ in range(repeat):
            result = store.audience_sizes(SHOP, book, now, 1800)
            times.append(result.seconds)
            sizes = result
        found[name] = {"seconds_min": round(min(times), 3), "seconds_median": round(statistics.median(times), 3),
                       "visitors": sizes.visitors, "audiences": len(sizes.sizes), "sizes": sizes.sizes}
        print(f"  {name:<8} {len(sizes.sizes):>2} audiences: {min(times):6.2f} s (median {statistics.median(times):.2f} s)"
              f" over {sizes.visitors:,} visitors", flush=True)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visitors", type=int, default=1_000_000)
    parser.add_argument("--backend", choices=("sqlite", "postgresql", "both"), default="both")
    parser.add_argument("--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    items = read_catalog(ROOT / "server" / "demo" / "data" / "catalog.csv", None)
    item_ids = [i.item_id for i in items]
    now = utcnow()
    results = {"visitors": args.visitors, "machine": platform.processor() or platform.machine(),
               "cpus": os.cpu_count(), "python": platform.python_version(),
               "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "backends": {}}
    backends = ("sqlite", "postgresql") if args.backend == "both" else (args.backend,)
    for backend in backends:
        with tempfile.TemporaryDirectory() as tmp:
            if backend == "sqlite":
                url, drop = f"sqlite:///{Path(tmp) / 'bench.db'}", None
            else:
                name = f"vitrine_bench_{secrets.token_hex(4)}"
                admin = sa.create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
                with admin.connect() as conn:
                    conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
                url = sa.engine.make_url(args.postgres_url).set(database=name).render_as_string(hide_password=False)
                drop = (admin, name)
            store = open_store(url)
            try:
                store.migrate()
                store.upsert_items(SHOP, items)
                print(f"{backend}: writing {args.visitors:,} visitors ...", flush=True)
                took = fill(store, args.visitors, item_ids, now)
                if backend == "postgresql":
                    with store.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                        conn.execute(sa.text("VACUUM ANALYZE visitors"))
                size = Path(url.removeprefix("sqlite:///")).stat().st_size if backend == "sqlite" else None
                print(f"{backend}: written in {took:.0f} s", flush=True)
                results["backends"][backend] = {"fill_seconds": round(took, 1), "database_bytes": size,
                                                **measure(store, now, args.repeat)}
            finally:
                store.close()
                if drop is not None:
                    admin, name = drop
                    with admin.connect() as conn:
                        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
                    admin.dispose()
    RESULTS.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
