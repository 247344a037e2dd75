"""Training: the dataset (weights, features), real LightFM fits on small synthetic shops, `vitrine train`."""

from __future__ import annotations

import os
import random
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from server.cli import main
from server.models import CatalogItem, Interaction, VisitorProfile
from server.recommend.artifact import CURRENT, ModelRegistry, models_dir
from server.recommend.dataset import (
    FeatureCatalog, select_positives, split_by_time, split_newest_per_user, user_attribute_features,
)
from server.recommend.train import train_shop
from server.settings import Settings
from server.store import open_store

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2024, 1, 1, 9, 0, tzinfo=timezone.utc)
GARDEN = ["garden", "trowel", "seedling", "flower", "hose", "spade", "compost", "planter"]
KITCHEN = ["kitchen", "whisk", "ladle", "teapot", "skillet", "grater", "colander", "spatula"]


# -- synthetic shops --------------------------------------------------------------------
def cluster_catalog(per_cluster: int = 24) -> list[CatalogItem]:
    """Two clusters that differ in every feature: category, brand, price, tags and words."""
    items = []
    for prefix, words, category, brand, price in (("A", GARDEN, "Garden", "Greenly", 5.0), ("B", KITCHEN, "Kitchen", "Cookwell", 50.0)):
        for n in range(per_cluster):
            title = f"{words[n % 8].title()} {words[(3 * n + 1) % 8].title()} No {n}"
            items.append(CatalogItem(
                f"{prefix}{n:02d}", title, description=f"A {words[(n + 2) % 8]} from the {category.lower()} range.",
                category=category, brand=brand, price=price + n, tags=(prefix.lower(),),
            ))
    return items


def cluster_interactions(users_per_cluster: int = 30, per_user: int = 6, seed: int = 7) -> list[Interaction]:
    """Each user buys only within their cluster, over several days; A users are in GB, B users in FR."""
    rng = random.Random(seed)
    rows = []
    for prefix, country in (("A", "GB"), ("B", "FR")):
        for u in range(users_per_cluster):
            user = f"{prefix.lower()}{u:02d}"
            for k, n in enumerate(rng.sample(range(24), per_user)):
                when = T0 + timedelta(days=rng.randrange(60), hours=k)
                rows.append(Interaction(user, f"{prefix}{n:02d}", "purchase", when, 10.0, country))
    return rows


def make_store(tmp_path: Path, items: list[CatalogItem], interactions: list[Interaction], shop: str = "toy"):
    store = open_store(f"sqlite:///{tmp_path / 'vitrine.db'}")
    store.migrate()
    store.upsert_items(shop, items)
    if interactions:
        store.import_interactions(shop, interactions)
    return store


