"""Model artifacts on disk: versioned directories of plain arrays and JSON, published atomically.

Layout, under `<data_dir>/models/<shop>/`:

    20240501T120000Z-3f2a/meta.json    parameters, tuning record, metrics, data snapshot
    20240501T120000Z-3f2a/arrays.npz   embeddings, biases, id lists (np.savez, no pickle)
    CURRENT                            the newest published version
    PINNED                             when present, the version to serve instead

A version is written to a temporary directory and renamed into place, then CURRENT is
replaced (write, then os.replace), so a reader sees either the old version or the new
one, whole. Web workers read artifacts through a ModelRegistry, which notices a new
CURRENT or PINNED within a second and keeps serving what it had if the new one is broken.
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
import shutil
import threading
import time
import zipfile
import zlib
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

log = logging.getLogger("vitrine.models")

FORMAT = 1
META_FILE = "meta.json"
ARRAYS_FILE = "arrays.npz"
CURRENT = "CURRENT"
PINNED = "PINNED"
VERSION = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{4}$")
_SHOP = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")
_STALE_TMP_S = 3600.0  # a temporary directory this old was left by a crashed training


class ArtifactError(Exception):
    """A model version that is missing, unreadable or inconsistent; the message says which and why."""


@dataclass(frozen=True, eq=False)
class ModelArtifact:
    shop: str
    version: str
    path: Path
    item_ids: list[str]
    item_index: dict[str, int]
    item_vectors: np.ndarray  # float32 [n_items, d]
    item_biases: np.ndarray  # float32 [n_items]
    user_ids: list[str]
    user_index: dict[str, int]
    user_vectors: np.ndarray  # float32 [n_users, d]
    user_feature_names: list[str]  # non-id user features: country:GB, device:mobile, segment:customer
    user_feature_vectors: np.ndarray  # float32 [len(user_feature_names), d]
    bought_together: dict[str, list[str]]
    popularity: list[str]
    meta: dict

    @property
    def components(self) -> int:
        return int(self.item_vectors.shape[1])


def models_dir(settings: Any) -> Path:
    """Where a deployment keeps its models: `<data_dir>/models`."""
    return settings.resolved_data_dir / "models"


def shop_models_dir(models_dir: Path, shop: str) -> Path:
    if not _SHOP.match(shop or ""):
        raise ArtifactError(f"bad shop id {shop!r}")
    return Path(models_dir) / shop


# -- writing --------------------------------------------------------------------------
def save_artifact(
    models_dir: Path,
    shop: str,
    *,
    item_ids: Sequence[str],
    item_vectors: np.ndarray,
    item_biases: np.ndarray,
    user_ids: Sequence[str],
    user_vectors: np.ndarray,
    user_feature_names: Sequence[str],
    user_feature_vectors: np.ndarray,
    bought_together: Mapping[str, Sequence[str]],
    popularity: Sequence[str],
    meta: Mapping[str, Any],
    keep: int = 5,
    now: datetime | None = None,
) -> ModelArtifact:
    """Writes a new version, publishes it as CURRENT, prunes old versions down to keep
    (never the pinned or current one) and returns the version as loaded back from disk."""
    arrays = _encode_arrays(item_ids, item_vectors, item_biases, user_ids, user_vectors, user_feature_names,
                            user_feature_vectors, bought_together, popularity)
    base = shop_models_dir(models_dir, shop)
    base.mkdir(parents=True, exist_ok=True)
    now = now or datetime.now(timezone.utc)
    version = _new_version(base, now)
    full_meta = {
        **meta,
        "format": FORMAT,
        "shop": shop,
        "version": version,
        "created_at": now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "counts": {
            "items": len(item_ids), "users": len(user_ids), "components": int(arrays["item_vectors"].shape[1]),
            "user_features": len(user_feature_names),
        },
    }
    tmp = base / f".tmp-{version}-{os.getpid()}"
    tmp.mkdir()
    try:
        with open(tmp / ARRAYS_FILE, "wb") as fh:
            np.savez(fh, **arrays)
            fh.flush()
            os.fsync(fh.fileno())
        _write_durably(tmp / META_FILE, json.dumps(full_meta, indent=2, sort_keys=True, default=str) + "\n")
        os.rename(tmp, base / version)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    _fsync_dir(base)
    artifact = load_artifact(base / version)
    write_pointer(base / CURRENT, version)
    prune(base, keep)
    return artifact


def _encode_arrays(
    item_ids: Sequence[str], item_vectors: np.ndarray, item_biases: np.ndarray, user_ids: Sequence[str],
    user_vectors: np.ndarray, user_feature_names: Sequence[str], user_feature_vectors: np.ndarray,
    bought_together: Mapping[str, Sequence[str]], popularity: Sequence[str],
) -> dict[str, np.ndarray]:
    index = {item_id: n for n, item_id in enumerate(item_ids)}
    if len(index) != len(item_ids):
        raise ArtifactError("item ids are not unique")
    indptr, indices = [0], []
    for item_id in item_ids:
        indices.extend(index[other] for other in bought_together.get(item_id, ()))
        indptr.append(len(indices))
    arrays = {
        "item_ids": _text_array(list(item_ids)),
        "user_ids": _text_array(list(user_ids)),
        "user_feature_names": _text_array(list(user_feature_names)),
        "item_vectors": np.ascontiguousarray(item_vectors, dtype=np.float32),
        "item_biases": np.ascontiguousarray(item_biases, dtype=np.float32),
        "user_vectors": np.ascontiguousarray(user_vectors, dtype=np.float32),
        "user_feature_vectors": np.ascontiguousarray(user_feature_vectors, dtype=np.float32),
        "bought_together_indptr": np.array(indptr, dtype=np.int64),
        "bought_together_indices": np.array(indices, dtype=np.int32),
        "popularity": np.array([index[i] for i in popularity], dtype=np.int32),
    }
    for name in _FLOAT_ARRAYS:
        if not np.all(np.isfinite(arrays[name])):
            raise ArtifactError(f"{name} has values that are not finite: the training diverged "
                                "(a lower model_learning_rate may help)")
    return arrays


def _text_array(values: list[str]) -> np.ndarray:
    # A list of strings as the bytes of its JSON: compact, and loads without pickle.
    return np.frombuffer(json.dumps(values, ensure_ascii=False).encode("utf-8"), dtype=np.uint8)


def _new_version(base: Path, now: datetime) -> str:
    """`YYYYMMDDTHHMMSSZ-xxxx`: sorts by time; within one second, after what is already there."""
    stamp = now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    taken = [int(p.name[-4:], 16) for p in base.glob(f"{stamp}-*") if VERSION.match(p.name)]
    if taken:
        return f"{stamp}-{max(taken) + 1:04x}" if max(taken) < 0xFFFF else f"{stamp}-ffff"
    return f"{stamp}-{secrets.randbelow(0x8000):04x}"


def _write_durably(path: Path, text: str) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_pointer(path: Path, version: str) -> None:
    """Replaces a pointer file (CURRENT, PINNED) atomically."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    try:
        _write_durably(tmp, version + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def read_pointer(path: Path) -> str | None:
    try:
        text = path.read_text(encoding="utf-8").strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, UnicodeDecodeError) as exc:  # a directory, unreadable, not text: no version
        log.warning("%s cannot be read as a model version: %s", path, exc)
        return None
    if not VERSION.match(text):
        log.warning("%s does not name a model version: %r", path, text[:80])
        return None
    return text


