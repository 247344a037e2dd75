"""Personalized search: full-text candidates from the shop's index, re-ranked for the visitor.

One `SearchService` per process holds a `SearchIndex` per shop (`<data_dir>/search/<shop>/`,
opened on first use). A search takes the top `CANDIDATES` BM25 hits and orders them by

    score = tier + (1 - w) * text + w * personal

- `tier` is 1 for the items that match every word of a multi-word query (the index's
  all-words bonus), else 0: no personal score lifts a partial match above a full one;
- `text` is the BM25 score within its tier divided by the best one of that tier (0..1);
- `personal` is the mean of what is known about the visitor: the model score (their
  vector over the candidates' item vectors, min-max normalised over the candidates) and
  the category affinity (the candidate's category's share of the visitor's affinity);
- `w` is the `search_personal_weight` setting.

A visitor with no history and no model vector gets w = 0: the plain text ranking. Out-of-
stock items come last, in the same order among themselves. Searches feed the affinity:
each recent search term counts 1 (decayed like a view), shared among the categories of
its top results.

Popular searches (what an empty box suggests) are counted off the request path, by the
`popular-searches` job of `vitrine worker` (`jobs()` below), into the `popular_searches`
table; the search box reads that table. Each search served is counted for the dashboard
(`count_served`: searches and zero-result searches per day and term, server/search_counts.py).
"""

from __future__ import annotations

import re
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np

from server.affinity import WEIGHTS as AFFINITY_WEIGHTS
from server.b2b.prices import items_barred_for
from server.catalog import Catalog
from server.affinity import Affinity, category_affinity
from server.models import CatalogItem, Event, utcnow
from server.recommend.serving import visitor_vector
from server.search_index import ALL_WORDS_BONUS, Hit, SearchIndex

if TYPE_CHECKING:
    from server.context import VisitorContext
    from server.recommend.artifact import ModelArtifact, ModelRegistry
    from server.store import Store
    from server.worker import Job

CANDIDATES = 200  # BM25 hits re-ranked per search; also the most results a search has
MODEL_ITEMS = 10  # items the visitor interacted with lately that steer the model vector
SEARCH_TERMS = 5  # recent distinct searches that count in the category affinity
SEARCH_TOP = 5  # a past search counts toward the categories of this many top results
# A past search's top results are kept per process for a few minutes: a returning visitor's
# searches are re-read on each search they make, and each one is a full query (1-2 ms at
# 100k items). An import shows in them at once here, within the TTL in other processes.
SEARCH_TOPS_TTL_S = 300.0
SEARCH_TOPS_KEPT = 10_000
POPULAR_DAYS = 30  # popular searches: search events of the last 30 days
POPULAR_KEPT = 20  # popular searches saved per shop (a box shows 8)
POPULAR_COUNTED = 200  # most searched terms looked at, before the ones not to show are left out
# Asked for on every focus of an empty box: each process keeps what it read for a second.
POPULAR_TTL_S = 1.0
MAX_QUERY_CHARS = 200
INTERACTIONS = tuple(AFFINITY_WEIGHTS)  # event types that say which items a visitor cares about


@dataclass(frozen=True)
class ScoredItem:
    """One result with every part of its score (what the debug view shows)."""

    item_id: str
    category: str
    in_stock: bool
    bm25: float  # the index's raw score
    tier: int  # 1: matched every word of a multi-word query
    text: float  # 0..1: the BM25 score within its tier over the tier's best
    model: float | None  # 0..1 over the candidates; None without a model vector
    affinity: float | None  # 0..1: the category's share; None without history
    personal: float  # mean of model and affinity (0 when neither is known)
    score: float  # tier + (1 - w) * text + w * personal
    item: CatalogItem | None = None  # the whole item, for the results of the requested page

    def as_dict(self) -> dict:
        def rounded(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "item_id": self.item_id, "title": self.item.title if self.item else None, "category": self.category,
            "in_stock": self.in_stock, "bm25": round(self.bm25, 3), "tier": self.tier, "text": rounded(self.text),
            "model": rounded(self.model), "affinity": rounded(self.affinity), "personal": rounded(self.personal),
            "score": rounded(self.score),
        }


@dataclass
class SearchResults:
    query: str
    items: list[ScoredItem]  # the requested page, best first, each with its item
    total: int  # results in all (at most CANDIDATES)
    more: bool  # more items match than the CANDIDATES ranked
    offset: int
    limit: int
    personalized: bool  # False: the plain text ranking
    weight: float  # the blend weight used (0 when not personalized)
    signals: dict = field(default_factory=dict)  # what was known about the visitor

    @property
    def strategy(self) -> str:
        return "personal" if self.personalized else "text"


