"""Each shop's catalog in memory, and the item aggregates cached for a second.

A request never reads an item row: `Catalog.shop(S)` is a dict of the shop's items, reloaded
when the store's catalog version for the shop moves (checked at most every
`check_interval_s`, one primary-key read). The first request of a shop waits for the load;
later checks and reloads happen on this worker's refresh thread while the old catalog keeps
serving. Trending and bestseller lists change with every event batch, so they are kept per
worker for `aggregate_ttl_s` instead: each list is read at most once a second per worker,
whatever the traffic, and not on a request's time: a request that finds its list older than
that is answered with it, and the refresh thread reads it again (on PostgreSQL that read
held one page call a second for 200 ms). Only a list never read yet is read by the request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Callable, Hashable, Iterable, Sequence, TypeVar

from server.b2b.prices import PriceLists
from server.models import CatalogItem
from server.store import Store

T = TypeVar("T")
RANKED = 200  # ids kept per aggregate list; callers slice
log = logging.getLogger("vitrine")


@dataclass
class ShopCatalog:
    """One shop's items: by id, by category (the catalog's order, by title), and category sizes."""

    version: int
    by_id: dict[str, CatalogItem]
    by_category: dict[str, list[CatalogItem]] = field(default_factory=dict)
    categories: list[tuple[str, int]] = field(default_factory=list)  # most items first

    @classmethod
    def build(cls, version: int, items: Iterable[CatalogItem]) -> "ShopCatalog":
        ordered = sorted(items, key=lambda i: (i.title, i.item_id))
        by_category: dict[str, list[CatalogItem]] = {}
        for item in ordered:
            if item.category:
                by_category.setdefault(item.category, []).append(item)
        counts = Counter({c: len(members) for c, members in by_category.items()})
        categories = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(version, {i.item_id: i for i in ordered}, by_category, categories)

    def get(self, item_ids: Sequence[str]) -> list[CatalogItem]:
        """These items in this order, leaving out ids the catalog does not have."""
        return [self.by_id[i] for i in item_ids if i in self.by_id]

    def facts(self, item_ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
        return {i: (self.by_id[i].category, self.by_id[i].in_stock) for i in item_ids if i in self.by_id}

    def in_category(self, category: str | None = None, limit: int | None = None) -> list[CatalogItem]:
        """A category's items (every item without one), by title: the catalog's own order."""
        found = self.by_category.get(category, []) if category else list(self.by_id.values())
        return found[:limit] if limit is not None else list(found)


class Catalog:
    def __init__(self, store: Store, check_interval_s: float = 1.0, aggregate_ttl_s: float = 1.0) -> None:
        self.store = store
        self.check_interval_s = check_interval_s
        self.aggregate_ttl_s = aggregate_ttl_s
        self._shops: dict[str, tuple[float, ShopCatalog]] = {}  # shop -> (next check, catalog)
        self._loading: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._kept: dict[Hashable, tuple[float, object]] = {}  # aggregate key -> (read at, value)
        self._refreshing: set[Hashable] = set()  # what the refresh thread has been asked to read
        self._refresher: ThreadPoolExecutor | None = None
        # The price lists per customer group (server/b2b/), held and refreshed the same way.
        self.prices = PriceLists(store, check_interval_s)

    def shop(self, shop: str) -> ShopCatalog:
        now = time.monotonic()
        held = self._shops.get(shop)
        if held is not None and now < held[0]:
            return held[1]
        if held is not None and self.check_interval_s > 0:
            self._refresh_later(("catalog", shop), lambda: self._check(shop))
            return held[1]  # the refresh thread checks; serve what we have meanwhile
        return self._check(shop)

    def _check(self, shop: str) -> ShopCatalog:
        """The shop's catalog, read again if its version moved (the first request of a shop
        waits for it; later, the refresh thread calls this)."""
        with self._lock:
            loading = self._loading.setdefault(shop, threading.Lock())
        loading.acquire()
        try:
            held = self._shops.get(shop)
            if held is not None and time.monotonic() < held[0]:
                return held[1]
            version = self.store.catalog_version(shop)
            catalog = held[1] if held is not None and held[1].version == version else None
            if catalog is None:
                catalog = ShopCatalog.build(version, self.store.all_items(shop))
            self._shops[shop] = (time.monotonic() + self.check_interval_s, catalog)
            return catalog
        finally:
            loading.release()

    def refresh(self, shop: str) -> None:
        """Check the shop's version on the next read (after an import in this process)."""
        self._shops.pop(shop, None)
        self.prices.refresh(shop)

    # -- aggregates ----------------------------------------------------------------------
    def trending(self, shop: str, scope: str, limit: int) -> list[str]:
        return self._aggregate(("trending", shop, scope), lambda: self.store.trending(shop, scope, RANKED))[:limit]

    def bestsellers(self, shop: str, limit: int, category: str | None = None) -> list[str]:
        def read() -> list[str]:
            return [i.item_id for i in self.store.bestsellers(shop, RANKED, category)]

        return self._aggregate(("bestsellers", shop, category), read)[:limit]

    def customer_purchases(self, shop: str, customer_id: str, visitor_ids: Sequence[str] = ()) -> list:
        """A customer's newest purchases (Store.customer_purchases), read at most once a second
        per worker and customer, for the reorder widget (server/b2b/reorder.py)."""
        ids = tuple(visitor_ids)
        return self._aggregate(("purchases", shop, customer_id, ids),
                               lambda: self.store.customer_purchases(shop, customer_id, ids))

    def _aggregate(self, key: Hashable, read: Callable[[], T]) -> T:
        now = time.monotonic()
        kept = self._kept.get(key)
        if kept is not None and now - kept[0] < self.aggregate_ttl_s:
            return kept[1]  # type: ignore[return-value]
        if kept is not None and self.aggregate_ttl_s > 0:
            self._refresh_later(key, lambda: self._read_aggregate(key, read))
            return kept[1]  # type: ignore[return-value]
        return self._read_aggregate(key, read)  # never read yet (or kept for no time: tests)

    def _read_aggregate(self, key: Hashable, read: Callable[[], T]) -> T:
        now = time.monotonic()
        value = read()
        if len(self._kept) > 10_000:  # many shops x categories: forget them all, read again
            self._kept.clear()
        self._kept[key] = (now, value)
        return value

    def _refresh_later(self, key: Hashable, refresh: Callable[[], object]) -> None:
        """Have the refresh thread run `refresh` once, unless it is asked to already."""
        with self._lock:
            if key in self._refreshing:
                return
            self._refreshing.add(key)
            if self._refresher is None:
                self._refresher = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitrine-catalog-refresh")
            refresher = self._refresher

        def run() -> None:
            try:
                refresh()
            except Exception as exc:  # noqa: BLE001 - what is held keeps serving; the next request asks again
                log.warning("could not refresh %s: %s", key, exc)
            finally:
                with self._lock:
                    self._refreshing.discard(key)

        refresher.submit(run)

    def wait_for_refreshes(self, timeout: float = 10.0) -> bool:
        """True once nothing is left to refresh (tests)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if not self._refreshing:
                    return True
            time.sleep(0.005)
        return False