def list_versions(base: Path) -> list[str]:
    """Published versions of a shop, oldest first."""
    if not base.is_dir():
        return []
    return sorted(p.name for p in base.iterdir() if VERSION.match(p.name) and p.is_dir())


def prune(base: Path, keep: int) -> list[str]:
    """Deletes all but the newest keep versions, never the current or pinned one; also
    temporary directories left by crashed trainings. Returns the versions deleted."""
    versions = list_versions(base)
    kept = set(versions[-max(1, keep):]) | {read_pointer(base / CURRENT), read_pointer(base / PINNED)}
    removed = [v for v in versions if v not in kept]
    for version in removed:
        shutil.rmtree(base / version, ignore_errors=True)
    for tmp in base.glob(".tmp-*"):
        try:
            if time.time() - tmp.stat().st_mtime > _STALE_TMP_S:
                shutil.rmtree(tmp, ignore_errors=True)
        except FileNotFoundError:
            pass
    return removed


# -- reading --------------------------------------------------------------------------
_FLOAT_ARRAYS = ("item_vectors", "item_biases", "user_vectors", "user_feature_vectors")
_ARRAYS = (*_FLOAT_ARRAYS, "item_ids", "user_ids", "user_feature_names", "bought_together_indptr",
           "bought_together_indices", "popularity")


