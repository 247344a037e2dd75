"""Retraining when enough new data came in: the `retrain` job of `vitrine worker`.

Every `retrain_interval_s` the job counts, for each shop, the interactions the model learns
from (views of items, cart adds, purchases, ratings) received since its newest model was
trained, and trains a new one with `train_shop` once they reach
`retrain_min_new_interactions`. A shop without a model gets its first one once it has that
many in all. Web workers never train: they pick the new version up by themselves.

The newest model is the CURRENT version, not a pinned one: a pin chooses what is served,
training goes on beside it (see docs/recommendations.md).
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from server.recommend.artifact import META_FILE, ArtifactError, ModelRegistry, shop_models_dir
from server.recommend.dataset import EVENT_WEIGHTS

if TYPE_CHECKING:
    from server.store import Store
    from server.worker import Job

TRAINED_TYPES = tuple(EVENT_WEIGHTS)  # the event types training learns from


def trained_at(registry: ModelRegistry, shop: str) -> datetime | None:
    """When the shop's newest model was saved (naive UTC), None without one."""
    version = registry.current_version(shop)
    if version is None:
        return None
    path = shop_models_dir(registry.models_dir, shop) / version / META_FILE
    try:
        created = json.loads(path.read_text())["created_at"]
        return datetime.strptime(created, "%Y-%m-%dT%H:%M:%SZ")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ArtifactError(f"shop {shop!r}: model {version} has no readable created_at in {path}: {exc}") from None


def new_interactions(store: "Store", registry: ModelRegistry, shop: str) -> int:
    """Interactions the shop received since its newest model was trained (all without one)."""
    since = trained_at(registry, shop)
    # created_at is in whole seconds: from the next second, so that the events the model was
    # trained on are not counted again (the few that arrived while it trained are left out).
    return store.count_events_received(shop, TRAINED_TYPES, None if since is None else since + timedelta(seconds=1))


def retrain_if_due(services: Any, shop: str) -> str:
    """Train the shop's model when enough new interactions came in; what was done, in words."""
    from server.recommend.train import train_shop

    threshold = services.settings.retrain_min_new_interactions
    new = new_interactions(services.store, services.recommender.models, shop)
    if new < threshold:
        return f"{shop}: {new} new interactions (retrains at {threshold})"
    started = time.monotonic()
    report = train_shop(services.store, services.settings, shop)
    if report.artifact is None:
        return f"{shop}: {new} new interactions, none usable for training (no model written)"
    return f"{shop}: {new} new interactions, trained model {report.artifact.version} in {time.monotonic() - started:.1f} s"


def run_retraining(services: Any) -> str:
    """The `retrain` job: each shop's model retrained when due (idempotent: once trained, the
    count starts again from zero)."""
    if services.settings.retrain_min_new_interactions <= 0:
        return "off (retrain_min_new_interactions = 0)"
    done = []
    for shop in services.shops.ids():
        try:
            done.append(retrain_if_due(services, shop))
        except (ArtifactError, ValueError) as exc:  # one shop's broken model or data: the others go on
            done.append(f"{shop}: failed: {exc}")
    return "; ".join(done) or "no shops"


def jobs(settings: Any) -> "list[Job]":
    from server.worker import Job

    return [Job("retrain", settings.retrain_interval_s, run_retraining)]
