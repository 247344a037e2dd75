"""From the store's records to LightFM's matrices: weighted positives, item and user features."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from typing import Iterable, Mapping, Sequence

import numpy as np
import scipy.sparse as sp

from server.models import CatalogItem, Interacted, VisitorProfile

# A purchase says more than a cart, a cart more than a view; a rating kept as positive is 1.
EVENT_WEIGHTS = {"purchase": 3.0, "add_to_cart": 2.0, "view_item": 1.0, "rating": 1.0}

ITEM_FEATURE_GROUPS = ("category", "brand", "price", "tags", "terms")
PRICE_BANDS = 5
# Description terms: a word must be shared (>= 2 items) and not everywhere (<= 20% of items).
TERM_MIN_ITEMS = 2
TERM_MAX_SHARE = 0.2
TERM_MIN_LETTERS = 3

_WORD = re.compile(r"[^\W\d_]+")
STOP_WORDS = frozenset(
    """
    about above after again against all also and any are because been before being below
    between both but can could did does doing down during each few for from further had has
    have having her here hers herself him himself his how into its itself just more most
    myself nor not now off once only other our ours ourselves out over own same she should
    some such than that the their theirs them themselves then there these they this those
    through too under until very was were what when where which while who whom why will
    with would you your yours yourself yourselves
    """.split()
)


@dataclass(frozen=True)
class Positive:
    """One interaction kept for training, with its weight."""

    visitor_id: str
    item_id: str
    weight: float
    ts: datetime
    basket: str
    type: str


@dataclass
class Selection:
    """Interactions as training keeps them, and how many were left out and why."""

    positives: list[Positive]
    counts: dict[str, int] = field(default_factory=dict)


def select_positives(
    interactions: Iterable[Interacted], item_ids: set[str], min_value: float | None = None
) -> Selection:
    """Weighted positives for training: catalog items only, ratings filtered by min_value."""
    kept: list[Positive] = []
    by_type: Counter[str] = Counter()
    unknown_items = low_ratings = 0
    total = 0
    for it in interactions:
        total += 1
        by_type[it.type] += 1
        weight = EVENT_WEIGHTS.get(it.type)
        if weight is None:
            continue
        if it.type == "rating" and min_value is not None and (it.value is None or it.value < min_value):
            low_ratings += 1
            continue
        if it.item_id not in item_ids:
            unknown_items += 1
            continue
        kept.append(Positive(it.visitor_id, it.item_id, weight, it.ts, it.basket, it.type))
    counts = {
        "interactions": total,
        "kept": len(kept),
        "unknown_items_dropped": unknown_items,
        "ratings_below_min_dropped": low_ratings,
        **{f"type_{name}": n for name, n in sorted(by_type.items())},
    }
    return Selection(kept, counts)


def split_newest_per_user(positives: Sequence[Positive], share: float) -> tuple[list[Positive], list[Positive]]:
    """Each user's newest share of positives (at least one, whole baskets) apart from the
    rest; a user whose history is a single moment stays whole on the training side."""
    by_user: dict[str, list[Positive]] = {}
    for p in positives:
        by_user.setdefault(p.visitor_id, []).append(p)
    train: list[Positive] = []
    held: list[Positive] = []
    for history in by_user.values():
        history.sort(key=lambda p: p.ts)
        cut_at = history[len(history) - max(1, round(len(history) * share))].ts
        earlier = [p for p in history if p.ts < cut_at]
        if not earlier:
            train.extend(history)
            continue
        train.extend(earlier)
        held.extend(p for p in history if p.ts >= cut_at)
    return train, held


def split_by_time(positives: Sequence[Positive], test_share: float) -> tuple[list[Positive], list[Positive]]:
    """The newest test_share of positives (by time) apart from the rest.

    The cut falls between two distinct timestamps so that a basket is never split; when
    everything happened at one moment there is nothing to hold out.
    """
    ordered = sorted(positives, key=lambda p: p.ts)
    if not ordered:
        return [], []
    cut_at = ordered[min(len(ordered) - 1, int(len(ordered) * (1.0 - test_share)))].ts
    train = [p for p in ordered if p.ts < cut_at]
    test = [p for p in ordered if p.ts >= cut_at]
    if not train:
        return ordered, []
    return train, test


# -- features -------------------------------------------------------------------------
def item_features_by_group(items: Sequence[CatalogItem]) -> list[dict[str, list[str]]]:
    """For each item, its feature names by group (the id feature is added when building)."""
    bands = _price_bands(items)
    terms = _item_terms(items)
    table = []
    for item, band, words in zip(items, bands, terms):
        groups: dict[str, list[str]] = {g: [] for g in ITEM_FEATURE_GROUPS}
        levels = [part.strip() for part in item.category.split(">") if part.strip()]
        groups["category"] = [f"category:{' > '.join(levels[: n + 1])}" for n in range(len(levels))]
        if item.brand.strip():
            groups["brand"] = [f"brand:{item.brand.strip()}"]
        if band:
            groups["price"] = [f"price:{band}"]
        groups["tags"] = sorted({f"tag:{t.strip().lower()}" for t in item.tags if t.strip()})
        groups["terms"] = [f"term:{w}" for w in words]
        table.append(groups)
    return table


def _price_bands(items: Sequence[CatalogItem]) -> list[int]:
    """Band 1 (cheapest fifth of the shop's priced items) to 5; 0 for items without a price."""
    prices = np.array([i.price for i in items if i.price is not None], dtype=float)
    if prices.size == 0:
        return [0] * len(items)
    edges = np.quantile(prices, [n / PRICE_BANDS for n in range(1, PRICE_BANDS)])
    return [0 if i.price is None else int(np.searchsorted(edges, i.price, side="right")) + 1 for i in items]


def words(text: str) -> set[str]:
    """Lowercase words of at least three letters that are not stop words."""
    return {
        w for w in _WORD.findall(text.lower()) if len(w) >= TERM_MIN_LETTERS and w not in STOP_WORDS
    }


def _item_terms(items: Sequence[CatalogItem]) -> list[list[str]]:
    per_item = [words(f"{i.title} {i.description}") for i in items]
    in_items = Counter(w for ws in per_item for w in ws)
    most = TERM_MAX_SHARE * len(items)
    keep = {w for w, n in in_items.items() if TERM_MIN_ITEMS <= n <= most}
    return [sorted(ws & keep) for ws in per_item]


def user_attribute_features(profile: VisitorProfile | None) -> list[str]:
    """A visitor's non-id features: country, device class and lifecycle segment."""
    if profile is None:
        return []
    found = []
    if profile.country:
        found.append(f"country:{profile.country}")
    if profile.device_class:
        found.append(f"device:{profile.device_class}")
    found.append(f"segment:{lifecycle_segment(profile)}")
    return found


def lifecycle_segment(profile: VisitorProfile) -> str:
    if profile.is_customer:
        return "customer"
    if profile.is_returning:
        return "returning"
    return "new"


def feature_matrix(rows: Sequence[Sequence[str]], index: Mapping[str, int]) -> sp.csr_matrix:
    """One row per entity over the features in index, each row summing to 1 (as LightFM's
    Dataset normalises); features not in the index are left out."""
    indptr, cols = [0], []
    for names in rows:
        row = sorted({index[n] for n in names if n in index})
        cols.extend(row)
        indptr.append(len(cols))
    data = np.ones(len(cols), dtype=np.float32)
    matrix = sp.csr_matrix((data, np.array(cols, dtype=np.int32), np.array(indptr)), shape=(len(rows), len(index)))
    sums = np.asarray(matrix.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / sums).astype(np.float32) @ matrix, dtype=np.float32)


