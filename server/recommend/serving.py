"""Serving recommendations: strategies over the saved model and the store, with a fallback chain.

Scores come from numpy on the artifact's embeddings (a dot product and argpartition),
never from `LightFM.predict`. Each strategy returns candidate item ids, best first; the
chain (the requested strategy, then trending, then bestsellers) fills the panel, so it is
never empty, and the result says which strategy served it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Callable

import numpy as np

from server import trending
from server.b2b.prices import items_barred_for
from server.models import CatalogItem, Event, utcnow

if TYPE_CHECKING:
    from server.catalog import Catalog
    from server.context import VisitorContext
    from server.recommend.artifact import ModelArtifact, ModelRegistry

log = logging.getLogger("vitrine.recommend")

STRATEGIES = (
    "top_picks", "similar", "bought_together", "recently_viewed", "buy_again",
    "trending", "trending_near_you", "bestsellers",
)
# After the requested strategy: its own stand-in, then the shop-wide chain. "catalog" (any
# items in stock) ends every chain, so a panel is never empty while the shop has items.
STAND_INS = {"bought_together": ("similar",), "trending_near_you": ("trending",)}
FALLBACKS = ("trending", "bestsellers", "catalog")
# A panel titled "Recently viewed" or "Buy it again" must not be padded with other items:
# these fall back only when they have nothing at all.
NOT_PADDED = {"recently_viewed", "buy_again"}
SESSION_VIEWS = 10  # views that steer the panel within a session


@dataclass(frozen=True)
class Filters:
    category: str = ""
    price_min: float | None = None
    price_max: float | None = None

    def accept(self, item: CatalogItem) -> bool:
        if self.category and item.category != self.category:
            return False
        if self.price_min is not None and (item.price is None or item.price < self.price_min):
            return False
        return not (self.price_max is not None and (item.price is None or item.price > self.price_max))


@dataclass
class History:
    """What this visitor did, newest first."""

    viewed: list[str] = field(default_factory=list)
    purchases: dict[str, list[datetime]] = field(default_factory=dict)

    @classmethod
    def from_events(cls, events: list[Event]) -> "History":
        history = cls()
        viewed: dict[str, None] = {}  # insertion-ordered: newest first, each item once
        for event in events:
            items = event.item_ids()
            # A product page's page view counts as a view at once: the shop's own view_item
            # event comes by beacon and may land after the next page's call.
            if event.type in ("view_item", "page_view"):
                viewed.update(dict.fromkeys(items))
            elif event.type == "purchase":
                for item in items:
                    history.purchases.setdefault(item, []).append(event.ts)
        history.viewed = list(viewed)
        return history


def visitor_history(ctx: "VisitorContext") -> History:
    """The visitor's history, read from their events once per request."""
    return ctx.derive("history", lambda: History.from_events(ctx.history), lasting=True)


@dataclass
class Recommendation:
    items: list[CatalogItem]
    strategy: str  # the strategy that served (the first one in the chain that gave items)
    chain: list[dict] = field(default_factory=list)  # each strategy tried: name, candidates, used, why
    anchor: str = ""  # the item similar and bought-together start from
    anchor_viewed: bool = False  # the anchor is the visitor's latest view, not the page's item


@dataclass
class _Request:
    ctx: "VisitorContext"
    anchor: str  # the item the page is about (or the last one viewed)
    history: History
    model: "ModelArtifact | None"
    limit: int
    filters: Filters