@dataclass
class VisitorSignals:
    """What the ranking knows about a visitor: their category affinity and model vector."""

    affinity: Affinity
    vector: np.ndarray | None
    searches: list[str]  # recent search terms that counted in the affinity, newest first
    interacted: list[str]  # items they viewed, carted or bought lately, newest first

    @property
    def known(self) -> bool:
        return self.vector is not None or self.affinity.total > 0

    def describe(self) -> dict:
        total = self.affinity.total
        shares = {c: round(self.affinity.scores[c] / total, 4) for c in self.affinity.ranked()[:8]} if total else {}
        return {
            "affinity": shares,
            "model_vector": self.vector is not None,
            "searches": self.searches,
            "items": self.interacted[:MODEL_ITEMS],
        }


class SearchService:
    def __init__(
        self, store: "Store", models: "ModelRegistry | None", root: Path, weight: float, half_life_hours: float,
        popular_min_visitors: int = 10, catalog: "Catalog | None" = None,
        counter: "Callable[[str, str, int, datetime], None] | None" = None,
    ) -> None:
        self.store = store
        # Where a served search is counted (PageViewWriter.count_search: with the next batch
        # of page views, server/search_counts.py); None: not counted.
        self.counter = counter
        self.catalog = catalog or Catalog(store)  # what a search reads of items: memory
        self.popular_min_visitors = max(1, popular_min_visitors)
        self.models = models
        self.root = Path(root)
        self.weight = min(1.0, max(0.0, weight))
        self.half_life_hours = half_life_hours
        self._indexes: dict[str, SearchIndex] = {}
        self._lock = threading.Lock()
        self._past_tops: dict[tuple[str, str], tuple[float, list[str]]] = {}  # (shop, term) -> (until, ids)
        self._popular: dict[tuple[str, int], tuple[float, tuple[list[str], str]]] = {}  # -> (when, found)
        self.popular_ttl_s = POPULAR_TTL_S

    # -- the index -------------------------------------------------------------------
    def index(self, shop: str) -> SearchIndex:
        found = self._indexes.get(shop)
        if found is None:
            with self._lock:
                found = self._indexes.get(shop)
                if found is None:
                    found = self._indexes[shop] = SearchIndex(self.root / shop)
        return found

    def sync(self, shop: str, items: Sequence[CatalogItem]) -> int:
        """Add or replace these items in the shop's index (an import's items); one commit."""
        self.index(shop).upsert(items)
        self._past_tops.clear()
        return len(items)

    def rebuild(self, shop: str) -> int:
        """A fresh index of every item in the store. It replaces the index directory, so run
        it while no server is serving the shop (`vitrine demo` does before it serves)."""
        with self._lock:
            old = self._indexes.pop(shop, None)
            if old is not None:
                old.close()
            shutil.rmtree(self.root / shop, ignore_errors=True)
        items = self.store.all_items(shop)
        self.index(shop).upsert(items)
        self._past_tops.clear()
        return len(items)

    def in_step(self, shop: str) -> bool:
        """Whether the index holds as many items as the store (a missing index holds none)."""
        try:
            return self.index(shop).count() == self.store.count_items(shop)
        except ValueError:  # a directory of another layout
            return False

    def close(self) -> None:
        with self._lock:
            for index in self._indexes.values():
                index.close()
            self._indexes.clear()

    # -- searching -------------------------------------------------------------------
    def search(self, ctx: "VisitorContext", query: str, limit: int = 24, offset: int = 0) -> SearchResults:
        """The visitor's page of results for `query`."""
        events = ctx.history
        model = self.models.get(ctx.shop) if self.models else None
        barred = items_barred_for(self.catalog, ctx)
        return self.rank(ctx.shop, query, ctx.visitor_id, events, utcnow(), model, limit, offset, barred)

    def count_served(self, ctx: "VisitorContext", query: str, results: int) -> None:
        """Count a search this server answered (its first page) for the dashboard: how often
        each term is searched and finds nothing. Not for a bot, nor for a visitor whose
        consent does not allow their searches to be recorded."""
        if self.counter is None or ctx.device.device_class == "bot" or not ctx.consent.allows("search"):
            return
        self.counter(ctx.shop, query[:MAX_QUERY_CHARS], results, utcnow())

    def rank(
        self, shop: str, query: str, visitor_id: str, events: Sequence[Event], now: datetime,
        model: "ModelArtifact | None", limit: int = 24, offset: int = 0, barred: frozenset[str] = frozenset(),
    ) -> SearchResults:
        """The ranking itself, for a visitor given by id and recent events (newest first).
        `barred`: items the visitor's customer group may not buy, never found (server/b2b/)."""
        query = query.strip()[:MAX_QUERY_CHARS]
        index = self.index(shop)
        hits = index.search(query, CANDIDATES + 1) if query else []
        more, hits = len(hits) > CANDIDATES, hits[:CANDIDATES]
        interacted = list(dict.fromkeys(i for e in events if e.type in INTERACTIONS for i in e.item_ids()))
        searches = _recent_searches(events, query)
        search_tops = {term: self._past_search_top(shop, term) for term, _ in searches}
        # One read for the candidates and for the items the visitor's history is about.
        wanted = [h.item_id for h in hits] + interacted + [i for top in search_tops.values() for i in top]
        shop_catalog = self.catalog.shop(shop)
        facts = shop_catalog.facts(list(dict.fromkeys(wanted)))
        category_of = {item_id: category for item_id, (category, _) in facts.items()}
        signals = VisitorSignals(
            self._affinity(events, searches, search_tops, category_of, now),
            _visitor_vector(model, visitor_id, interacted), [t for t, _ in searches], interacted,
        )
        weight = self.weight if signals.known else 0.0
        # Not an item the store no longer has, nor one the visitor's group may not buy.
        candidates = [h for h in hits if h.item_id in facts and h.item_id not in barred]
        scored = _blend(candidates, facts, signals, model, weight)
        page = scored[offset : offset + limit]
        items = {i.item_id: i for i in shop_catalog.get([s.item_id for s in page])}
        return SearchResults(
            query=query, items=[replace(s, item=items[s.item_id]) for s in page if s.item_id in items],
            total=len(scored), more=more, offset=offset, limit=limit, personalized=weight > 0, weight=weight,
            signals=signals.describe(),
        )

    def _past_search_top(self, shop: str, term: str) -> list[str]:
        now = time.monotonic()
        kept = self._past_tops.get((shop, term))
        if kept is not None and kept[0] > now:
            return kept[1]
        top = [h.item_id for h in self.index(shop).search(term, SEARCH_TOP)]
        if len(self._past_tops) >= SEARCH_TOPS_KEPT:
            self._past_tops.clear()
        self._past_tops[(shop, term)] = (now + SEARCH_TOPS_TTL_S, top)
        return top

    def _affinity(
        self, events: Sequence[Event], searches: list[tuple[str, datetime]], search_tops: dict[str, list[str]],
        category_of: dict[str, str], now: datetime,
    ) -> Affinity:
        """Category affinity from the visitor's events, plus their recent searches: each counts
        1, decayed like a view, shared among the categories of its top results."""
        affinity = category_affinity(events, category_of, now, self.half_life_hours)
        for term, ts in searches:
            categories = [category_of[i] for i in search_tops[term] if category_of.get(i)]
            decayed = 0.5 ** (max(0.0, (now - ts).total_seconds()) / 3600.0 / self.half_life_hours)
            for category in categories:
                affinity.scores[category] = affinity.scores.get(category, 0.0) + decayed / len(categories)
                affinity.evidence[category] = affinity.evidence.get(category, 0) + 1
        return affinity

    # -- the search box --------------------------------------------------------------
    def suggest(self, shop: str, prefix: str, limit: int = 8) -> list[str]:
        """Completions of what is being typed (see `SearchIndex.suggest`)."""
        return self.index(shop).suggest(prefix[:MAX_QUERY_CHARS], limit)

    def popular(self, shop: str, limit: int = 8) -> tuple[list[str], str]:
        """Searches for an empty box: the shop's popular searches as the worker last counted
        them ("searches", see `count_popular`), else its largest categories ("categories").
        A count older than the 30 days it covers is not shown (no worker has run since)."""
        kept = self._popular.get((shop, limit))
        if kept is not None and time.monotonic() - kept[0] < self.popular_ttl_s:
            return kept[1]
        saved = self.store.saved_popular_searches(shop, limit, utcnow() - timedelta(days=POPULAR_DAYS))
        terms = [t for t, _ in saved]
        found = (terms, "searches") if terms else ([c for c, _ in self.catalog.shop(shop).categories[:limit]], "categories")
        self._popular[(shop, limit)] = (time.monotonic(), found)
        return found

    def count_popular(self, shop: str) -> list[tuple[str, int]]:
        """Count the shop's popular searches and save them: its most searched terms of the
        last 30 days that find something, with how many visitors searched each.

        Everyone sees them, so one visitor's search is never enough: a term is kept once
        `popular_min_visitors` distinct visitors searched it, only when it finds items in
        the catalog, and never when it looks like personal data (`showable_term`). It reads
        a month of search events: the worker's job, never a request's."""
        now = utcnow()
        index = self.index(shop)
        counted = self.store.popular_searches(
            shop, now - timedelta(days=POPULAR_DAYS), POPULAR_COUNTED, self.popular_min_visitors,
        )
        kept = [(t, n) for t, n in counted if showable_term(t) and index.search(t, 1)][:POPULAR_KEPT]
        self.store.save_popular_searches(shop, kept, now)
        self._popular.clear()
        return kept

    def spelling(self, shop: str, query: str) -> str | None:
        """A corrected query that finds something, or None."""
        index = self.index(shop)
        corrected = index.spelling(query[:MAX_QUERY_CHARS])
        return corrected if corrected and index.search(corrected, 1) else None


