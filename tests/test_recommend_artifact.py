"""Model artifacts: saving and loading, corrupt files, the registry servers read, pinning, pruning."""

from __future__ import annotations

import json
import logging
import os
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from server.cli import main
from server.recommend.artifact import (
    ARRAYS_FILE, CURRENT, META_FILE, PINNED, ArtifactError, ModelRegistry, load_artifact, save_artifact,
)

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=timezone.utc)
ITEMS = ["a", "b", "c", "d"]


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


def publish(models: Path, shop: str = "shop", *, seed: int = 0, now: datetime | None = None, keep: int = 5, **meta):
    """A small artifact with recognisable values (item a's bias is the seed)."""
    rng = np.random.default_rng(seed)
    biases = rng.normal(size=4).astype(np.float32)
    biases[0] = seed
    return save_artifact(
        models, shop, item_ids=ITEMS, item_vectors=rng.normal(size=(4, 3)), item_biases=biases,
        user_ids=["u:1", "v-2"], user_vectors=rng.normal(size=(2, 3)),
        user_feature_names=["country:GB", "device:mobile", "segment:new"], user_feature_vectors=rng.normal(size=(3, 3)),
        bought_together={"a": ["c", "b"], "d": ["a"]}, popularity=["c", "a", "d"],
        meta={"params": {"components": 3}, **meta}, keep=keep, now=now or T0 + timedelta(seconds=seed),
    )


def test_save_then_load_round_trip(tmp_path: Path) -> None:
    saved = publish(tmp_path, seed=1, tuning={"chosen": {"epochs": 7}})
    assert re.fullmatch(r"\d{8}T\d{6}Z-[0-9a-f]{4}", saved.version)
    assert saved.version.startswith("20240501T120001Z-")
    assert saved.path == tmp_path / "shop" / saved.version
    assert sorted(p.name for p in saved.path.iterdir()) == [ARRAYS_FILE, META_FILE]
    assert (tmp_path / "shop" / CURRENT).read_text().strip() == saved.version
    assert not [p for p in (tmp_path / "shop").iterdir() if p.name.startswith(".")]

    loaded = load_artifact(saved.path)
    assert (loaded.shop, loaded.version) == ("shop", saved.version)
    assert loaded.item_ids == ITEMS and loaded.item_index == {"a": 0, "b": 1, "c": 2, "d": 3}
    assert loaded.user_ids == ["u:1", "v-2"] and loaded.user_index == {"u:1": 0, "v-2": 1}
    assert loaded.user_feature_names == ["country:GB", "device:mobile", "segment:new"]
    for name in ("item_vectors", "item_biases", "user_vectors", "user_feature_vectors"):
        assert getattr(loaded, name).dtype == np.float32
        np.testing.assert_array_equal(getattr(loaded, name), getattr(saved, name))
    assert loaded.item_biases[0] == 1.0
    assert loaded.bought_together == {"a": ["c", "b"], "d": ["a"]}
    assert loaded.popularity == ["c", "a", "d"]
    assert loaded.meta["tuning"] == {"chosen": {"epochs": 7}}
    assert loaded.meta["counts"] == {"items": 4, "users": 2, "components": 3, "user_features": 3}
    assert loaded.meta["created_at"] == "2024-05-01T12:00:01Z"
    # Plain arrays only: loadable with pickle refused.
    with np.load(saved.path / ARRAYS_FILE, allow_pickle=False) as npz:
        assert all(npz[name].dtype != object for name in npz.files)


def test_versions_made_in_the_same_second_still_sort_in_order(tmp_path: Path) -> None:
    first = publish(tmp_path, now=T0)
    second = publish(tmp_path, now=T0)
    assert first.version < second.version
    assert ModelRegistry(tmp_path).versions("shop") == [first.version, second.version]