def quick_settings(tmp_path: Path, **overrides) -> Settings:
    values = dict(data_dir=tmp_path, model_threads=1, train_time_budget_s=2)
    return Settings.load(environ={}, **{**values, **overrides})


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests choose every setting; none leaks in from the environment running them."""
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def cluster_shop(tmp_path: Path):
    store = make_store(tmp_path, cluster_catalog(), cluster_interactions())
    yield store
    store.close()


# -- a trained model ------------------------------------------------------------------
def test_a_trained_model_ranks_a_users_own_cluster_first(tmp_path: Path, cluster_shop) -> None:
    settings = quick_settings(tmp_path)
    report = train_shop(cluster_shop, settings, "toy")
    artifact = report.artifact
    assert artifact is not None
    assert ModelRegistry(models_dir(settings)).get("toy").version == artifact.version

    bought = {}
    for it in cluster_interactions():
        bought.setdefault(f"u:{it.user_id}", set()).add(it.item_id)
    own_cluster = []
    for vid, items in bought.items():
        scores = artifact.item_vectors @ artifact.user_vectors[artifact.user_index[vid]] + artifact.item_biases
        ranked = [artifact.item_ids[i] for i in np.argsort(-scores) if artifact.item_ids[i] not in items][:5]
        own_cluster += [item[0] == vid[2].upper() for item in ranked]
    assert np.mean(own_cluster) >= 0.95

    # Item to item (cosine on the item vectors): an item's neighbours are from its cluster.
    unit = artifact.item_vectors / np.linalg.norm(artifact.item_vectors, axis=1, keepdims=True)
    anchor = artifact.item_index["A03"]
    neighbours = [artifact.item_ids[i] for i in np.argsort(-(unit @ unit[anchor]))[1:6]]
    assert all(item.startswith("A") for item in neighbours), neighbours


def test_user_feature_vectors_point_a_new_visitor_towards_their_countrys_cluster(tmp_path: Path, cluster_shop) -> None:
    artifact = train_shop(cluster_shop, quick_settings(tmp_path), "toy").artifact
    assert {"country:GB", "country:FR", "segment:customer"} <= set(artifact.user_feature_names)
    assert artifact.user_feature_vectors.shape == (len(artifact.user_feature_names), artifact.components)
    is_a = np.array([i.startswith("A") for i in artifact.item_ids])
    for country, cluster in (("GB", is_a), ("FR", ~is_a)):
        vector = artifact.user_feature_vectors[artifact.user_feature_names.index(f"country:{country}")]
        scores = artifact.item_vectors @ vector
        assert scores[cluster].mean() > scores[~cluster].mean()


def test_the_artifact_records_the_tuning_and_the_data(tmp_path: Path, cluster_shop) -> None:
    report = train_shop(cluster_shop, quick_settings(tmp_path), "toy")
    meta = report.artifact.meta
    tuning = meta["tuning"]
    assert tuning["trials"], tuning
    assert tuning["chosen"]["epochs"] >= 1
    assert set(tuning["validation"]["model"]) == {"precision_at_k", "recall_at_k", "auc"}
    assert tuning["validation"]["popularity"]["recall_at_k"] >= 0
    assert meta["snapshot"]["kept"] == meta["snapshot"]["interactions"] == 360
    assert meta["snapshot"]["users"] == 60 and meta["snapshot"]["catalog_items"] == 48
    assert meta["params"]["threads"] == 1 and meta["params"]["loss"] == "warp"
    assert meta["created_at"].endswith("Z") and meta["version"] == report.artifact.version


def test_fixed_settings_are_used_as_given(tmp_path: Path, cluster_shop) -> None:
    settings = quick_settings(
        tmp_path, model_components=8, model_learning_rate=0.03, model_epochs=3, model_feature_groups="category,terms"
    )
    report = train_shop(cluster_shop, settings, "toy")
    chosen = report.artifact.meta["tuning"]["chosen"]
    assert (chosen["components"], chosen["learning_rate"], chosen["epochs"]) == (8, 0.03, 3)
    assert chosen["feature_groups"] == ["category", "terms"]
    assert len(report.artifact.meta["tuning"]["trials"]) == 1
    assert report.artifact.components % 8 == 0


def test_a_large_shop_is_tuned_on_a_sample_of_its_users(tmp_path: Path, cluster_shop, monkeypatch) -> None:
    import server.recommend.train as train

    monkeypatch.setattr(train, "TUNING_MAX_INTERACTIONS", 120)  # of 360: about a third of the users
    report = train_shop(cluster_shop, quick_settings(tmp_path), "toy")
    tuning = report.artifact.meta["tuning"]
    assert tuning["users_sampled"] is True
    assert tuning["validation"]["fit_interactions"] + tuning["validation"]["validation_interactions"] <= 120
    assert len(report.artifact.user_ids) == 60  # the final fit has everyone


def test_bought_together_and_popularity(tmp_path: Path) -> None:
    items = [CatalogItem(i, f"Item {i}") for i in ("X", "Y", "Z", "W", "unsold")]
    day = timedelta(days=1)
    rows = [
        Interaction("1", "X", "purchase", T0, 1.0), Interaction("1", "Y", "purchase", T0, 1.0),
        Interaction("1", "Z", "purchase", T0, 1.0),
        Interaction("2", "X", "purchase", T0 + day, 1.0), Interaction("2", "Y", "purchase", T0 + day, 1.0),
        Interaction("3", "X", "purchase", T0 + 2 * day, 1.0), Interaction("3", "W", "purchase", T0 + 2 * day, 1.0),
        Interaction("3", "Y", "purchase", T0 + 3 * day, 1.0),  # another basket
        Interaction("4", "Z", "view", T0 + 3 * day), Interaction("4", "X", "cart", T0 + 3 * day),
    ]
    store = make_store(tmp_path, items, rows)
    try:
        settings = quick_settings(tmp_path, model_components=4, model_learning_rate=0.05, model_epochs=2,
                                  model_feature_groups="category")
        artifact = train_shop(store, settings, "toy").artifact
    finally:
        store.close()
    # Weighted: X 3+3+3+2, Y 3+3+3, Z 3+1, W 3; never-sold items are not popular.
    assert artifact.popularity == ["X", "Y", "Z", "W"]
    assert artifact.bought_together == {
        "X": ["Y", "Z", "W"],  # Y twice; Z and W once each, Z the more popular
        "Y": ["X", "Z"],
        "Z": ["X", "Y"],
        "W": ["X"],
    }


def test_a_shop_without_interactions_gets_no_model(tmp_path: Path) -> None:
    store = make_store(tmp_path, cluster_catalog(), [])
    try:
        settings = quick_settings(tmp_path)
        report = train_shop(store, settings, "toy")
    finally:
        store.close()
    assert report.artifact is None and report.snapshot["interactions"] == 0
    assert not (models_dir(settings) / "toy").exists()
    assert ModelRegistry(models_dir(settings)).get("toy") is None


# -- the dataset ----------------------------------------------------------------------
def feature_items() -> list[CatalogItem]:
    return [
        CatalogItem("1", "Garden Trowel", category="Garden > Tools", brand="Acme", price=1.0, tags=("Red",)),
        CatalogItem("2", "Garden Spade", category="Garden > Tools", brand="Acme", price=2.0),
        CatalogItem("3", "Kitchen Whisk", category="Kitchen", price=3.0),
        CatalogItem("4", "Kitchen Ladle", category="Kitchen", price=4.0),
        CatalogItem("5", "Trowel Holster", category="Garden", price=5.0),
        CatalogItem("6", "Teapot Set", category="Kitchen", price=6.0),
        CatalogItem("7", "Mug Set with Lid", price=7.0),
        CatalogItem("8", "Lamp Set with Shade", price=8.0),
        CatalogItem("9", "XL Rug", price=9.0),
        CatalogItem("10", "XL Box", price=10.0),
        CatalogItem("11", "Gift Card"),
    ]


def item_row(catalog: FeatureCatalog, item_id: str, groups) -> dict[str, float]:
    matrix, names = catalog.item_features(groups)
    row = matrix.getrow(catalog.item_index[item_id])
    return {names[c]: pytest.approx(float(v)) for c, v in zip(row.indices, row.data)}


def test_item_features_by_group_with_rows_summing_to_one() -> None:
    catalog = FeatureCatalog(feature_items())
    groups = ("category", "brand", "price", "tags", "terms")
    matrix, _ = catalog.item_features(groups)
    assert np.allclose(np.asarray(matrix.sum(axis=1)).ravel(), 1.0)
    # Terms: in >= 2 items and <= 20% of them ("set" is in 3 of 11), >= 3 letters ("xl"),
    # not stop words ("with"). Price: fifths of the priced items (1-2, 3-4, 5-6, 7-8, 9-10).
    expected = ["id:1", "category:Garden", "category:Garden > Tools", "brand:Acme", "price:1", "tag:red",
                "term:garden", "term:trowel"]
    assert item_row(catalog, "1", groups) == {name: 1 / 8 for name in expected}
    assert item_row(catalog, "3", groups) == {name: 1 / 4 for name in ["id:3", "category:Kitchen", "price:2", "term:kitchen"]}
    assert item_row(catalog, "7", groups) == {"id:7": 0.5, "price:4": 0.5}
    assert item_row(catalog, "10", groups) == {"id:10": 0.5, "price:5": 0.5}
    assert item_row(catalog, "11", groups) == {"id:11": 1.0}
    assert item_row(catalog, "1", ("terms",)) == {"id:1": 1 / 3, "term:garden": 1 / 3, "term:trowel": 1 / 3}
    assert item_row(catalog, "1", ()) == {"id:1": 1.0}


def test_user_attribute_features_are_named_for_serving() -> None:
    now = datetime(2024, 1, 1)
    new = VisitorProfile("v1", now, now, visits=1, country="GB", device_class="mobile")
    returning = VisitorProfile("v2", now, now, visits=3, device_class="desktop")
    customer = VisitorProfile("v3", now, now, visits=1, orders=2, country="FR")
    assert user_attribute_features(new) == ["country:GB", "device:mobile", "segment:new"]
    assert user_attribute_features(returning) == ["device:desktop", "segment:returning"]
    assert user_attribute_features(customer) == ["country:FR", "segment:customer"]
    assert user_attribute_features(None) == []


def test_weights_by_kind_and_min_value(tmp_path: Path) -> None:
    items = [CatalogItem(i, f"Item {i}") for i in ("X", "Y", "Z")]
    rows = [
        Interaction("1", "X", "view", T0), Interaction("1", "X", "cart", T0 + timedelta(minutes=1)),
        Interaction("1", "X", "purchase", T0 + timedelta(minutes=2), 5.0),
        Interaction("1", "Y", "view", T0), Interaction("1", "Z", "cart", T0),
        Interaction("2", "X", "rating", T0, 5.0), Interaction("2", "Y", "rating", T0, 2.0),
        Interaction("2", "gone", "purchase", T0, 1.0),
    ]
    store = make_store(tmp_path, items, rows)
    try:
        interactions = store.interactions("toy")
        profiles = store.visitor_attributes("toy")
    finally:
        store.close()
    catalog = FeatureCatalog(items)

    def weights(min_value):
        selection = select_positives(interactions, set(catalog.item_ids), min_value)
        training = catalog.training_set(selection.positives, profiles, ())
        w = training.weights
        named = {(training.user_ids[u], catalog.item_ids[i]): float(v) for u, i, v in zip(w.row, w.col, w.data)}
        return named, selection.counts

    every_rating, counts = weights(None)
    assert every_rating == {("u:1", "X"): 3.0, ("u:1", "Y"): 1.0, ("u:1", "Z"): 2.0, ("u:2", "X"): 1.0, ("u:2", "Y"): 1.0}
    assert counts["unknown_items_dropped"] == 1 and counts["ratings_below_min_dropped"] == 0
    high_ratings, counts = weights(4)
    assert ("u:2", "Y") not in high_ratings and high_ratings[("u:2", "X")] == 1.0
    assert counts["ratings_below_min_dropped"] == 1


def test_validation_and_test_splits_keep_baskets_whole() -> None:
    catalog_ids = {f"i{n}" for n in range(10)}
    from server.models import Interacted

    rows = []
    for day in range(5):  # one user, five baskets of two items
        when = datetime(2024, 1, 1 + day)
        rows += [Interacted("u", f"i{2 * day}", "purchase", when, 1.0, f"b{day}"),
                 Interacted("u", f"i{2 * day + 1}", "purchase", when, 1.0, f"b{day}")]
    rows.append(Interacted("once", "i0", "purchase", datetime(2024, 1, 3), 1.0, "c"))
    positives = select_positives(rows, catalog_ids).positives
    train, held = split_newest_per_user(positives, 0.1)
    assert {p.item_id for p in held} == {"i8", "i9"}  # the whole newest basket
    assert any(p.visitor_id == "once" for p in train) and not any(p.visitor_id == "once" for p in held)
    train, test = split_by_time(positives, 0.1)  # everyone's newest: the last moment, whole
    assert {p.item_id for p in test} == {"i8", "i9"} and len(train) == 9
    train, test = split_by_time(positives, 0.2)
    assert {p.item_id for p in test} == {"i6", "i7", "i8", "i9"}


# -- the command ----------------------------------------------------------------------
CATALOG_CSV = "item_id,title,description,category,price,tags\n" + "".join(
    f"{i.item_id},{i.title},{i.description},{i.category},{i.price},{'|'.join(i.tags)}\n" for i in cluster_catalog()
)


def interactions_csv() -> str:
    return "user_id,item_id,event,timestamp,value,country\n" + "".join(
        f"{r.user_id},{r.item_id},{r.event},{r.timestamp.isoformat()},{r.value},{r.country}\n"
        for r in cluster_interactions()
    )


def vitrine(data_dir: Path, *args: str):
    env = {"VITRINE_TRAIN_TIME_BUDGET_S": "2", "VITRINE_MODEL_THREADS": "1"}
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], env=env)


def cli_shop(tmp_path: Path, with_interactions: bool = True) -> Path:
    data_dir = tmp_path / "state"
    (data_dir / "shops").mkdir(parents=True)
    shutil.copyfile(ROOT / "server" / "demo" / "demo.toml", data_dir / "shops" / "toy.toml")
    (tmp_path / "catalog.csv").write_text(CATALOG_CSV)
    assert vitrine(data_dir, "import", "catalog", str(tmp_path / "catalog.csv"), "--shop", "toy").exit_code == 0
    if with_interactions:
        (tmp_path / "interactions.csv").write_text(interactions_csv())
        result = vitrine(data_dir, "import", "interactions", str(tmp_path / "interactions.csv"), "--shop", "toy")
        assert result.exit_code == 0, result.output
    return data_dir


def test_vitrine_train_publishes_a_version_and_models_list_shows_it(tmp_path: Path) -> None:
    data_dir = cli_shop(tmp_path)
    result = vitrine(data_dir, "train", "--shop", "toy")
    assert result.exit_code == 0, result.output
    assert "Read 48 catalog items and 360 interactions (360 kept for training)." in result.output
    assert "trial 1:" in result.output and "Chosen: components=" in result.output
    assert "Validation recall@10 over" in result.output
    version = (data_dir / "models" / "toy" / CURRENT).read_text().strip()
    assert f"Model {version} for shop 'toy': 48 items, 60 users" in result.output

    listed = vitrine(data_dir, "models", "list", "--shop", "toy")
    assert listed.exit_code == 0, listed.output
    line = next(row for row in listed.output.splitlines() if row.startswith(version))
    assert line.endswith("current, serving") and " 48 " in line


def test_vitrine_train_on_a_shop_without_interactions_says_so(tmp_path: Path) -> None:
    data_dir = cli_shop(tmp_path, with_interactions=False)
    result = vitrine(data_dir, "train", "--shop", "toy")
    assert result.exit_code == 0, result.output
    assert "has no interactions to learn from: no model written" in result.output
    assert not (data_dir / "models" / "toy" / CURRENT).exists()


def test_vitrine_train_refuses_an_unknown_shop_or_feature_group(tmp_path: Path) -> None:
    data_dir = cli_shop(tmp_path, with_interactions=False)
    result = vitrine(data_dir, "train", "--shop", "nope")
    assert result.exit_code == 2 and "unknown shop 'nope'" in result.output
    (tmp_path / "interactions.csv").write_text(interactions_csv())
    vitrine(data_dir, "import", "interactions", str(tmp_path / "interactions.csv"), "--shop", "toy")
    result = CliRunner().invoke(main, ["--data-dir", str(data_dir), "train", "--shop", "toy"],
                                env={"VITRINE_MODEL_FEATURE_GROUPS": "terms,colour"})
    assert result.exit_code == 2
    assert "unknown group(s) colour" in result.output
