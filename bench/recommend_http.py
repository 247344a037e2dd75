"""The HTTP part of bench/recommend.py: a synthetic 100k-item shop served by `vitrine serve`."""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.loadgen import free_port, print_table, run_load, start, start_bare, wait_for


def bench_http(model, n_items: int, n_users: int, requests: int, concurrency: int = 8) -> dict:
    from server.identity import TokenSigner
    from server.models import CatalogItem
    from server.recommend.artifact import save_artifact
    from server.settings import Settings
    from server.store import open_store

    data_dir = Path(tempfile.mkdtemp(prefix="vitrine-bench-recs-"))
    try:
        settings = Settings.load(environ={}, data_dir=data_dir)
        (data_dir / "shops").mkdir()
        (data_dir / "shops" / "bench.toml").write_text('name = "bench"\ncurrency = "GBP"\n')
        store = open_store(settings.resolved_database_url)
        store.migrate()
        item_ids = [f"item-{i}" for i in range(n_items)]
        started = time.perf_counter()
        store.upsert_items("bench", [
            CatalogItem(i, f"Synthetic item {n}", category=f"cat-{n % 50}", price=1.0 + n % 40, currency="GBP",
                        url=f"/p/{i}") for n, i in enumerate(item_ids)
        ])
        print(f"\nhttp: imported {n_items:,} items in {time.perf_counter() - started:.1f} s")
        user_ids = [f"user-{u}" for u in range(n_users)]
        save_artifact(
            data_dir / "models", "bench", item_ids=item_ids,
            item_vectors=model.item_embeddings.astype(np.float32), item_biases=model.item_biases.astype(np.float32),
            user_ids=user_ids, user_vectors=model.user_embeddings.astype(np.float32),
            user_feature_names=["country:GB"], user_feature_vectors=np.zeros((1, model.no_components), np.float32),
            bought_together={}, popularity=item_ids[:500], meta={"bench": True},
        )
        signer = TokenSigner(settings.signing_keys(), 86400)
        tokens = [signer.sign("bench", user_ids[u]) for u in np.random.default_rng(3).integers(0, n_users, 500)]
        store.close()

        vitrine_port, bare_port = free_port(), free_port()
        vitrine = start([sys.executable, "-m", "server.cli", "--data-dir", str(data_dir), "serve",
                         "--port", str(vitrine_port)])
        bare = start_bare(bare_port)
        rows = {}
        try:
            wait_for(vitrine_port, "/v1/health")
            wait_for(bare_port, "/")
            path = "/v1/fragments/recommendations?shop=bench&strategy=top_picks&count=4"

            def headers(n: int) -> dict:
                return {"X-Visitor-Token": tokens[n % len(tokens)]}

            for name, port in (("bare Starlette endpoint", bare_port), ("vitrine GET /v1/fragments/recommendations", vitrine_port)):
                run_load(port, "GET", path, headers, None, min(300, requests), 1)  # warm-up
                rows[f"{name}, 1 connection"] = run_load(port, "GET", path, headers, None, requests // 2, 1)
                rows[f"{name}, {concurrency} connections"] = run_load(port, "GET", path, headers, None, requests, concurrency)
        finally:
            for proc in (vitrine, bare):
                proc.terminate()
                proc.wait(10)
        print()
        print_table(rows)
        return rows
    finally:
        shutil.rmtree(data_dir, ignore_errors=True)
