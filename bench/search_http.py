"""Benchmark: `GET /v1/fragments/search` on a 100,000-item synthetic shop, on loopback.

`vitrine serve` (one uvicorn worker, SQLite) serves a shop of 100,000 synthetic gift-shop
titles (bench/search_index.py's generator, categories from the demo's rule set) with a
32-dimension model, next to a bare Starlette endpoint (bench/bare_app.py) in the same run.
Requests come from keep-alive connections in this process, as:
- a new visitor (no token): the plain text ranking;
- returning visitors (500 tokens, each with 10 item views and 2 searches in the store):
  the personalized ranking, reading their events, affinity and model vector per request;
for a single word, two words, a prefix and a typo, and the suggestions as one types.
The target: p99 under 20 ms with one worker.

    .venv/bin/python bench/search_http.py [--items 100000] [--requests 2000]

Prints a table and writes bench/results/search_http.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from urllib.parse import quote

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "search_http.json"
SHOP = "bench"
DIMS = 32
VISITORS = 500

from bench.loadgen import free_port, print_table, run_load, start, start_bare, wait_for  # noqa: E402
from bench.search_index import synthetic_titles  # noqa: E402
from server.identity import TokenSigner  # noqa: E402
from server.models import CatalogItem, Event, utcnow  # noqa: E402
from server.recommend.artifact import save_artifact  # noqa: E402
from server.search import SearchService  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.store import open_store  # noqa: E402
from server.taxonomy import categorize  # noqa: E402

QUERIES = {
    "one word": "bag",
    "two words": "christmas lantern",
    "prefix": "chri",
    "typo": "lanturn",
}


def build_shop(data_dir: Path, n_items: int) -> list[str]:
    """The shop's catalog, index, model and visitors; returns the visitors' tokens."""
    rng = random.Random(7)
    settings = Settings.load(environ={}, data_dir=data_dir)
    (data_dir / "shops").mkdir()
    (data_dir / "shops" / f"{SHOP}.toml").write_text(f'name = "{SHOP}"\ncurrency = "GBP"\n')
    store = open_store(settings.resolved_database_url)
    store.migrate()
    titles = synthetic_titles(n_items, rng)
    items = [
        CatalogItem(f"item-{n}", title, category=categorize(title), price=round(0.5 + (n % 400) / 20, 2),
                    currency="GBP", url=f"/p/item-{n}", image_url=f"/img/item-{n}.svg")
        for n, title in enumerate(titles)
    ]
    started = time.perf_counter()
    store.upsert_items(SHOP, items)
    search = SearchService(store, None, data_dir / "search", settings.search_personal_weight, 168.0)
    search.sync(SHOP, items)
    search.close()
    print(f"catalog: {n_items:,} items stored and indexed in {time.perf_counter() - started:.1f} s")

    vectors = np.random.default_rng(3).normal(0, 0.3, (n_items, DIMS)).astype(np.float32)
    save_artifact(
        data_dir / "models", SHOP, item_ids=[i.item_id for i in items], item_vectors=vectors,
        item_biases=np.zeros(n_items, np.float32), user_ids=["u:nobody"], user_vectors=np.zeros((1, DIMS), np.float32),
        user_feature_names=["country:GB"], user_feature_vectors=np.zeros((1, DIMS), np.float32),
        bought_together={}, popularity=[i.item_id for i in items[:500]], meta={"bench": True},
    )
    signer = TokenSigner(settings.signing_keys(), 86400)
    now = utcnow()
    tokens = []
    for v in range(VISITORS):
        visitor = f"visitor-{v}"
        events = [Event(f"v{v}-view-{n}", "view_item", now - timedelta(hours=n), item_id=f"item-{rng.randrange(n_items)}")
                  for n in range(10)]
        events += [Event(f"v{v}-search-{n}", "search", now - timedelta(hours=n, minutes=30),
                         props={"search_term": rng.choice(list(QUERIES.values()))}) for n in range(2)]
        store.record_events(SHOP, visitor, events)
        tokens.append(signer.sign(SHOP, visitor))
    store.close()
    return tokens


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="vitrine-bench-search-"))
    try:
        tokens = build_shop(data_dir, args.items)
        vitrine_port, bare_port = free_port(), free_port()
        vitrine = start([sys.executable, "-m", "server.cli", "--data-dir", str(data_dir), "serve",
                         "--port", str(vitrine_port)])
        bare = start_bare(bare_port)
        rows: dict[str, dict] = {}
        try:
            wait_for(vitrine_port, "/v1/health")
            wait_for(bare_port, "/")

            def returning(n: int) -> dict:
                return {"X-Visitor-Token": tokens[n % len(tokens)]}

            def path(query: str, extra: str = "") -> str:
                return f"/v1/fragments/search?shop={SHOP}&q={quote(query)}{extra}"

            n, c = args.requests, args.concurrency
            run_load(bare_port, "GET", path("bag"), {}, None, min(300, n), 1)  # warm-up
            rows["bare Starlette endpoint, 1 connection"] = run_load(bare_port, "GET", path("bag"), {}, None, n // 2, 1)
            rows[f"bare Starlette endpoint, {c} connections"] = run_load(bare_port, "GET", path("bag"), {}, None, n, c)
            run_load(vitrine_port, "GET", path("bag"), returning, None, min(300, n), 1)  # warm-up
            rows["search 'bag', new visitor, 1 connection"] = run_load(vitrine_port, "GET", path("bag"), {}, None, n // 2, 1)
            for kind, query in QUERIES.items():
                rows[f"search {kind} '{query}', returning, 1 connection"] = run_load(
                    vitrine_port, "GET", path(query), returning, None, n // 2, 1)
            for connections in (2, c):
                rows[f"search 'bag', returning, {connections} connections"] = run_load(
                    vitrine_port, "GET", path("bag"), returning, None, n, connections)
            rows["suggest 'chri', returning, 1 connection"] = run_load(
                vitrine_port, "GET", path("chri", "&suggest=1"), returning, None, n // 2, 1)
            rows["suggest '' (popular), returning, 1 connection"] = run_load(
                vitrine_port, "GET", path("", "&suggest=1"), returning, None, n // 2, 1)
        finally:
            for proc in (vitrine, bare):
                proc.terminate()
                proc.wait(10)
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    print()
    print_table(rows)
    bad = {name: r["statuses"] for name, r in rows.items() if set(r["statuses"]) != {200}}
    if bad:
        print(f"non-200 answers: {bad}")
    RESULTS.write_text(json.dumps({
        "benchmark": "search_http",
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": {"items": args.items, "dims": DIMS, "visitors_with_history": VISITORS, "workers": 1,
                  "requests": args.requests, "concurrency": args.concurrency, "queries": QUERIES,
                  "page_size": 24, "candidates": 200},
        "results": rows,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