def load_artifact(path: Path) -> ModelArtifact:
    """Loads and checks one version directory; raises ArtifactError saying what is wrong."""
    path = Path(path)
    meta_path, arrays_path = path / META_FILE, path / ARRAYS_FILE
    for required in (meta_path, arrays_path):
        if not required.is_file():
            raise ArtifactError(f"{path}: {required.name} is missing")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"{meta_path}: cannot be read: {exc}") from None
    if not isinstance(meta, dict):
        raise ArtifactError(f"{meta_path}: not a JSON object")
    try:
        with np.load(arrays_path, allow_pickle=False) as npz:
            missing = [name for name in _ARRAYS if name not in npz.files]
            if missing:
                raise ArtifactError(f"{arrays_path}: missing array(s) {', '.join(missing)}")
            arrays = {name: npz[name] for name in _ARRAYS}
    except ArtifactError:
        raise
    except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ArtifactError(f"{arrays_path}: cannot be read (truncated or not an npz file): {exc}") from None
    try:
        return _artifact(path, meta, arrays)
    except ArtifactError as exc:
        raise ArtifactError(f"{path}: {exc}") from None


def _artifact(path: Path, meta: dict, arrays: dict[str, np.ndarray]) -> ModelArtifact:
    counts = meta.get("counts")
    if not isinstance(counts, dict):
        raise ArtifactError("meta.json has no counts")
    try:
        n_items, n_users, d, n_features = (int(counts[k]) for k in ("items", "users", "components", "user_features"))
    except (KeyError, TypeError, ValueError):
        raise ArtifactError("meta.json counts need items, users, components and user_features") from None
    item_ids = _decode_text(arrays["item_ids"], "item_ids")
    user_ids = _decode_text(arrays["user_ids"], "user_ids")
    feature_names = _decode_text(arrays["user_feature_names"], "user_feature_names")
    expected = {
        "item_vectors": (n_items, d), "item_biases": (n_items,), "user_vectors": (n_users, d),
        "user_feature_vectors": (n_features, d),
    }
    for name, shape in expected.items():
        array = arrays[name]
        if array.shape != shape:
            raise ArtifactError(f"{name} has shape {array.shape}, meta.json says {shape}")
        if array.dtype != np.float32:
            raise ArtifactError(f"{name} is {array.dtype}, not float32")
        if not np.all(np.isfinite(array)):
            raise ArtifactError(f"{name} has values that are not finite")
    for name, ids, n in (("item_ids", item_ids, n_items), ("user_ids", user_ids, n_users),
                         ("user_feature_names", feature_names, n_features)):
        if len(ids) != n:
            raise ArtifactError(f"{name} has {len(ids)} entries, meta.json says {n}")
        if len(set(ids)) != n:
            raise ArtifactError(f"{name} has duplicates")
    indptr, indices, popular = arrays["bought_together_indptr"], arrays["bought_together_indices"], arrays["popularity"]
    if indptr.shape != (n_items + 1,) or indptr[0] != 0 or np.any(np.diff(indptr) < 0) or indptr[-1] != len(indices):
        raise ArtifactError("bought_together_indptr does not match the items")
    for name, refs in (("bought_together_indices", indices), ("popularity", popular)):
        if refs.ndim != 1 or (refs.size and (refs.min() < 0 or refs.max() >= n_items)):
            raise ArtifactError(f"{name} refers to items that do not exist")
    together = {
        item_ids[n]: [item_ids[j] for j in indices[indptr[n] : indptr[n + 1]]]
        for n in range(n_items) if indptr[n + 1] > indptr[n]
    }
    for name in _FLOAT_ARRAYS:
        arrays[name].setflags(write=False)
    version = str(meta.get("version") or path.name)
    return ModelArtifact(
        shop=str(meta.get("shop") or path.parent.name), version=version, path=path,
        item_ids=item_ids, item_index={item_id: n for n, item_id in enumerate(item_ids)},
        item_vectors=arrays["item_vectors"], item_biases=arrays["item_biases"],
        user_ids=user_ids, user_index={vid: n for n, vid in enumerate(user_ids)},
        user_vectors=arrays["user_vectors"], user_feature_names=feature_names,
        user_feature_vectors=arrays["user_feature_vectors"], bought_together=together,
        popularity=[item_ids[n] for n in popular], meta=meta,
    )


