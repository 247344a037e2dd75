"""Evaluation: the metrics by hand and against lightfm.evaluation, the popularity baseline, `vitrine evaluate`."""

from __future__ import annotations

import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from lightfm import LightFM
from lightfm.evaluation import auc_score, precision_at_k, recall_at_k

from server.models import CatalogItem, Interacted, Interaction
from server.recommend.dataset import FeatureCatalog, select_positives
from server.recommend.evaluate import (
    evaluate_popularity, evaluate_shop, make_holdout, popularity_scores, ranking_metrics,
)
from test_recommend_train import cli_shop, cluster_interactions, make_store, quick_settings, vitrine


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


def rows(lists: list[list[int]], n_items: int) -> sp.csr_matrix:
    matrix = sp.lil_matrix((len(lists), n_items), dtype=np.float32)
    for r, items in enumerate(lists):
        for i in items:
            matrix[r, i] = 1.0
    return matrix.tocsr()


def fixed_scores(scores: list[list[float]]):
    array = np.array(scores, dtype=np.float64)
    return lambda start, stop: array[start:stop]


def test_metrics_on_a_case_worked_by_hand() -> None:
    # User 0 already has item 0 (left out); held out: items 1 (score 4: nothing ranked above
    # it, rank 0) and 3 (score 2: items 1 and 2 above, rank 2). Top 2: one hit of two.
    # Negatives are items 2 and 4: pairs in order (1>2, 1>4, 3>4) = 3 of 4, AUC 0.75.
    # User 1: item 4 ranked first: one hit in the top 2, recall 1, AUC 1.
    metrics = ranking_metrics(
        fixed_scores([[5, 4, 3, 2, 1], [1, 2, 3, 4, 5]]), rows([[1, 3], [4]], 5), rows([[0], []], 5), k=2
    )
    assert metrics.users == 2
    assert metrics.precision_at_k == pytest.approx((0.5 + 0.5) / 2)
    assert metrics.recall_at_k == pytest.approx((0.5 + 1.0) / 2)
    assert metrics.auc == pytest.approx((0.75 + 1.0) / 2)


def test_ties_count_against_the_held_out_item_as_in_lightfm() -> None:
    metrics = ranking_metrics(fixed_scores([[1, 1, 1]]), rows([[0]], 3), rows([[]], 3), k=1)
    assert (metrics.precision_at_k, metrics.recall_at_k, metrics.auc) == (0.0, 0.0, 0.0)


def test_metrics_match_lightfm_evaluation() -> None:
    rng = np.random.default_rng(3)
    n_users, n_items = 40, 60
    pairs = {(u, i) for u in range(n_users) for i in rng.choice(n_items, 8, replace=False)}
    pairs = sorted(pairs)
    held = {p for n, p in enumerate(pairs) if n % 4 == 0}
    train = sp.coo_matrix(
        (np.ones(len(pairs) - len(held), dtype=np.float32), tuple(zip(*[p for p in pairs if p not in held]))),
        shape=(n_users, n_items),
    ).tocsr()
    test = sp.coo_matrix((np.ones(len(held), dtype=np.float32), tuple(zip(*held))), shape=(n_users, n_items)).tocsr()
    model = LightFM(no_components=8, loss="warp", random_state=np.random.RandomState(1))
    model.fit(train, epochs=5, num_threads=1)
    scores = lambda a, b: model.user_embeddings[a:b] @ model.item_embeddings.T + model.item_biases

    ours = ranking_metrics(scores, test, train, k=5)
    assert ours.users == n_users
    assert ours.precision_at_k == pytest.approx(precision_at_k(model, test, train, k=5).mean(), abs=1e-6)
    assert ours.recall_at_k == pytest.approx(recall_at_k(model, test, train, k=5).mean(), abs=1e-6)
    assert ours.auc == pytest.approx(auc_score(model, test, train).mean(), abs=1e-5)


def positive(user: str, item: str, day: int, kind: str = "purchase") -> Interacted:
    return Interacted(user, item, kind, datetime(2024, 1, 1) + timedelta(days=day), None, f"{user}@{day}")


def test_popularity_baseline_and_the_held_out_rows() -> None:
    catalog = FeatureCatalog([CatalogItem(i, i) for i in "abcd"])
    train = select_positives(
        [positive("u1", "a", 0), positive("u2", "a", 0), positive("u2", "b", 1), positive("u3", "c", 1, "view_item")],
        set("abcd"),
    ).positives
    held = select_positives(
        [positive("u1", "b", 2), positive("u1", "a", 2), positive("u3", "d", 2), positive("new", "a", 2),
         positive("u1", "zzz", 2)],
        {*"abcd", "zzz"},
    ).positives
    training = catalog.training_set(train, {}, ())
    holdout = make_holdout(training, held)
    # u1's "a" was a training positive: left out. "zzz" is no item of the model: left out.
    # "new" is a user the model never saw: kept, to be scored from features.
    assert holdout.visitor_ids == ["u1", "u3", "new"]
    assert holdout.dropped_pairs == 1
    assert [list(holdout.test[r].indices) for r in range(3)] == [[1], [3], [0]]
    assert [list(holdout.known[r].indices) for r in range(3)] == [[0], [2], []]

    # Popularity: a (two purchases) > b (one) > c (one view) > d (none).
    assert list(np.argsort(-popularity_scores(train, training.item_ids))) == [0, 1, 2, 3]
    baseline = evaluate_popularity(train, holdout, training.item_ids, k=1)
    # u1: b first once a is left out (hit, AUC 1); u3: d after a and b (miss, AUC 0);
    # new: a first (hit; negatives b, c, d all below: AUC 1).
    assert (baseline.precision_at_k, baseline.recall_at_k) == (pytest.approx(2 / 3), pytest.approx(2 / 3))
    assert baseline.auc == pytest.approx(2 / 3)


