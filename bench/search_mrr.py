"""Benchmark: personalized search against BM25 alone, by known-item search on the demo data.

The demo data has no search log, so each held-out purchase stands in for a search that
ended in that item:
- time split: the newest 20% of the order lines (by time, baskets kept whole) are held out;
  the model is trained with `train_shop` on a store holding only the earlier 80%;
- for each held-out (customer, item) pair (its first purchase in the held-out period), the
  query is one word of the item's title that other items share: the rarest title word (at
  least 3 letters) that at least two titles have, ties broken alphabetically;
- BM25 alone: the index's ranking of the query; personalized: the same candidates re-ranked
  for the customer as they were just before the purchase (their earlier events, newest
  first, and the model trained on the earlier 80%);
- the score is the mean reciprocal rank of the purchased item (0 when it is not among the
  200 candidates).

The blend is swept from 0 to 1 (what `search_personal_weight` sets) and the personal part
is also measured as the model alone and the category affinity alone.

    .venv/bin/python bench/search_mrr.py [--budget 60] [--test-share 0.2]

Prints a table and writes bench/results/search_mrr.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "bench" / "results" / "search_mrr.json"
DATA = ROOT / "server" / "demo" / "data"
SHOP = "demo"
WEIGHTS = [round(0.1 * n, 1) for n in range(11)]

from server.imports import read_catalog, read_interactions  # noqa: E402
from server.models import CatalogItem, Event, Interaction, to_naive_utc  # noqa: E402
from server.recommend.artifact import ModelRegistry  # noqa: E402
from server.recommend.train import train_shop  # noqa: E402
from server.search import CANDIDATES, ScoredItem, SearchService  # noqa: E402
from server.settings import Settings  # noqa: E402
from server.store import open_store  # noqa: E402
from server.store.sql import imported_visitor_id  # noqa: E402

WORD = re.compile(r"[a-z]{3,}")


def title_words(title: str) -> set[str]:
    return set(WORD.findall(title.lower()))


def query_word(item: CatalogItem, frequency: Counter) -> str | None:
    """The rarest word of the title that at least two titles have."""
    shared = [w for w in title_words(item.title) if frequency[w] >= 2]
    return min(shared, key=lambda w: (frequency[w], w)) if shared else None


def time_split(lines: list[Interaction], test_share: float) -> datetime:
    """The first held-out time: the newest test_share of the lines, never splitting a basket."""
    times = sorted(to_naive_utc(i.timestamp) for i in lines)
    return times[min(len(times) - 1, int(len(times) * (1.0 - test_share)))]


def reciprocal_rank(order: list[ScoredItem], item_id: str) -> float:
    for n, scored in enumerate(order):
        if scored.item_id == item_id:
            return 1.0 / (n + 1)
    return 0.0


def blended(results: list[ScoredItem], weight: float, part: str) -> list[ScoredItem]:
    """The personalized order for one weight, from the scores of a weight-0 ranking (which
    is the index's order): exactly what `SearchService.rank` does with that weight."""
    def personal(s: ScoredItem) -> float:
        if part == "model":
            return s.model or 0.0
        if part == "affinity":
            return s.affinity or 0.0
        return s.personal
    return sorted(results, key=lambda s: (not s.in_stock, -(s.tier + (1 - weight) * s.text + weight * personal(s))))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--budget", type=int, default=60, help="training time budget in seconds")
    parser.add_argument("--test-share", type=float, default=0.2)
    args = parser.parse_args()

    catalog = read_catalog(DATA / "catalog.csv")
    lines = read_interactions(DATA / "interactions.csv")
    cut = time_split(lines, args.test_share)
    train = [i for i in lines if to_naive_utc(i.timestamp) < cut]
    held = sorted((i for i in lines if to_naive_utc(i.timestamp) >= cut), key=lambda i: i.timestamp)
    print(f"{len(train):,} order lines before {cut:%Y-%m-%d %H:%M}, {len(held):,} held out")

    data_dir = Path(tempfile.mkdtemp(prefix="vitrine-bench-mrr-"))
    try:
        settings = Settings.load(environ={}, data_dir=data_dir, train_time_budget_s=args.budget)
        store = open_store(settings.resolved_database_url)
        store.migrate()
        store.upsert_items(SHOP, catalog)
        store.import_interactions(SHOP, train)
        started = time.perf_counter()
        report = train_shop(store, settings, SHOP, log=print)
        train_s = time.perf_counter() - started
        model = report.artifact
        assert model is not None
        search = SearchService(store, ModelRegistry(data_dir / "models"), data_dir / "search", 0.0,
                               settings.affinity_half_life_hours)
        search.sync(SHOP, catalog)

        frequency = Counter(w for item in catalog for w in title_words(item.title))
        by_id = {item.item_id: item for item in catalog}
        history: dict[str, list[Event]] = {}
        for n, line in enumerate(sorted(lines, key=lambda i: i.timestamp)):
            history.setdefault(line.user_id, []).append(
                Event(event_id=str(n), type="purchase", ts=to_naive_utc(line.timestamp), item_id=line.item_id))

        variants = [("bm25", 0.0, "both")] + [(f"w={w}", w, "both") for w in WEIGHTS[1:]]
        variants += [(f"model only, w={w}", w, "model") for w in WEIGHTS[1:]]
        variants += [(f"affinity only, w={w}", w, "affinity") for w in WEIGHTS[1:]]
        sums = {name: 0.0 for name, _, _ in variants}
        found = Counter()
        evaluated, skipped, seen = 0, Counter(), set()
        started = time.perf_counter()
        for line in held:
            if (line.user_id, line.item_id) in seen:
                continue
            seen.add((line.user_id, line.item_id))
            item = by_id.get(line.item_id)
            word = query_word(item, frequency) if item else None
            if word is None:
                skipped["no shared title word"] += 1
                continue
            ts = to_naive_utc(line.timestamp)
            before = [e for e in reversed(history[line.user_id]) if e.ts < ts]  # newest first
            results = search.rank(SHOP, word, imported_visitor_id(line.user_id), before, ts, model,
                                  limit=CANDIDATES).items
            evaluated += 1
            if any(s.item_id == line.item_id for s in results):
                found["in candidates"] += 1
            if before:
                found["with earlier history"] += 1
            for name, weight, part in variants:
                sums[name] += reciprocal_rank(blended(results, weight, part), line.item_id)
        rank_s = time.perf_counter() - started
        store.close()
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)

    mrr = {name: round(total / evaluated, 4) for name, total in sums.items()}
    best = max(WEIGHTS[1:], key=lambda w: mrr[f"w={w}"])
    print(f"\n{evaluated:,} held-out purchases evaluated ({found['in candidates']:,} with the item among the "
          f"{CANDIDATES} candidates, {found['with earlier history']:,} by customers with earlier orders); "
          f"skipped: {dict(skipped)}")
    print(f"\n{'ranking':<28} {'MRR':>7}")
    for name, _, _ in variants:
        print(f"{name:<28} {mrr[name]:>7.4f}")
    print(f"\nbest blend weight: {best} (MRR {mrr[f'w={best}']:.4f} vs BM25 {mrr['bm25']:.4f}, "
          f"{mrr[f'w={best}'] / mrr['bm25']:.2f}x)")

    RESULTS.write_text(json.dumps({
        "benchmark": "search_mrr",
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": {
            "data": "demo shop (Online Retail), time split", "test_share": args.test_share,
            "cut": cut.isoformat(), "train_lines": len(train), "held_out_lines": len(held),
            "train_budget_s": args.budget, "train_seconds": round(train_s, 1),
            "model": report.params.describe() if report.params else None,
            "candidates": CANDIDATES, "rank_seconds": round(rank_s, 1),
            "query": "the rarest title word (3+ letters) shared by at least two titles",
        },
        "evaluated": evaluated, "in_candidates": found["in candidates"],
        "with_earlier_history": found["with earlier history"], "skipped": dict(skipped),
        "mrr": mrr, "best_weight": best,
    }, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