def _decode_text(array: np.ndarray, name: str) -> list[str]:
    try:
        values = json.loads(array.astype(np.uint8, copy=False).tobytes().decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise ArtifactError(f"{name} is not a list of strings") from None
    if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
        raise ArtifactError(f"{name} is not a list of strings")
    return values


# -- serving --------------------------------------------------------------------------
@dataclass
class _Loaded:
    artifact: ModelArtifact | None
    next_check: float
    failed: frozenset[str]  # versions that would not load: not retried (versions never change)


class ModelRegistry:
    """The model each shop serves: the PINNED version, else the CURRENT one.

    Every web worker has one. get() re-reads the pointer files at most every
    check_interval_s and loads a version when they name a new one; a version that fails
    to load is logged and the previous one kept serving.
    """

    def __init__(self, models_dir: Path, check_interval_s: float = 1.0) -> None:
        self.models_dir = Path(models_dir)
        self.check_interval_s = check_interval_s
        self._loaded: dict[str, _Loaded] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._locks_lock = threading.Lock()

    def get(self, shop: str) -> ModelArtifact | None:
        state = self._loaded.get(shop)
        if state is not None and time.monotonic() < state.next_check:
            return state.artifact
        with self._lock(shop):
            state = self._loaded.get(shop)
            if state is None or time.monotonic() >= state.next_check:
                state = self._refresh(shop, state)
                self._loaded[shop] = state
            return state.artifact

    def _lock(self, shop: str) -> threading.Lock:
        with self._locks_lock:
            return self._locks.setdefault(shop, threading.Lock())

    def _refresh(self, shop: str, state: _Loaded | None) -> _Loaded:
        previous = state.artifact if state else None
        failed = state.failed if state else frozenset()
        next_check = time.monotonic() + self.check_interval_s
        try:
            version = self.active_version(shop)
        except ArtifactError:
            return _Loaded(None, next_check, failed)
        if version is None:
            return _Loaded(None, next_check, failed)
        if (previous is not None and previous.version == version) or version in failed:
            return _Loaded(previous, next_check, failed)
        try:
            artifact = load_artifact(self._base(shop) / version)
        except ArtifactError as exc:
            kept = f"still serving {previous.version}" if previous else "no model to serve until it is fixed"
            log.error("shop %s: model version %s cannot be loaded (%s): %s", shop, version, kept, exc)
            return _Loaded(previous, next_check, failed | {version})
        log.info("shop %s: serving model version %s", shop, version)
        return _Loaded(artifact, next_check, failed)

    def _base(self, shop: str) -> Path:
        return shop_models_dir(self.models_dir, shop)

    # -- versions -------------------------------------------------------------------
    def versions(self, shop: str) -> list[str]:
        """Published versions, oldest first."""
        return list_versions(self._base(shop))

    def current_version(self, shop: str) -> str | None:
        return read_pointer(self._base(shop) / CURRENT)

    def pinned_version(self, shop: str) -> str | None:
        return read_pointer(self._base(shop) / PINNED)

    def active_version(self, shop: str) -> str | None:
        """The version to serve: the pinned one when it exists, else the current one."""
        base = self._base(shop)
        pinned = read_pointer(base / PINNED)
        if pinned is not None:
            if (base / pinned).is_dir():
                return pinned
            log.warning("shop %s: pinned model version %s does not exist; using the current one", shop, pinned)
        return read_pointer(base / CURRENT)

    def pin(self, shop: str, version: str) -> None:
        """Serves version from now on, whatever training publishes, until unpin()."""
        base = self._base(shop)
        if version not in self.versions(shop):
            raise ArtifactError(f"shop {shop!r} has no model version {version!r}")
        load_artifact(base / version)  # refuse to pin what would not load
        write_pointer(base / PINNED, version)

    def unpin(self, shop: str) -> None:
        (self._base(shop) / PINNED).unlink(missing_ok=True)

    def rollback(self, shop: str) -> str:
        """Pins the newest loadable version older than the one served, and returns it."""
        active = self.active_version(shop)
        if active is None:
            raise ArtifactError(f"shop {shop!r} has no model to roll back from")
        for version in reversed([v for v in self.versions(shop) if v < active]):
            try:
                self.pin(shop, version)
            except ArtifactError as exc:
                log.warning("shop %s: skipping model version %s: %s", shop, version, exc)
                continue
            return version
        raise ArtifactError(f"shop {shop!r} has no model version older than {active} to roll back to")