# -- the training set -----------------------------------------------------------------
@dataclass
class TrainingSet:
    """Everything LightFM is fitted on, with the id maps that give the rows meaning."""

    item_ids: list[str]
    item_index: dict[str, int]
    user_ids: list[str]
    user_index: dict[str, int]
    interactions: sp.coo_matrix  # [users, items], 1 where the pair is a positive
    weights: sp.coo_matrix  # same pattern: the pair's weight (the largest of its events)
    item_features: sp.csr_matrix  # [items, item features], rows sum to 1
    item_feature_names: list[str]
    user_features: sp.csr_matrix  # [users, users]: each user's id feature
    attribute_names: list[str]  # the non-id user features (country:GB, device:mobile, segment:new)
    user_attributes: sp.csr_matrix  # [users, attributes]: 1 where the user has the attribute
    feature_groups: tuple[str, ...]

    @property
    def attribute_index(self) -> dict[str, int]:
        return {name: n for n, name in enumerate(self.attribute_names)}


class FeatureCatalog:
    """A shop's items with their features worked out once, for any choice of feature groups."""

    def __init__(self, items: Sequence[CatalogItem]) -> None:
        self.items = list(items)
        self.item_ids = [i.item_id for i in self.items]
        self.item_index = {item_id: n for n, item_id in enumerate(self.item_ids)}
        self._by_group = item_features_by_group(self.items)
        self._matrices: dict[tuple[str, ...], tuple[sp.csr_matrix, list[str]]] = {}

    def item_features(self, groups: Sequence[str]) -> tuple[sp.csr_matrix, list[str]]:
        key = tuple(g for g in ITEM_FEATURE_GROUPS if g in groups)
        if key not in self._matrices:
            rows = [
                [f"id:{item_id}", *(name for g in key for name in table[g])]
                for item_id, table in zip(self.item_ids, self._by_group)
            ]
            names = list(dict.fromkeys(name for row in rows for name in row))
            index = {name: n for n, name in enumerate(names)}
            self._matrices[key] = (feature_matrix(rows, index), names)
        return self._matrices[key]

    def groups_present(self) -> set[str]:
        """The feature groups at least one item has a feature in."""
        return {g for table in self._by_group for g, names in table.items() if names}

    def training_set(
        self, positives: Sequence[Positive], profiles: Mapping[str, VisitorProfile], groups: Sequence[str]
    ) -> TrainingSet:
        """Users are the visitors with at least one positive, in order of first appearance."""
        user_ids = list(dict.fromkeys(p.visitor_id for p in positives))
        user_index = {vid: n for n, vid in enumerate(user_ids)}
        pairs: dict[tuple[int, int], float] = {}
        for p in positives:
            key = (user_index[p.visitor_id], self.item_index[p.item_id])
            if p.weight > pairs.get(key, 0.0):
                pairs[key] = p.weight
        shape = (len(user_ids), len(self.item_ids))
        if pairs:
            rows, cols = (np.array(x, dtype=np.int32) for x in zip(*pairs))
        else:
            rows = cols = np.zeros(0, dtype=np.int32)
        weights = np.fromiter(pairs.values(), dtype=np.float32, count=len(pairs))
        interactions = sp.coo_matrix((np.ones_like(weights), (rows, cols)), shape=shape)
        weight_matrix = sp.coo_matrix((weights, (rows, cols)), shape=shape)

        attributes = [user_attribute_features(profiles.get(vid)) for vid in user_ids]
        attribute_names = sorted({name for names in attributes for name in names})
        index = {name: n for n, name in enumerate(attribute_names)}
        membership = feature_matrix(attributes, index)
        membership.data[:] = 1.0
        item_features, item_feature_names = self.item_features(groups)
        return TrainingSet(
            item_ids=self.item_ids, item_index=self.item_index, user_ids=user_ids, user_index=user_index,
            interactions=interactions, weights=weight_matrix, item_features=item_features,
            item_feature_names=item_feature_names,
            user_features=sp.identity(len(user_ids), dtype=np.float32, format="csr"),
            attribute_names=attribute_names, user_attributes=membership,
            feature_groups=tuple(g for g in ITEM_FEATURE_GROUPS if g in groups),
        )