class Recommender:
    def __init__(self, catalog: "Catalog", models: "ModelRegistry | None") -> None:
        self.catalog = catalog
        self.models = models
        self._normalised: dict[int, np.ndarray] = {}  # id(item_vectors) -> unit rows, for cosine
        self._by_features: dict[tuple, list[str]] = {}  # (model version, features, limit) -> top picks
        self._strategies: dict[str, Callable[[_Request], list[str]]] = {
            "top_picks": self._top_picks,
            "similar": self._similar,
            "bought_together": self._bought_together,
            "recently_viewed": self._recently_viewed,
            "buy_again": self._buy_again,
            "trending": self._trending,
            "trending_near_you": self._trending_near_you,
            "bestsellers": self._bestsellers,
            "catalog": self._catalog,
        }

    def recommend(
        self, ctx: "VisitorContext", strategy: str, count: int, item_id: str = "", filters: Filters = Filters(),
        shown: set[str] = frozenset(),
    ) -> Recommendation:
        """`shown`: items already in other panels of this page, left out so panels differ."""
        if strategy not in self._strategies:
            raise ValueError(f"unknown strategy {strategy!r}; known: {', '.join(STRATEGIES)}")
        history = visitor_history(ctx)
        page_item = item_id or ctx.page.item_id
        anchor = page_item or (history.viewed[0] if history.viewed else "")
        model = self.models.get(ctx.shop) if self.models else None
        request = _Request(ctx=ctx, anchor=anchor, history=history, model=model, limit=max(count * 4, 40), filters=filters)
        exclude = {page_item} - {""}
        if strategy not in NOT_PADDED:
            # The visitor's own history is shown as it is, even where another panel has it.
            exclude |= set(shown) | ({anchor} - {""})
        if strategy != "buy_again":
            exclude |= set(history.purchases)

        result = Recommendation(items=[], strategy="", anchor=anchor, anchor_viewed=anchor != page_item)
        shop_catalog = self.catalog.shop(ctx.shop)
        barred = items_barred_for(self.catalog, ctx)  # what the visitor's group may not buy (server/b2b/)
        for name in dict.fromkeys((strategy, *STAND_INS.get(strategy, ()), *FALLBACKS)):
            candidates = [c for c in self._strategies[name](request) if c not in exclude and c not in barred]
            fresh = [c for c in candidates if c not in {i.item_id for i in result.items}]
            usable = [i for i in shop_catalog.get(fresh[: count * 3]) if i.in_stock and filters.accept(i)]
            taken = usable[: count - len(result.items)]
            result.chain.append({"strategy": name, "candidates": len(candidates), "used": len(taken)})
            if taken and not result.strategy:
                result.strategy = name
            result.items += taken
            if len(result.items) >= count or result.strategy in NOT_PADDED:
                break
        result.strategy = result.strategy or strategy
        return result

    # -- model-based -----------------------------------------------------------------
    def vector_for(self, ctx: "VisitorContext") -> tuple["ModelArtifact | None", np.ndarray | None]:
        """The shop's model and this visitor's vector in it (from their recent views), for
        other rankings (navigation, category pages) that score with the same model."""
        model = self.models.get(ctx.shop) if self.models else None
        if model is None:
            return None, None
        return model, self._vector(ctx, model, visitor_history(ctx))

    def _visitor_vector(self, request: _Request) -> np.ndarray | None:
        assert request.model is not None
        return self._vector(request.ctx, request.model, request.history)

    def _vector(self, ctx: "VisitorContext", model: "ModelArtifact", history: History) -> np.ndarray | None:
        """Once per request and model: the panels and the menu of one page place the visitor alike."""
        return ctx.derive(f"vector:{model.version}", lambda: visitor_vector(
            model, ctx.visitor_id, history.viewed[:SESSION_VIEWS], visitor_features(ctx)), lasting=True)

    def _top_picks(self, request: _Request) -> list[str]:
        model = request.model
        if model is None:
            return []
        ctx = request.ctx
        if model.user_index.get(ctx.visitor_id) is None and not request.history.viewed:
            # Known to the model by their features alone (most of all a first visit): every
            # visitor of that country, device class and kind gets the same picks.
            key = (model.version, tuple(sorted(visitor_features(ctx))), request.limit)
            picks = self._by_features.get(key)
            if picks is None:
                if len(self._by_features) >= 4096:
                    self._by_features.clear()
                picks = self._by_features[key] = self._scored_picks(request)
            return picks
        return self._scored_picks(request)

    def _scored_picks(self, request: _Request) -> list[str]:
        vector = self._visitor_vector(request)
        if vector is None:
            return []
        model = request.model
        # Once per request: the panels and the menu's top picks rank by the same scores; and
        # for a while, the visitor's top picks (their order by the model alone) as they are.
        def top() -> list[str]:
            scores = request.ctx.derive(f"scores:{model.version}", lambda: model.item_vectors @ vector + model.item_biases)
            return _top(scores, model.item_ids, request.limit)

        return request.ctx.derive(f"top:{model.version}:{request.limit}", top, lasting=True)

    def _similar(self, request: _Request) -> list[str]:
        model = request.model
        if model is None or request.anchor not in model.item_index:
            return []
        unit = self._unit_vectors(model)
        scores = unit @ unit[model.item_index[request.anchor]]
        return _top(scores, model.item_ids, request.limit + 1)

    def _unit_vectors(self, model: "ModelArtifact") -> np.ndarray:
        key = id(model.item_vectors)
        if key not in self._normalised:
            norms = np.linalg.norm(model.item_vectors, axis=1, keepdims=True)
            self._normalised = {key: model.item_vectors / np.maximum(norms, 1e-9)}  # keep one model's
        return self._normalised[key]

    def _bought_together(self, request: _Request) -> list[str]:
        return list(request.model.bought_together.get(request.anchor, [])) if request.model else []

    # -- history-based ---------------------------------------------------------------
    def _recently_viewed(self, request: _Request) -> list[str]:
        return [i for i in request.history.viewed if i != request.anchor]

    def _buy_again(self, request: _Request) -> list[str]:
        """Items bought before, the most overdue first by the visitor's own cadence for them."""
        now = utcnow()
        due: list[tuple[float, str]] = []
        for item, times in request.history.purchases.items():
            times = sorted(times)
            since = (now - times[-1]).total_seconds()
            if len(times) > 1:
                cadence = (times[-1] - times[0]).total_seconds() / (len(times) - 1) or 86400.0
                due.append((since / cadence, item))
            else:
                due.append((-1.0 / (1.0 + since), item))  # bought once: after the repeat buys, newest first
        return [item for _, item in sorted(due, reverse=True)]

    # -- popularity ------------------------------------------------------------------
    def _trending(self, request: _Request) -> list[str]:
        return self.catalog.trending(request.ctx.shop, trending.GLOBAL, request.limit)

    def _trending_near_you(self, request: _Request) -> list[str]:
        country = request.ctx.geo.country
        return self.catalog.trending(request.ctx.shop, f"country:{country}", request.limit) if country else []

    def _bestsellers(self, request: _Request) -> list[str]:
        return self.catalog.bestsellers(request.ctx.shop, request.limit, request.filters.category or None)

    def _catalog(self, request: _Request) -> list[str]:
        category = request.filters.category or None
        return [i.item_id for i in self.catalog.shop(request.ctx.shop).in_category(category, request.limit)]