def test_saving_non_finite_vectors_is_refused_and_publishes_nothing(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not finite"):
        save_artifact(
            tmp_path, "shop", item_ids=["a"], item_vectors=np.array([[np.nan]]), item_biases=np.zeros(1),
            user_ids=[], user_vectors=np.zeros((0, 1)), user_feature_names=[], user_feature_vectors=np.zeros((0, 1)),
            bought_together={}, popularity=[], meta={},
        )
    assert not (tmp_path / "shop" / CURRENT).exists()


# -- corrupt versions -----------------------------------------------------------------
def rewrite_arrays(path: Path, **changes: np.ndarray) -> None:
    with np.load(path / ARRAYS_FILE, allow_pickle=False) as npz:
        arrays = {name: npz[name] for name in npz.files}
    arrays.update(changes)
    with open(path / ARRAYS_FILE, "wb") as fh:
        np.savez(fh, **arrays)


def truncate(path: Path) -> None:
    data = (path / ARRAYS_FILE).read_bytes()
    (path / ARRAYS_FILE).write_bytes(data[: len(data) // 2])


def wrong_shape(path: Path) -> None:
    rewrite_arrays(path, item_vectors=np.zeros((4, 5), dtype=np.float32))


def nan_bias(path: Path) -> None:
    rewrite_arrays(path, item_biases=np.array([0, np.nan, 0, 0], dtype=np.float32))


def meta_miscounts(path: Path) -> None:
    meta = json.loads((path / META_FILE).read_text())
    meta["counts"]["users"] = 3
    (path / META_FILE).write_text(json.dumps(meta))


def no_meta(path: Path) -> None:
    (path / META_FILE).unlink()


def bad_popularity(path: Path) -> None:
    rewrite_arrays(path, popularity=np.array([0, 9], dtype=np.int32))


@pytest.mark.parametrize(
    "corrupt, message",
    [
        (truncate, "arrays.npz: cannot be read"),
        (wrong_shape, r"item_vectors has shape \(4, 5\), meta.json says \(4, 3\)"),
        (nan_bias, "item_biases has values that are not finite"),
        (meta_miscounts, r"user_vectors has shape \(2, 3\), meta.json says \(3, 3\)"),
        (no_meta, "meta.json is missing"),
        (bad_popularity, "popularity refers to items that do not exist"),
    ],
)
def test_a_corrupt_version_raises_a_clear_artifact_error(tmp_path: Path, corrupt, message: str) -> None:
    saved = publish(tmp_path)
    corrupt(saved.path)
    with pytest.raises(ArtifactError, match=message) as caught:
        load_artifact(saved.path)
    assert str(saved.path) in str(caught.value)


# -- the registry ---------------------------------------------------------------------
def test_the_registry_switches_to_a_new_version_without_a_restart(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, check_interval_s=0)
    assert registry.get("shop") is None
    first = publish(tmp_path, seed=1)
    assert registry.get("shop").version == first.version
    assert registry.get("shop") is registry.get("shop")  # loaded once, not per call
    second = publish(tmp_path, seed=2)
    served = registry.get("shop")
    assert served.version == second.version and served.item_biases[0] == 2.0


def test_the_registry_checks_the_pointer_files_at_most_every_interval(tmp_path: Path) -> None:
    first = publish(tmp_path, seed=1)
    registry = ModelRegistry(tmp_path, check_interval_s=0.3)
    assert registry.get("shop").version == first.version
    second = publish(tmp_path, seed=2)
    assert registry.get("shop").version == first.version
    deadline = time.monotonic() + 5
    while registry.get("shop").version != second.version and time.monotonic() < deadline:
        time.sleep(0.02)
    assert registry.get("shop").version == second.version


def test_the_registry_keeps_serving_the_old_version_when_the_new_one_is_corrupt(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    registry = ModelRegistry(tmp_path, check_interval_s=0)
    good = publish(tmp_path, seed=1)
    assert registry.get("shop").version == good.version
    broken = publish(tmp_path, seed=2)
    nan_bias(broken.path)
    with caplog.at_level(logging.ERROR, logger="vitrine.models"):
        assert registry.get("shop").version == good.version
        assert registry.get("shop").version == good.version
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1  # logged once, not on every request
    assert broken.version in errors[0] and f"still serving {good.version}" in errors[0]
    fixed = publish(tmp_path, seed=3)
    assert registry.get("shop").version == fixed.version


def test_a_corrupt_first_version_serves_nothing(tmp_path: Path) -> None:
    broken = publish(tmp_path)
    truncate(broken.path)
    assert ModelRegistry(tmp_path, check_interval_s=0).get("shop") is None


def test_pin_unpin_and_rollback(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, check_interval_s=0)
    v1, v2, v3 = (publish(tmp_path, seed=n).version for n in (1, 2, 3))
    assert registry.get("shop").version == v3

    registry.pin("shop", v1)
    assert (tmp_path / "shop" / PINNED).read_text().strip() == v1
    assert registry.get("shop").version == v1
    v4 = publish(tmp_path, seed=4).version  # training goes on; the pin wins
    assert registry.current_version("shop") == v4 and registry.get("shop").version == v1

    registry.unpin("shop")
    assert registry.get("shop").version == v4
    assert registry.rollback("shop") == v3
    assert registry.get("shop").version == v3
    assert registry.rollback("shop") == v2  # again: one further back
    assert registry.rollback("shop") == v1
    with pytest.raises(ArtifactError, match="no model version older than"):
        registry.rollback("shop")
    with pytest.raises(ArtifactError, match="has no model version 'nope'"):
        registry.pin("shop", "nope")


def test_rollback_skips_a_corrupt_older_version(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, check_interval_s=0)
    v1, v2, v3 = (publish(tmp_path, seed=n) for n in (1, 2, 3))
    wrong_shape(v2.path)
    with pytest.raises(ArtifactError):
        registry.pin("shop", v2.version)
    assert registry.rollback("shop") == v1.version


def test_pruning_keeps_the_newest_and_never_the_pinned_one(tmp_path: Path) -> None:
    registry = ModelRegistry(tmp_path, check_interval_s=0)
    versions = [publish(tmp_path, seed=n, keep=3).version for n in range(3)]
    registry.pin("shop", versions[0])
    versions += [publish(tmp_path, seed=n, keep=3).version for n in range(3, 6)]
    assert registry.versions("shop") == [versions[0], *versions[3:]]
    assert registry.get("shop").version == versions[0]
    registry.unpin("shop")
    publish(tmp_path, seed=6, keep=3)
    assert len(registry.versions("shop")) == 3 and versions[0] not in registry.versions("shop")


def test_bad_shop_ids_never_reach_the_file_system(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="bad shop id"):
        ModelRegistry(tmp_path).versions("../etc")


# -- `vitrine models` -----------------------------------------------------------------
def vitrine(data_dir: Path, *args: str):
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), "models", *args])


def test_vitrine_models_list_pin_unpin_rollback(tmp_path: Path) -> None:
    models = tmp_path / "models"
    v1, v2 = (publish(models, "toy", seed=n).version for n in (1, 2))

    listed = vitrine(tmp_path, "list", "--shop", "toy")
    assert listed.exit_code == 0, listed.output
    rows = listed.output.splitlines()
    assert rows[0].startswith("VERSION") and rows[1].startswith(v1) and rows[2].startswith(v2)
    assert rows[2].endswith("current, serving") and not rows[1].endswith("serving")

    result = vitrine(tmp_path, "pin", v1, "--shop", "toy")
    assert result.exit_code == 0 and f"Pinned model {v1}" in result.output
    assert vitrine(tmp_path, "list", "--shop", "toy").output.splitlines()[1].endswith("pinned, serving")
    result = vitrine(tmp_path, "unpin", "--shop", "toy")
    assert result.exit_code == 0 and f"serving {v2}" in result.output
    result = vitrine(tmp_path, "rollback", "--shop", "toy")
    assert result.exit_code == 0 and f"Rolled back shop 'toy' to model {v1}" in result.output

    for args, message in (
        (("pin", "20990101T000000Z-0000", "--shop", "toy"), "has no model version '20990101T000000Z-0000'"),
        (("rollback", "--shop", "toy"), "no model version older than"),
        (("rollback", "--shop", "empty"), "has no model to roll back from"),
    ):
        result = vitrine(tmp_path, *args)
        assert result.exit_code == 2 and message in result.output, result.output
    assert "has no model versions" in vitrine(tmp_path, "list", "--shop", "empty").output
