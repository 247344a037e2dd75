"""Navigation widget: the shop's category menu in the order for this visitor, as a fragment.

Most shops keep their own menu and let the embed script reorder it (the page call's `nav`
answer); this renders the whole menu instead, for server-side includes and slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from server.navigation import MAX_MENU_ENTRIES, NavOrder
from server.taxonomy import slugify
from server.urls import on_site
from widgets import why as explain
from widgets.base import Fragment, RenderContext, Slot, SlotLimit, Templates


@dataclass
class NavFragment(Fragment):
    order: NavOrder | None = None

    def debug(self) -> dict[str, Any]:
        info = super().debug()
        if self.order is not None:
            info["nav"] = self.order.debug()
        return info


@dataclass
class NavWidget:
    kind: str = "nav"
    shadow: bool = False  # the menu is part of the shop's own page: its CSS styles it

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """Slot attribute `categories`: the menu's entries (slugs or names, comma separated),
        in the shop's order; without it, the catalog's top-level categories."""
        names = Templates.names(self.kind, rc.shop.id)
        if rc.navigator is None:
            return NavFragment(html="", shadow=self.shadow, templates=names, error="navigation is not available")
        index = rc.navigator.categories(rc.shop.id)
        keys = _menu_keys(slot)
        keys = keys or rc.navigator.default_menu(rc.shop.id, index)
        order = rc.navigator.order_menu(rc.ctx, keys, rc.shop.nav, index)
        fragment = NavFragment(html="", shadow=self.shadow, templates=names, strategy=order.basis, order=order)
        entries = [
            {
                "key": e.key, "slug": e.slug or slugify(e.key), "label": e.label, "known": bool(e.slug),
                "url": on_site(_link(rc.shop.nav.url, e.slug or slugify(e.key), e.label), rc.site),
            }
            for e in order.entries
        ]
        if not entries:
            return fragment
        if explain.wanted(rc):
            fragment.why = explain.nav(rc, order)
        fragment.html, fragment.template = rc.templates.render(
            names, site=rc.site, entries=entries, nav=order.as_json(), visitor=rc.ctx.as_dict(), shop=rc.shop, slot=slot,
            standalone=rc.standalone, why=explain.shown(rc, fragment.why),
        )
        return fragment


    def items_asked(self, slot: Slot, default_count: int) -> int:
        return len(_menu_keys(slot)) or MAX_MENU_ENTRIES


def _menu_keys(slot: Slot) -> list[str]:
    keys = [k.strip() for k in slot.attrs.get("categories", "").split(",") if k.strip()]
    if len(keys) > MAX_MENU_ENTRIES:
        raise SlotLimit(f"categories lists {len(keys)} menu entries (at most {MAX_MENU_ENTRIES})")
    return keys


def _link(pattern: str, slug: str, name: str) -> str:
    return pattern.replace("{slug}", quote(slug)).replace("{name}", quote(name))
