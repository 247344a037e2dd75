"""Navigation order and category pages: the shop's menu and product grids, ordered for one visitor.

Menu: each entry the shop marks (a category slug or name) is matched against the catalog's
categories, then ranked by the visitor's time-decayed category affinity (server.affinity).
A visitor with a short history gets the categories of their model top picks blended in;
one with less than the shop's minimum evidence keeps the shop's own order, and pinned or
unknown entries never move.

Category pages: the items of a category (and of the categories below it, for catalogs with
paths like "Home > Kitchen") ordered by the model for this visitor, by sales or by trend.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import numpy as np

from server import trending
from server.affinity import Affinity, category_affinity
from server.b2b.prices import items_barred_for
from server.models import CatalogItem, Event, utcnow
from server.shops import NavConfig
from server.taxonomy import slugify

if TYPE_CHECKING:
    from server.catalog import Catalog
    from server.context import VisitorContext
    from server.recommend.serving import Recommender

PATH_SEPARATOR = " > "
SORTS = ("personal", "bestsellers", "trending")
MAX_MENU_ENTRIES = 60
MAX_PER_PAGE = 96
MAX_CATEGORY_ITEMS = 10_000  # items of one category ordered per request
MODEL_PICKS = 30  # top picks whose categories stand in for a short history
# The catalog's categories are read once per shop in this time: a group-by over every item
# (6.6 ms for 100,000 items) on every page call with a menu would cost more than the rest.
# A product page is recorded twice: the page call's page view, and the shop's own
# view_item by beacon. Within this window they are one view.
SAME_VIEW = timedelta(minutes=30)


# -- the catalog's categories -----------------------------------------------------------
@dataclass(frozen=True)
class CategoryIndex:
    """Every category of a catalog by slug, with each ancestor of a path as a category too."""

    paths: dict[str, str]  # slug -> the category path ("Home > Kitchen")
    members: dict[str, tuple[str, ...]]  # slug -> catalog categories at or below it
    counts: dict[str, int]  # slug -> items at or below it
    top: tuple[str, ...]  # top-level slugs, most items first

    @classmethod
    def build(cls, categories: list[tuple[str, int]]) -> "CategoryIndex":
        """From `Store.categories`: (category, items) pairs, most items first."""
        paths: dict[str, str] = {}
        members: dict[str, list[str]] = {}
        counts: dict[str, int] = {}
        for category, count in categories:
            parts = [p.strip() for p in category.split(PATH_SEPARATOR.strip())]
            for depth in range(1, len(parts) + 1):
                path = PATH_SEPARATOR.join(parts[:depth])
                slug = slugify(path)
                if not slug:
                    continue
                paths.setdefault(slug, path)
                members.setdefault(slug, []).append(category)
                counts[slug] = counts.get(slug, 0) + count
        top = sorted((s for s, p in paths.items() if PATH_SEPARATOR not in p), key=lambda s: (-counts[s], s))
        return cls(paths, {s: tuple(m) for s, m in members.items()}, counts, tuple(top))

    def match(self, key: str) -> str | None:
        """The slug of the category a menu entry names (a slug or a name, any case), if any."""
        slug = slugify(key)
        return slug if slug in self.paths else None

    def label(self, slug: str) -> str:
        return self.paths[slug].split(PATH_SEPARATOR)[-1]


# -- results ---------------------------------------------------------------------------
@dataclass
class NavEntry:
    key: str  # as the shop's menu names it
    slug: str  # the catalog category it matched ("" when none)
    label: str  # the category's own name, for a rendered menu
    affinity: float = 0.0  # the visitor's share of affinity for it, 0..1
    model: float = 0.0  # its share of the visitor's model top picks, 0..1
    score: float = 0.0  # what it is ranked by
    evidence: int = 0  # events behind the affinity
    fixed: str = ""  # why it never moves: "pinned", "not a catalog category", "repeated"
    why: str = ""  # why it stands where it does

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.key, "category": self.slug, "score": round(self.score, 4),
            "affinity": round(self.affinity, 4), "model": round(self.model, 4), "evidence": self.evidence,
            "why": self.why,
        }


@dataclass
class NavOrder:
    order: list[str]  # the shop's keys, in the order for this visitor
    moved: bool  # differs from the shop's order
    basis: str  # "shop" (unchanged), "affinity", or "affinity+model"
    reason: str
    evidence: int  # events on the menu's categories
    model_weight: float  # how much of the score came from the model's top picks
    entries: list[NavEntry] = field(default_factory=list)  # in the new order

    def as_json(self) -> dict[str, Any]:
        """The page call's `nav` answer."""
        return {"order": self.order, "moved": self.moved, "basis": self.basis}

    def debug(self) -> dict[str, Any]:
        return {
            **self.as_json(), "reason": self.reason, "evidence": self.evidence,
            "model_weight": round(self.model_weight, 4), "entries": [e.as_dict() for e in self.entries],
        }