def run_popular_searches(services: Any) -> str:
    """The `popular-searches` job: count every shop's popular searches (idempotent)."""
    counted = {shop: len(services.search.count_popular(shop)) for shop in services.shops.ids()}
    return ", ".join(f"{shop}: {n} term{'' if n == 1 else 's'}" for shop, n in counted.items()) or "no shops"


def jobs(settings: Any) -> "list[Job]":
    from server.worker import Job

    return [Job("popular-searches", settings.popular_searches_interval_s, run_popular_searches)]


_URL_LIKE = re.compile(r"://|^www\.|[a-z0-9-]{2,}\.(?:[a-z]{2,24})(?:[/:?#]|$)", re.IGNORECASE)
_EMAIL_LIKE = re.compile(r"\S@\S")
_DIGIT_RUN = re.compile(r"\d{6,}")
MAX_POPULAR_CHARS = 40


def showable_term(term: str) -> bool:
    """May this search term be shown to other visitors? Not when it looks like a URL, an
    e-mail address or a long digit run (a phone, card or order number), nor when it is long."""
    squeezed = re.sub(r"[\s().-]", "", term)
    return bool(term) and len(term) <= MAX_POPULAR_CHARS and not (
        _URL_LIKE.search(term) or _EMAIL_LIKE.search(term) or _DIGIT_RUN.search(squeezed)
    )