WORDS = [
    ["garden", "trowel", "seedling", "flower", "hose", "spade"],
    ["kitchen", "whisk", "ladle", "teapot", "skillet", "grater"],
    ["camping", "tent", "lantern", "compass", "hammock", "canteen"],
    ["office", "stapler", "binder", "marker", "envelope", "ledger"],
]


def four_cluster_shop(tmp_path: Path):
    """Four clusters of ten items; each user buys six items of one cluster, over 60 days."""
    items, rows = [], []
    for c, words in enumerate(WORDS):
        items += [CatalogItem(f"{c}-{n}", f"{words[n % 6].title()} {words[(n + 2) % 6].title()}", category=words[0])
                  for n in range(10)]
    rng = np.random.default_rng(5)
    for u in range(80):
        c = u % 4
        for k, n in enumerate(rng.choice(10, 6, replace=False)):
            when = datetime(2024, 1, 1) + timedelta(days=int(rng.integers(60)), hours=k)
            rows.append(Interaction(f"user{u}", f"{c}-{n}", "purchase", when, 1.0))
    return make_store(tmp_path, items, rows)


def test_the_model_beats_popularity_on_a_clustered_shop(tmp_path: Path) -> None:
    store = four_cluster_shop(tmp_path)
    try:
        report = evaluate_shop(store, quick_settings(tmp_path), "toy", k=3)
    finally:
        store.close()
    assert report.split["kind"] == "time" and report.users == report.split["users"] > 40
    assert report.model.recall_at_k > 1.5 * report.popularity.recall_at_k
    assert report.model.auc > report.popularity.auc + 0.2
    assert not (tmp_path / "models").exists()  # evaluation publishes nothing


# -- the command ----------------------------------------------------------------------
def test_vitrine_evaluate_json_is_one_object(tmp_path: Path) -> None:
    data_dir = cli_shop(tmp_path)
    result = vitrine(data_dir, "evaluate", "--shop", "toy", "--k", "5", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["k"] == 5 and report["users"] > 0
    for name in ("model", "popularity"):
        assert set(report[name]) == {"precision_at_k", "recall_at_k", "auc"}
        assert all(0.0 <= v <= 1.0 for v in report[name].values())
    assert "Evaluating on" in result.stderr  # progress stays off stdout


def test_vitrine_evaluate_with_a_test_file(tmp_path: Path) -> None:
    data_dir = cli_shop(tmp_path)
    bought = {(r.user_id, r.item_id) for r in cluster_interactions()}
    new_a = [f"A{n:02d}" for n in range(24) if ("a00", f"A{n:02d}") not in bought]
    new_b = next(f"B{n:02d}" for n in range(24) if ("b01", f"B{n:02d}") not in bought)
    held_out = tmp_path / "test.csv"
    # Import-format user ids: "a00" is the imported customer u:a00. "zz" is new to the
    # model (kept, scored from features); item "nope" is unknown (dropped).
    held_out.write_text(
        "user_id,item_id,event,timestamp,value\n"
        f"a00,{new_a[0]},rating,2024-06-01T10:00:00Z,5\n"
        f"a00,{new_a[1]},rating,2024-06-01T10:00:00Z,2\n"
        f"b01,{new_b},purchase,2024-06-01T10:00:00Z,\n"
        "zz,A05,view,2024-06-01T10:00:00Z,\n"
        "b02,nope,purchase,2024-06-01T10:00:00Z,\n"
    )
    result = vitrine(data_dir, "evaluate", "--shop", "toy", "--test", str(held_out), "--min-value", "4", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["split"]["kind"] == "file"
    assert report["split"]["test_counts"]["unknown_items_dropped"] == 1
    assert report["split"]["test_counts"]["ratings_below_min_dropped"] == 1
    assert report["split"]["train_positives"] == 360 and report["split"]["test_positives"] == 3
    assert report["users"] == 3 and report["split"]["users_new_to_training"] == 1

    table = vitrine(data_dir, "evaluate", "--shop", "toy", "--test", str(held_out))
    assert table.exit_code == 0, table.output
    assert "precision@10" in table.output and "popularity" in table.output and "users evaluated" in table.output


def test_vitrine_evaluate_says_what_is_wrong(tmp_path: Path) -> None:
    data_dir = cli_shop(tmp_path, with_interactions=False)
    result = vitrine(data_dir, "evaluate", "--shop", "toy")
    assert result.exit_code == 2 and "shop 'toy' has no interactions to evaluate on" in result.output
    bad = tmp_path / "bad.csv"
    bad.write_text("user_id,item_id,event,timestamp\n1,A01,bought,2024-01-01\n")
    result = vitrine(data_dir, "evaluate", "--shop", "toy", "--test", str(bad))
    assert result.exit_code == 2 and "unknown event 'bought'" in result.output
