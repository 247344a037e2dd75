"""Recommendations widget: a titled panel of items from one strategy (top picks, similar ...)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.recommend.serving import STRATEGIES, Filters
from widgets import why as explain
from widgets.base import Fragment, RenderContext, Slot, Templates, asked_number, group_prices, shared_context

TITLES = {
    "top_picks": "Top picks for you",
    "similar": "Similar items",
    "bought_together": "Frequently bought together",
    "recently_viewed": "Recently viewed",
    "buy_again": "Buy it again",
    "trending": "Trending now",
    "trending_near_you": "Trending near you",
    "bestsellers": "Bestsellers",
    "catalog": "You may also like",
}
MAX_COUNT = 24


@dataclass
class RecommendationsWidget:
    kind: str = "recommendations"
    shadow: bool = True

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """Slot attributes: strategy, count, title, item (anchor), category, price-min, price-max."""
        attrs = slot.attrs
        strategy = attrs.get("strategy") or "top_picks"
        if strategy not in STRATEGIES or rc.recommender is None:
            return Fragment(html="", shadow=self.shadow, strategy="", error=f"unknown strategy {strategy!r}")
        count = self.items_asked(slot, rc.default_count)
        filters = Filters(
            category=attrs.get("category", ""),
            price_min=_number(attrs.get("priceMin") or attrs.get("price_min"), None, float),
            price_max=_number(attrs.get("priceMax") or attrs.get("price_max"), None, float),
        )
        found = rc.recommender.recommend(rc.ctx, strategy, count, attrs.get("item", ""), filters, rc.shown)
        rc.shown.update(i.item_id for i in found.items)
        names = Templates.names(self.kind, rc.shop.id, strategy)
        fragment = Fragment(html="", shadow=self.shadow, templates=names, strategy=found.strategy, chain=found.chain)
        if not found.items:
            return fragment
        if explain.wanted(rc):
            fragment.why = explain.recommendations(rc, found, filters.category)
        title = attrs.get("title") or TITLES[found.strategy]
        prices, why = group_prices(rc), explain.shown(rc, fragment.why)
        # The same items under the same title are the same panel for every visitor shown them
        # (a customer group's prices are the group's: drawn for each).
        shared = None if prices else shared_context(rc, slot, why, tuple(found.items), title, found.strategy, strategy)
        reused = rc.templates.reuse(names, shared) if shared is not None else None
        if reused is not None:
            fragment.html, fragment.template = reused
            return fragment
        fragment.html, fragment.template = rc.templates.render(
            names, site=rc.site, group_prices=prices, shared=shared, items=found.items, title=title,
            strategy=found.strategy, requested=strategy, visitor=rc.ctx.as_dict(), shop=rc.shop, slot=slot,
            standalone=rc.standalone, why=why,
        )
        return fragment


    def items_asked(self, slot: Slot, default_count: int) -> int:
        return asked_number(slot.attrs, ("count",), default_count, MAX_COUNT)


def _number(value: str | None, default, cast):
    try:
        number = cast(value) if value not in (None, "") else default
    except ValueError:
        return default
    return number if number is None or math.isfinite(number) else default