def _blend(
    hits: list[Hit], facts: dict[str, tuple[str, bool]], signals: VisitorSignals, model: "ModelArtifact | None",
    weight: float,
) -> list[ScoredItem]:
    """The candidates scored and ordered: in stock first, then by tier + blended score; equal
    scores keep the index's order."""
    tiers = [int(h.score // ALL_WORDS_BONUS) for h in hits]
    within = [h.score - t * ALL_WORDS_BONUS for h, t in zip(hits, tiers)]
    best: dict[int, float] = {}
    for tier, score in zip(tiers, within):
        best[tier] = max(best.get(tier, 0.0), score)
    model_scores = _model_scores(model, signals.vector, [h.item_id for h in hits])
    affinity = signals.affinity
    all_shares = affinity.shares()
    shares = {c: all_shares.get(c, 0.0) for c, _ in facts.values()} if all_shares else None
    scored = []
    for n, hit in enumerate(hits):
        category, in_stock = facts[hit.item_id]
        text = within[n] / best[tiers[n]] if best[tiers[n]] > 0 else 0.0
        model_part = None if model_scores is None else float(model_scores[n])
        share = None if shares is None else shares[category]
        parts = [p for p in (model_part, share) if p is not None]
        personal = sum(parts) / len(parts) if parts else 0.0
        score = tiers[n] + (1.0 - weight) * text + weight * personal
        scored.append(ScoredItem(hit.item_id, category, in_stock, hit.score, tiers[n], text, model_part, share,
                                 personal, score))
    scored.sort(key=lambda s: (not s.in_stock, -s.score))
    return scored


def _recent_searches(events: Iterable[Event], exclude: str) -> list[tuple[str, datetime]]:
    """The newest distinct search terms (lowercased) with their newest time. The current query
    is left out: it matches every candidate anyway, and must not reinforce itself."""
    seen: dict[str, datetime] = {}
    skip = " ".join(exclude.lower().split())
    for event in events:
        term = " ".join(str((event.props or {}).get("search_term", "")).lower().split())
        if event.type == "search" and term and term != skip and term not in seen:
            seen[term] = event.ts
            if len(seen) == SEARCH_TERMS:
                break
    return list(seen.items())


def _visitor_vector(model: "ModelArtifact | None", visitor_id: str, interacted: list[str]) -> np.ndarray | None:
    """The visitor in the model's space. Unlike recommendations, no vector from country or
    device alone: that would reorder everyone's results alike, and a new visitor gets the
    plain text ranking."""
    return visitor_vector(model, visitor_id, interacted[:MODEL_ITEMS]) if model is not None else None


def _model_scores(model: "ModelArtifact | None", vector: np.ndarray | None, item_ids: list[str]) -> np.ndarray | None:
    """The vector's scores for the items, min-max normalised over them; items the model does
    not know score as the lowest."""
    if model is None or vector is None or not item_ids:
        return None
    rows = np.array([model.item_index.get(i, -1) for i in item_ids])
    known = rows >= 0
    raw = np.zeros(len(item_ids), dtype=np.float64)
    if known.any():
        raw[known] = model.item_vectors[rows[known]] @ vector
        raw[~known] = raw[known].min()
    low, high = raw.min(), raw.max()
    return (raw - low) / (high - low) if high - low > 1e-9 else np.zeros(len(item_ids))