@dataclass
class CategoryPage:
    slug: str
    name: str  # the category path
    sort: str  # as requested
    served: str  # the order actually used ("bestsellers" when "personal" has no model)
    page: int
    per_page: int
    total: int
    items: list[CatalogItem]
    scores: dict[str, float] = field(default_factory=dict)  # item -> the score it was ordered by

    @property
    def pages(self) -> int:
        return max(1, -(-self.total // self.per_page))

    def as_json(self) -> dict[str, Any]:
        """The order-only answer (`format=json`), for shops that render the grid themselves."""
        return {
            "category": self.slug, "name": self.name, "sort": self.served, "page": self.page,
            "per_page": self.per_page, "pages": self.pages, "total": self.total,
            "items": [i.item_id for i in self.items],
        }


class UnknownCategory(ValueError):
    pass


# -- the service -----------------------------------------------------------------------
class Navigator:
    def __init__(self, catalog: "Catalog", recommender: "Recommender | None", half_life_hours: float) -> None:
        self.catalog = catalog
        self.recommender = recommender
        self.half_life_hours = half_life_hours
        self._categories: dict[str, tuple[int, CategoryIndex]] = {}  # shop -> (catalog version, index)

    def categories(self, shop: str) -> CategoryIndex:
        """The shop's catalog categories, built again when the catalog changed."""
        shop_catalog = self.catalog.shop(shop)
        cached = self._categories.get(shop)
        if cached is None or cached[0] != shop_catalog.version:
            cached = (shop_catalog.version, CategoryIndex.build(shop_catalog.categories))
            self._categories[shop] = cached
        return cached[1]

    def history(self, ctx: "VisitorContext") -> list[Event]:
        """The visitor's recent events, newest first, a product page counted once (none for a fresh visitor)."""
        return ctx.derive("nav:history", lambda: _one_event_per_view(ctx.history))

    def affinity(self, ctx: "VisitorContext") -> Affinity:
        """The visitor's affinity by catalog category (once per request: the menu and a category page share it)."""
        def compute() -> Affinity:
            events = self.history(ctx)
            ids = list(dict.fromkeys(i for e in events for i in e.item_ids()))
            category_of = {item.item_id: item.category for item in self.catalog.shop(ctx.shop).get(ids)}
            return category_affinity(events, category_of, utcnow(), self.half_life_hours)

        return ctx.derive(f"nav:affinity:{self.catalog.shop(ctx.shop).version}", compute, lasting=True)

    # -- the menu ------------------------------------------------------------------------
    def order_menu(
        self, ctx: "VisitorContext", keys: list[str], config: NavConfig, index: CategoryIndex | None = None
    ) -> NavOrder:
        """The shop's menu entries `keys` (in the shop's order) in the order for this visitor."""
        index = index or self.categories(ctx.shop)
        keys = list(keys)[:MAX_MENU_ENTRIES]
        pinned = {slugify(p) for p in config.pinned}
        entries, seen = [], set()
        for key in keys:
            slug = index.match(key) or ""
            entry = NavEntry(key=key, slug=slug, label=index.label(slug) if slug else key)
            if slugify(key) in pinned:
                entry.fixed = "pinned"
            elif not slug:
                entry.fixed = "not a catalog category"
            elif slug in seen:
                entry.fixed = "repeated"
            seen.add(slug)
            entry.why = entry.fixed
            entries.append(entry)
        movable = [e for e in entries if not e.fixed]

        affinity = self.affinity(ctx)
        shares = affinity.shares()
        for entry in movable:
            categories = index.members[entry.slug]
            entry.affinity = sum(shares.get(c, 0.0) for c in categories)
            entry.evidence = sum(affinity.evidence.get(c, 0) for c in categories)
        evidence = sum(e.evidence for e in movable)
        result = NavOrder(
            order=keys, moved=False, basis="shop", reason="", evidence=evidence, model_weight=0.0, entries=entries
        )
        if len(movable) < 2:
            return _unchanged(result, "fewer than two entries may move")
        if evidence < config.min_events:
            minimum = config.min_events
            return _unchanged(result, f"{evidence} events on these categories, below the minimum of {minimum}")

        weight = max(0.0, 1.0 - evidence / config.history_events)
        model_shares = self._model_shares(ctx, index, movable) if weight > 0 else {}
        if not model_shares:
            weight = 0.0
        for entry in movable:
            entry.model = model_shares.get(entry.slug, 0.0)
            entry.score = (1.0 - weight) * entry.affinity + weight * entry.model
            entry.why = "ranked" if entry.score else "no interest yet: keeps the shop's relative order"
        # Stable: entries the visitor shows no interest in keep the shop's relative order.
        ranked = iter(sorted(movable, key=lambda e: -e.score))
        ordered = [e if e.fixed else next(ranked) for e in entries]
        result.entries = ordered
        result.order = [e.key for e in ordered]
        result.moved = result.order != keys
        result.model_weight = weight
        result.basis = "affinity+model" if weight else "affinity"
        result.reason = f"{evidence} events on these categories" + (
            f"; a short history, so the model's top picks weigh {weight:.0%}" if weight else ""
        )
        return result

    def default_menu(self, shop: str, index: CategoryIndex | None = None) -> list[str]:
        """The top-level categories, most items first: the menu when the shop names none."""
        return list((index or self.categories(shop)).top)

    def _model_shares(self, ctx: "VisitorContext", index: CategoryIndex, movable: list[NavEntry]) -> dict[str, float]:
        """Each entry's share of the visitor's model top picks, the higher picks weighing more."""
        if self.recommender is None:
            return {}
        picks = self.recommender.recommend(ctx, "top_picks", MODEL_PICKS)
        if picks.strategy != "top_picks":
            return {}  # no model for this shop or visitor: popularity is not about them
        owner = {c: e.slug for e in movable for c in index.members[e.slug]}
        weights: dict[str, float] = {}
        for rank, item in enumerate(picks.items):
            slug = owner.get(item.category)
            if slug:
                weights[slug] = weights.get(slug, 0.0) + 1.0 / (rank + 1)
        total = sum(weights.values())
        return {s: w / total for s, w in weights.items()} if total else {}

    # -- category pages --------------------------------------------------------------
    def category_page(
        self, ctx: "VisitorContext", category: str, sort: str = "personal", page: int = 1, per_page: int = 24,
    ) -> CategoryPage:
        """One page of a category's items (and its sub-categories'), in the order `sort` asks for."""
        if sort not in SORTS:
            raise ValueError(f"unknown sort {sort!r}; known: {', '.join(SORTS)}")
        index = self.categories(ctx.shop)
        slug = index.match(category)
        if slug is None:
            raise UnknownCategory(f"unknown category {category!r}")
        members = index.members[slug]
        items: list[CatalogItem] = []
        shop_catalog = self.catalog.shop(ctx.shop)
        for member in members:
            items += shop_catalog.in_category(member, MAX_CATEGORY_ITEMS)
        barred = items_barred_for(self.catalog, ctx)  # what the visitor's group may not buy (server/b2b/)
        if barred:
            items = [i for i in items if i.item_id not in barred]
        served, scores = sort, {}
        if sort == "personal":
            scores = self._personal_scores(ctx, items)
            served = "personal" if scores else "bestsellers"  # no model yet: sales are the next best order
        if served != "personal":
            scores = self._popularity_scores(ctx.shop, served, members, {i.item_id for i in items})
        # Unscored items follow in the catalog's order (by title); what can be bought comes first.
        ordered = sorted(items, key=lambda i: (not i.in_stock, -scores.get(i.item_id, -np.inf)))
        per_page = max(1, min(MAX_PER_PAGE, per_page))
        page = max(1, page)
        start = (page - 1) * per_page
        return CategoryPage(
            slug=slug, name=index.paths[slug], sort=sort, served=served, page=page, per_page=per_page,
            total=len(ordered), items=ordered[start : start + per_page], scores=scores,
        )

    def _popularity_scores(self, shop: str, sort: str, members: tuple[str, ...], ids: set[str]) -> dict[str, float]:
        """Bestsellers: purchase rank; trending: decayed popularity rank. Higher is better."""
        if sort == "bestsellers":
            category = members[0] if len(members) == 1 else None
            ranked = self.catalog.bestsellers(shop, MAX_CATEGORY_ITEMS, category)
        else:
            ranked = self.catalog.trending(shop, trending.GLOBAL, MAX_CATEGORY_ITEMS)
        ranked = [i for i in ranked if i in ids]
        return {item_id: float(len(ranked) - n) for n, item_id in enumerate(ranked)}

    def _personal_scores(self, ctx: "VisitorContext", items: list[CatalogItem]) -> dict[str, float]:
        """The model's score for this visitor (standardised over the category) plus their
        affinity for the item's own category (which tells sub-categories apart)."""
        if self.recommender is None or not items:
            return {}
        values = _model_scores(self.recommender, ctx, [i.item_id for i in items])
        if values is None:
            return {}
        known = ~np.isnan(values)
        mean, std = values[known].mean(), values[known].std() or 1.0
        # Items the model has not seen yet (new in the catalog) sit at the average.
        standard = np.where(known, (values - mean) / std, 0.0)
        shares = self.affinity(ctx).shares()
        return {i.item_id: float(s) + shares.get(i.category, 0.0) for i, s in zip(items, standard)}


def _model_scores(recommender: "Recommender", ctx: "VisitorContext", item_ids: list[str]) -> np.ndarray | None:
    """The model's score of each item for this visitor (NaN for items it does not know);
    None without a model or anything to place the visitor with."""
    model, vector = recommender.vector_for(ctx)
    if model is None or vector is None:
        return None
    rows = np.array([model.item_index.get(i, -1) for i in item_ids])
    if not (rows >= 0).any():
        return None
    scores = np.full(len(item_ids), np.nan)
    known = rows >= 0
    scores[known] = model.item_vectors[rows[known]] @ vector + model.item_biases[rows[known]]
    return scores


def _unchanged(result: NavOrder, reason: str) -> NavOrder:
    result.reason = reason
    for entry in result.entries:
        entry.why = entry.why or "the shop's order: " + reason
    return result


def _one_event_per_view(events: list[Event]) -> list[Event]:
    """Drop the page call's page view of a product when the shop's own view_item of it is there."""
    viewed: dict[str, list] = {}
    for event in events:
        if event.type == "view_item" and event.item_id:
            viewed.setdefault(event.item_id, []).append(event.ts)
    def seen_by_the_shop(event: Event) -> bool:
        return any(abs(event.ts - t) <= SAME_VIEW for t in viewed.get(event.item_id or "", ()))

    return [e for e in events if not (e.type == "page_view" and e.item_id and seen_by_the_shop(e))]
