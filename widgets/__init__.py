"""Widget kinds: one package each, all reachable through `WIDGETS` (the one registry)."""

from __future__ import annotations

from widgets.base import Fragment, RenderContext, Slot, Widget
from widgets.banner import BannerWidget
from widgets.category import CategoryWidget
from widgets.nav import NavWidget
from widgets.popup import PopupWidget
from widgets.recommendations import RecommendationsWidget
from widgets.search import SearchWidget

WIDGETS: dict[str, Widget] = {
    w.kind: w
    for w in (PopupWidget(), BannerWidget(), RecommendationsWidget(), NavWidget(), CategoryWidget(), SearchWidget())
}

__all__ = ["WIDGETS", "Fragment", "RenderContext", "Slot", "Widget"]
