"""Benchmark: recommendation training and serving at 100,000 items and 200,000 users (32 dims).

1. Training: seconds per LightFM WARP epoch on synthetic interactions (all cores).
2. Scoring: top-k for one visitor with numpy on the saved embeddings (what Vitrine serves)
   next to `LightFM.predict` over all items (the slow path) and a popularity list slice.
3. HTTP: `GET /v1/fragments/recommendations` (top picks, 4 items) on loopback against a
   synthetic shop with a 100k-item catalog and model, next to a bare Starlette endpoint.

    .venv/bin/python bench/recommend.py [--items 100000] [--users 200000] [--requests 2000]

Prints tables and writes bench/results/recommend.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from bench.loadgen import percentiles  # noqa: E402
RESULTS = ROOT / "bench" / "results" / "recommend.json"
DIMS = 32


def synthetic_interactions(n_users: int, n_items: int, per_user: int, rng: np.random.Generator) -> sp.coo_matrix:
    """Users with tastes: each prefers one of 50 item clusters; item popularity is Zipf-like."""
    clusters = 50
    user_cluster = rng.integers(0, clusters, n_users)
    item_cluster = rng.integers(0, clusters, n_items)
    by_cluster = [np.flatnonzero(item_cluster == c) for c in range(clusters)]
    rows, cols = [], []
    for u in range(n_users):
        pool = by_cluster[user_cluster[u]] if rng.random() < 0.8 else np.arange(n_items)
        picks = pool[np.minimum((rng.zipf(1.3, per_user) - 1), len(pool) - 1)]
        rows.append(np.full(len(picks), u))
        cols.append(picks)
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    data = np.ones(len(rows), dtype=np.float32)
    matrix = sp.coo_matrix((data, (rows, cols)), shape=(n_users, n_items)).tocsr()
    matrix.data[:] = 1.0
    return matrix.tocoo()


def bench_training(interactions: sp.coo_matrix, epochs: int) -> dict:
    from lightfm import LightFM

    model = LightFM(no_components=DIMS, loss="warp", learning_rate=0.05, random_state=1)
    threads = os.cpu_count() or 1
    times = []
    for _ in range(epochs):
        started = time.perf_counter()
        model.fit_partial(interactions, epochs=1, num_threads=threads)
        times.append(time.perf_counter() - started)
    return {"interactions": int(interactions.nnz), "threads": threads, "epochs": epochs,
            "seconds_per_epoch": round(statistics.fmean(times), 2), "model": model}


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    top = np.argpartition(-scores, k - 1)[:k]
    return top[np.argsort(-scores[top])]


def bench_scoring(model, n_users: int, queries: int, k: int, rng: np.random.Generator) -> dict:
    item_vectors = model.item_embeddings.astype(np.float32)
    item_biases = model.item_biases.astype(np.float32)
    user_vectors = model.user_embeddings.astype(np.float32)
    n_items = len(item_vectors)
    popularity = np.arange(n_items)
    users = rng.integers(0, n_users, queries)
    numpy_times, predict_times, popular_times = [], [], []
    all_items = np.arange(n_items, dtype=np.int32)
    for u in users:
        started = time.perf_counter()
        top_k(item_vectors @ user_vectors[u] + item_biases, k)
        numpy_times.append(time.perf_counter() - started)
    for u in users[: max(50, queries // 10)]:
        started = time.perf_counter()
        top_k(model.predict(int(u), all_items, num_threads=1), k)
        predict_times.append(time.perf_counter() - started)
    for _ in users:
        started = time.perf_counter()
        popularity[:k].tolist()
        popular_times.append(time.perf_counter() - started)
    return {
        "numpy top-k (served)": percentiles(numpy_times),
        "LightFM.predict + top-k": percentiles(predict_times),
        "popularity list slice": percentiles(popular_times),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=200_000)
    parser.add_argument("--per-user", type=int, default=10, help="interactions per user")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--queries", type=int, default=2000)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--no-http", action="store_true")
    args = parser.parse_args()
    rng = np.random.default_rng(7)

    print(f"synthetic data: {args.users:,} users, {args.items:,} items, ~{args.per_user} interactions each")
    interactions = synthetic_interactions(args.users, args.items, args.per_user, rng)
    training = bench_training(interactions, args.epochs)
    model = training.pop("model")
    print(f"\ntraining: {training['interactions']:,} interactions, {training['threads']} threads: "
          f"{training['seconds_per_epoch']} s per WARP epoch ({DIMS} components)")

    scoring = bench_scoring(model, args.users, args.queries, 10, rng)
    print(f"\n{'top-10 over ' + format(args.items, ',') + ' items':<32} {'p50 ms':>9} {'p99 ms':>9} {'mean ms':>9}")
    for name, r in scoring.items():
        print(f"{name:<32} {r['p50_ms']:>9} {r['p99_ms']:>9} {r['mean_ms']:>9}")

    http = {}
    if not args.no_http:
        from bench.recommend_http import bench_http

        http = bench_http(model, args.items, args.users, args.requests)

    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({
        "benchmark": "recommend", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__},
        "items": args.items, "users": args.users, "dims": DIMS,
        "training": training, "scoring_top10": scoring, "http": http,
    }, indent=2) + "\n")
    print(f"\nwritten to {RESULTS.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
