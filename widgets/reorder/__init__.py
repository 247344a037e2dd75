"""Reorder widget: an identified customer's usual items (the most often ordered first), each
with the quantity of their last order and a one-click link that puts it in the shop's cart
(the shop's `reorder_url`). Empty for anyone else: the slot keeps its default content."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.b2b.prices import group_prices_for, items_barred_for
from server.b2b.reorder import reorder_link, usual_items
from server.urls import is_web_url, on_site
from widgets.base import Fragment, RenderContext, Slot, Templates, asked_number

DEFAULT_COUNT = 5
MAX_COUNT = 20
TITLE = "Order again"


@dataclass
class ReorderWidget:
    kind: str = "reorder"
    shadow: bool = True

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """Slot attributes: count, title."""
        names = Templates.names(self.kind, rc.shop.id)
        fragment = Fragment(html="", shadow=self.shadow, templates=names, strategy="usual_items")
        lines = self.lines(rc, self.items_asked(slot, rc.default_count))
        if not lines:
            return fragment
        fragment.html, fragment.template = rc.templates.render(
            names, site=rc.site, lines=lines, title=slot.attrs.get("title") or TITLE, visitor=rc.ctx.as_dict(),
            shop=rc.shop, slot=slot, standalone=rc.standalone,
        )
        return fragment

    def lines(self, rc: RenderContext, count: int) -> list[dict[str, Any]]:
        """The visitor's usual items as the template shows them; none for a visitor who is not
        an identified customer with orders (or without consent to personalization)."""
        ctx = rc.ctx
        catalog = rc.shop_catalog()
        if not ctx.profile.customer_id or not ctx.consent.personalization or catalog is None or rc.catalog is None:
            return []
        purchases = rc.catalog.customer_purchases(ctx.shop, ctx.profile.customer_id, [ctx.visitor_id] if ctx.visitor_id else [])
        barred = items_barred_for(rc.catalog, ctx)
        prices = group_prices_for(rc.catalog, ctx) or {}
        lines = []
        for usual in usual_items(purchases):
            item = catalog.by_id.get(usual.item_id)
            if item is None or usual.item_id in barred:
                continue
            link = reorder_link(rc.shop.reorder_url, item.item_id, usual.quantity) if rc.shop.reorder_url else item.url
            group_price = prices.get(item.item_id)
            lines.append({
                "item_id": item.item_id, "title": item.title, "url": on_site(item.url, rc.site),
                "image_url": on_site(item.image_url or "", rc.site), "in_stock": item.in_stock,
                "quantity": int(usual.quantity) if usual.quantity.is_integer() else usual.quantity,
                "orders": usual.orders, "last_ordered": usual.last_ordered.date().isoformat(),
                "price": group_price.at(usual.quantity, item.price) if group_price else item.price,
                "currency": item.currency or rc.shop.currency,
                "reorder_url": on_site(link, rc.site) if link and is_web_url(link) else "",
            })
            if len(lines) >= count:
                break
        return lines

    def items_asked(self, slot: Slot, default_count: int) -> int:
        return asked_number(slot.attrs, ("count",), DEFAULT_COUNT, MAX_COUNT)
