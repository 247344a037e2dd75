"""Benchmark: full-text candidates (top-200) over 100,000 synthetic gift-shop titles.

Vitrine's `SearchIndex` (tantivy) next to two baselines on the same titles and the same
1,000 queries (single words, two words, prefixes, typos):
- SQLite FTS5 (stdlib sqlite3, porter stemmer); it ORs the words and has no typo tolerance,
  so its typo queries mostly find nothing; they are timed anyway;
- plain tantivy: one stemmed title field and a BM25 OR of the query's words, no prefix or
  typo matching, and no item ids fetched: the floor under `SearchIndex.search`.
Also times `suggest` and `spelling`, which the search box calls as the visitor types.

    .venv/bin/python bench/search_index.py [--items 100000] [--queries 1000]

Prints a table and writes bench/results/search_index.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.loadgen import percentiles  # noqa: E402
RESULTS = ROOT / "bench" / "results" / "search_index.json"
LIMIT = 200

import tantivy  # noqa: E402

from server.models import CatalogItem  # noqa: E402
from server.search_index import SearchIndex  # noqa: E402

VOCABULARY = """
jumbo bag red retrospot lunch pink polka dot christmas tree decoration hand warmer white
metal lantern set tea light candles heart holder hanging glass star wooden frame vintage
doormat union jack paper chain kit charlotte mini jam ceramic mug cake tin regency
teacup saucer alarm clock bakelike green blue ivory pantry storage jar cushion cover
bunting party retro spot cards wrap gift tags ribbon bottle hot water chocolate cosy
garden bird feeder zinc planter watering can parasol umbrella kids childrens apron
spaceman dolly girl skull pirate woodland animal rabbit owl bunny easter egg card
birthday wedding snowflake reindeer santa bauble wreath angel bell candle tealight
lights string fairy photo album notebook pencil sharpener ruler eraser sticker sheet
napkins plates cups straws baking cases cutlery kitchen scales spoon tray tissue box
magnet hook peg coat rack shelf drawer knob sign enamel flag bucket basket picnic
""".split()
TITLE_WORDS = (3, 6)


def synthetic_titles(n: int, rng: random.Random) -> list[str]:
    # Zipf-like word popularity, so some words are in many titles and some in few.
    weights = [1 / (rank + 1) ** 0.8 for rank in range(len(VOCABULARY))]
    return [" ".join(rng.choices(VOCABULARY, weights, k=rng.randint(*TITLE_WORDS))).title() for _ in range(n)]


def typo(word: str, rng: random.Random) -> str:
    i = rng.randrange(1, len(word) - 1)
    kind = rng.choice(("swap", "drop", "replace"))
    if kind == "swap":
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if kind == "drop":
        return word[:i] + word[i + 1 :]
    return word[:i] + rng.choice("aeioulnrst") + word[i + 1 :]


def synthetic_queries(n: int, rng: random.Random) -> dict[str, list[str]]:
    long_words = [w for w in VOCABULARY if len(w) >= 5]
    quarter = n // 4
    return {
        "single word": [rng.choice(VOCABULARY) for _ in range(quarter)],
        "two words": [f"{rng.choice(VOCABULARY)} {rng.choice(VOCABULARY)}" for _ in range(quarter)],
        "prefix": [w[: rng.randint(3, len(w) - 1)] for w in rng.choices(long_words, k=quarter)],
        "typo": [typo(w, rng) for w in rng.choices(long_words, k=n - 3 * quarter)],
    }


def fts5_expression(kind: str, query: str) -> str:
    words = [f'"{w}"' for w in query.lower().split()]
    if kind == "prefix":
        return words[0] + "*"
    return " OR ".join(words)


def timed(run: Callable[[str], object], queries: list[str]) -> tuple[list[float], int]:
    times, found = [], 0
    for query in queries:
        started = time.perf_counter()
        hits = run(query)
        times.append(time.perf_counter() - started)
        found += bool(hits)
    return times, found


def bench_tantivy(items: list[CatalogItem], queries: dict[str, list[str]], folder: Path) -> dict:
    index = SearchIndex(folder / "tantivy")
    started = time.perf_counter()
    index.upsert(items)
    indexing_s = time.perf_counter() - started
    started = time.perf_counter()
    index.upsert([CatalogItem(item.item_id, f"{item.title} Gift Set") for item in items[:100]])
    update_s = time.perf_counter() - started
    result: dict = {"indexing_s": round(indexing_s, 3), "update_100_items_s": round(update_s, 3), "queries": {}}
    everything: list[float] = []
    for round_ in range(2):  # the first round warms the page cache and tantivy's automaton builders
        for kind, batch in queries.items():
            times, found = timed(lambda q: index.search(q, LIMIT), batch)
            result["queries"][kind] = {**percentiles(times), "with_hits": found}
            if round_:
                everything += times
    result["queries"]["all"] = percentiles(everything)
    result["suggest"] = percentiles(timed(index.suggest, queries["prefix"])[0])
    after_a_word = [f"{pair.split()[0]} {prefix}" for pair, prefix in zip(queries["two words"], queries["prefix"])]
    result["suggest_after_a_word"] = percentiles(timed(index.suggest, after_a_word)[0])
    result["spelling"] = percentiles(timed(index.spelling, queries["typo"])[0])
    index.close()
    return result


def bench_plain_tantivy(items: list[CatalogItem], queries: dict[str, list[str]], folder: Path) -> dict:
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("title", tokenizer_name="en_stem")
    schema = builder.build()
    (folder / "plain").mkdir()
    index = tantivy.Index(schema, path=str(folder / "plain"))
    started = time.perf_counter()
    writer = index.writer(heap_size=128_000_000)
    for item in items:
        writer.add_document(tantivy.Document(title=item.title))
    writer.commit()
    writer.wait_merging_threads()
    indexing_s = time.perf_counter() - started
    index.reload()
    searcher = index.searcher()
    stem = tantivy.TextAnalyzerBuilder(tantivy.Tokenizer.simple()).filter(tantivy.Filter.lowercase()).filter(
        tantivy.Filter.stemmer("english")).build()

    def search(text: str) -> list:
        terms = [(tantivy.Occur.Should, tantivy.Query.term_query(schema, "title", t)) for t in stem.analyze(text)]
        return searcher.search(tantivy.Query.boolean_query(terms), LIMIT, count=False).hits

    result: dict = {"indexing_s": round(indexing_s, 3), "queries": {}}
    everything: list[float] = []
    for round_ in range(2):
        for kind, batch in queries.items():
            times, found = timed(search, batch)
            result["queries"][kind] = {**percentiles(times), "with_hits": found}
            if round_:
                everything += times
    result["queries"]["all"] = percentiles(everything)
    return result


def bench_fts5(items: list[CatalogItem], queries: dict[str, list[str]], folder: Path) -> dict:
    db = sqlite3.connect(folder / "fts5.sqlite3")
    db.execute("CREATE VIRTUAL TABLE titles USING fts5(item_id UNINDEXED, title, tokenize='porter unicode61')")
    started = time.perf_counter()
    with db:
        db.executemany("INSERT INTO titles VALUES (?, ?)", ((item.item_id, item.title) for item in items))
    indexing_s = time.perf_counter() - started
    sql = "SELECT item_id, rank FROM titles WHERE titles MATCH ? ORDER BY rank LIMIT ?"
    result: dict = {"indexing_s": round(indexing_s, 3), "queries": {}}
    everything: list[float] = []
    for round_ in range(2):
        for kind, batch in queries.items():
            times, found = timed(lambda q: db.execute(sql, (fts5_expression(kind, q), LIMIT)).fetchall(), batch)
            result["queries"][kind] = {**percentiles(times), "with_hits": found}
            if round_:
                everything += times
    result["queries"]["all"] = percentiles(everything)
    db.close()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=1000)
    args = parser.parse_args()
    rng = random.Random(5)
    items = [CatalogItem(f"item-{i}", title) for i, title in enumerate(synthetic_titles(args.items, rng))]
    queries = synthetic_queries(args.queries, rng)
    print(f"{args.items:,} synthetic titles from {len(VOCABULARY)} words; {args.queries} queries; top {LIMIT}")

    with tempfile.TemporaryDirectory() as tmp:
        tantivy_result = bench_tantivy(items, queries, Path(tmp))
        plain_result = bench_plain_tantivy(items, queries, Path(tmp))
        fts5_result = bench_fts5(items, queries, Path(tmp))

    engines = {"SearchIndex": tantivy_result, "plain tantivy": plain_result, "SQLite FTS5": fts5_result}
    print(f"\nindexing {args.items:,} titles (s): "
          + ", ".join(f"{name} {result['indexing_s']}" for name, result in engines.items())
          + f"; SearchIndex upsert of 100 changed items {tantivy_result['update_100_items_s']}")
    print(f"\ntop-{LIMIT} candidates, ms (hits: queries with any result)")
    print(f"{'':<14}" + "".join(f"{name:>26}" for name in engines))
    print(f"{'':<14}" + f"{'p50':>10} {'p99':>8} {'hits':>6}" * len(engines))
    for kind in [*queries, "all"]:
        row = [result["queries"][kind] for result in engines.values()]
        print(f"{kind:<14}" + "".join(f"{r['p50_ms']:>10} {r['p99_ms']:>8} {r.get('with_hits', ''):>6}" for r in row))
    for name in ("suggest", "suggest_after_a_word", "spelling"):
        r = tantivy_result[name]
        print(f"{name:<22} {r['p50_ms']:>8} {r['p99_ms']:>8}")

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "search_index",
        "when": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "setup": {"items": args.items, "vocabulary": len(VOCABULARY), "queries": args.queries, "limit": LIMIT,
                  "note": "SearchIndex.search() end to end, item ids included; plain tantivy: one "
                          "title field, BM25 OR of the words, no ids fetched; FTS5 ORs the words and "
                          "has no typo tolerance; query times are the second of two rounds"},
        "results": {"search_index": tantivy_result, "plain_tantivy": plain_result, "sqlite_fts5": fts5_result},
    }, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