# -- what the artifact keeps beside the embeddings ------------------------------------
def popularity_order(positives: Sequence[Positive], item_ids: Sequence[str]) -> list[int]:
    """Every item's index, most popular first: summed weight of each visitor's best event on
    the item, then number of events, then catalog order."""
    best: dict[tuple[str, str], float] = {}
    events: Counter[str] = Counter()
    for p in positives:
        key = (p.visitor_id, p.item_id)
        best[key] = max(best.get(key, 0.0), p.weight)
        events[p.item_id] += 1
    weight: Counter[str] = Counter()
    for (_, item_id), w in best.items():
        weight[item_id] += w
    return sorted(range(len(item_ids)), key=lambda n: (-weight[item_ids[n]], -events[item_ids[n]], n))


def bought_together(
    positives: Sequence[Positive], item_index: Mapping[str, int], popularity_rank: Sequence[int],
    limit: int = 20, max_basket: int = 50,
) -> dict[int, list[int]]:
    """For each purchased item, the items most often in the same basket, best first (ties go
    to the more popular item). Very large baskets (bulk orders) are left out."""
    baskets: dict[str, set[int]] = {}
    for p in positives:
        if p.type == "purchase":
            baskets.setdefault(p.basket, set()).add(item_index[p.item_id])
    together: dict[int, Counter[int]] = {}
    for basket in baskets.values():
        if len(basket) < 2 or len(basket) > max_basket:
            continue
        for a in basket:
            counts = together.setdefault(a, Counter())
            for b in basket:
                if b != a:
                    counts[b] += 1
    return {
        a: sorted(counts, key=lambda b: (-counts[b], popularity_rank[b]))[:limit]
        for a, counts in together.items()
    }
