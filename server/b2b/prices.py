"""Each shop's price lists per customer group in memory: an item's price for a group, by
quantity tier, and the items a group may not buy.

A request never reads a price row: `PriceLists.shop(S)` is the shop's whole list, reloaded
when the store's price list version for the shop moves (checked at most every
`check_interval_s`, one primary-key read), as the catalog is (server/catalog/memory.py).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Mapping

from server.store import Store

if TYPE_CHECKING:
    from server.context import VisitorContext

NOTHING: frozenset[str] = frozenset()


@dataclass(frozen=True)
class GroupPrice:
    """One item's price for one group. `price`: the unit price from a single piece (None
    when the first tier starts higher: the catalog's price stands until then); `tiers`: the
    (min quantity, unit price) of the tiers from two pieces on, ascending."""

    price: float | None
    tiers: tuple[tuple[int, float], ...] = ()

    @classmethod
    def from_tiers(cls, tiers: list[tuple[int, float]]) -> "GroupPrice":
        tiers = sorted(tiers)
        if tiers[0][0] <= 1:
            return cls(tiers[0][1], tuple(tiers[1:]))
        return cls(None, tuple(tiers))

    def at(self, quantity: float, catalog_price: float | None) -> float | None:
        """The unit price when buying `quantity` of the item."""
        found = self.price if self.price is not None else catalog_price
        for least, price in self.tiers:
            if quantity >= least:
                found = price
        return found


@dataclass
class ShopPriceList:
    version: int
    prices: dict[str, dict[str, GroupPrice]] = field(default_factory=dict)  # group -> item id -> price
    barred: dict[str, frozenset[str]] = field(default_factory=dict)  # group -> items it may not buy

    @classmethod
    def build(cls, version: int, tiers: list[tuple[str, str, int, float]],
              restricted: list[tuple[str, str]]) -> "ShopPriceList":
        found: dict[str, dict[str, list[tuple[int, float]]]] = {}
        for group, item_id, quantity, price in tiers:
            found.setdefault(group, {}).setdefault(item_id, []).append((quantity, price))
        prices = {g: {i: GroupPrice.from_tiers(t) for i, t in items.items()} for g, items in found.items()}
        barred: dict[str, set[str]] = {}
        for group, item_id in restricted:
            barred.setdefault(group, set()).add(item_id)
        return cls(version, prices, {g: frozenset(items) for g, items in barred.items()})


class PriceLists:
    def __init__(self, store: Store, check_interval_s: float = 1.0) -> None:
        self.store = store
        self.check_interval_s = check_interval_s
        self._shops: dict[str, tuple[float, ShopPriceList]] = {}  # shop -> (next check, list)
        self._lock = threading.Lock()

    def shop(self, shop: str) -> ShopPriceList:
        """The shop's list. The first request of a shop waits for its load; later checks and
        reloads happen in one thread while the others keep serving the list they have."""
        held = self._shops.get(shop)
        if held is not None and time.monotonic() < held[0]:
            return held[1]
        if not self._lock.acquire(blocking=held is None):
            return held[1]  # type: ignore[index]  # another thread checks; serve what we have meanwhile
        try:
            held = self._shops.get(shop)
            if held is not None and time.monotonic() < held[0]:
                return held[1]
            version = self.store.price_list_version(shop)
            current = held[1] if held is not None and held[1].version == version else None
            if current is None:
                current = ShopPriceList(version) if version == 0 else ShopPriceList.build(version, *self.store.price_list(shop))
            self._shops[shop] = (time.monotonic() + self.check_interval_s, current)
            return current
        finally:
            self._lock.release()

    def refresh(self, shop: str) -> None:
        """Check the shop's version on the next read (after an import in this process)."""
        self._shops.pop(shop, None)


def _lists(catalog: object) -> PriceLists | None:
    return getattr(catalog, "prices", None)


def group_prices_for(catalog: object, ctx: "VisitorContext") -> Mapping[str, GroupPrice] | None:
    """The visitor's group's prices by item id; None for a visitor without a group or a group without a list."""
    group = ctx.profile.customer_group
    lists = _lists(catalog)
    if not group or lists is None:
        return None
    return lists.shop(ctx.shop).prices.get(group) or None


def items_barred_for(catalog: object, ctx: "VisitorContext") -> frozenset[str]:
    """The items the visitor's group may not buy (never recommended nor found for them)."""
    group = ctx.profile.customer_group
    lists = _lists(catalog)
    if not group or lists is None:
        return NOTHING
    return lists.shop(ctx.shop).barred.get(group, NOTHING)