def visitor_features(ctx: "VisitorContext") -> set[str]:
    """The user feature names the model knows a visitor by (see server/recommend/dataset.py)."""
    return {f"country:{ctx.geo.country}", f"device:{ctx.device.device_class}", f"segment:{ctx.visitor_kind}"}


def visitor_vector(
    model: "ModelArtifact", visitor_id: str, recent_items: list[str], features: set[str] = frozenset()
) -> np.ndarray | None:
    """A visitor in the model's space: their trained vector if the model knows them, else the
    mean of their features' vectors (when features are given); plus the mean of the items
    they interacted with lately, so it follows what they look at within a visit."""
    parts = []
    known = model.user_index.get(visitor_id) if visitor_id else None
    if known is not None:
        parts.append(model.user_vectors[known])
    elif features:
        rows = [i for i, name in enumerate(model.user_feature_names) if name in features]
        if rows:
            parts.append(model.user_feature_vectors[rows].mean(axis=0))
    recent = [model.item_index[i] for i in recent_items if i in model.item_index]
    if recent:
        parts.append(model.item_vectors[recent].mean(axis=0))
    return np.sum(parts, axis=0) if parts else None


def _top(scores: np.ndarray, ids: list[str], k: int) -> list[str]:
    """The ids of the k highest scores, best first (argpartition, then sort only those k)."""
    k = min(k, len(ids))
    if k <= 0:
        return []
    top = np.argpartition(-scores, k - 1)[:k]
    return [ids[i] for i in top[np.argsort(-scores[top])]]
