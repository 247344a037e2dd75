"""Search widget: the visitor's ranking of a query's results, suggestions as they type, and
a zero-result page with a spelling alternative and trending items."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from server.search import SearchResults
from server.urls import is_web_url
from widgets import why as explain
from widgets.base import MAX_PAGE, Fragment, RenderContext, Slot, Templates, asked_number, group_prices

PAGE_SIZE = 24
MAX_PAGE_SIZE = 48
SUGGESTIONS = 8
SUGGESTED_ITEMS = 4
TRENDING_ON_ZERO = 4


@dataclass
class SearchFragment(Fragment):
    search: dict[str, Any] = field(default_factory=dict)  # the scores behind the order, for QA

    def debug(self) -> dict[str, Any]:
        return {**super().debug(), "search": self.search}


@dataclass
class SearchWidget:
    kind: str = "search"
    shadow: bool = True

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """Slot attributes: query (`q` on a fragment URL), page, count, search-url, suggest."""
        attrs = slot.attrs
        if rc.search is None:
            return SearchFragment(html="", shadow=self.shadow, error="search is not available")
        query = " ".join((attrs.get("query") or attrs.get("q") or "").split())
        links = _Links(rc, attrs)
        if attrs.get("suggest") not in (None, "", "0", "false"):
            return self._suggest(rc, slot, query, links)
        if not query:
            return SearchFragment(html="", shadow=self.shadow, templates=Templates.names(self.kind, rc.shop.id))
        count = self.items_asked(slot, rc.default_count)
        page = asked_number(attrs, ("page",), 1, MAX_PAGE)
        results = rc.search.search(rc.ctx, query, limit=count, offset=(page - 1) * count)
        if page == 1 and rc.count_searches:  # the next pages of a search are the same search
            rc.search.count_served(rc.ctx, query, results.total)
        pages = max(1, math.ceil(results.total / count))
        context: dict[str, Any] = dict(
            query=query, results=results.items, items=[r.item for r in results.items], total=results.total,
            more=results.more, page=page, pages=pages, personalized=results.personalized,
            previous_url=links.search(query, page - 1) if page > 1 else "",
            next_url=links.search(query, page + 1) if page < pages else "",
            page_urls=[(n, links.search(query, n)) for n in range(1, pages + 1)] if pages > 1 else [],
            did_you_mean="", did_you_mean_url="", trending=[],
        )
        if results.total == 0:
            corrected = rc.search.spelling(rc.ctx.shop, query)
            if corrected:
                context.update(did_you_mean=corrected, did_you_mean_url=links.search(corrected))
            if rc.recommender is not None:
                context["trending"] = rc.recommender.recommend(rc.ctx, "trending", TRENDING_ON_ZERO).items
        names = Templates.names(self.kind, rc.shop.id)
        fragment = SearchFragment(
            html="", shadow=self.shadow, templates=names, strategy=results.strategy, search=_debug(results),
        )
        if explain.wanted(rc):
            fragment.why = explain.search(rc, results, bool(context["trending"]))
        fragment.html, fragment.template = rc.templates.render(
            names, site=rc.site, group_prices=group_prices(rc), **context, visitor=rc.ctx.as_dict(), shop=rc.shop, slot=slot, standalone=rc.standalone,
            why=explain.shown(rc, fragment.why),
        )
        return fragment

    def items_asked(self, slot: Slot, default_count: int) -> int:
        if slot.attrs.get("suggest") not in (None, "", "0", "false"):
            return SUGGESTED_ITEMS
        return asked_number(slot.attrs, ("count",), PAGE_SIZE, MAX_PAGE_SIZE)

    def _suggest(self, rc: RenderContext, slot: Slot, query: str, links: "_Links") -> Fragment:
        assert rc.search is not None
        shop = rc.ctx.shop
        if query:
            terms, kind = rc.search.suggest(shop, query, SUGGESTIONS), "completions"
            results = rc.search.search(rc.ctx, query, limit=SUGGESTED_ITEMS)
        else:
            (terms, kind), results = rc.search.popular(shop, SUGGESTIONS), None
        names = Templates.names("search-suggest", shop)
        fragment = SearchFragment(
            html="", shadow=False, templates=names, strategy=kind,
            search={"suggestions": kind, "terms": terms, **(_debug(results) if results else {})},
        )
        fragment.html, fragment.template = rc.templates.render(
            names, site=rc.site, group_prices=group_prices(rc), query=query, kind=kind, suggestions=[(t, links.search(t)) for t in terms],
            items=[r.item for r in results.items] if results else [], all_url=links.search(query) if query else "",
            visitor=rc.ctx.as_dict(), shop=rc.shop, slot=slot, standalone=rc.standalone,
        )
        return fragment


class _Links:
    """Links to result pages: the slot's search-url (the shop's search page) with `q` and
    `page`; without one, the page the fragment is on (a fragment URL keeps its shop).
    Only a path or an http(s) URL is taken as a search-url (server/urls.py): never a
    `javascript:` link, a protocol-relative `//host` or a `/\\host`."""

    def __init__(self, rc: RenderContext, attrs: dict[str, str]) -> None:
        base = attrs.get("searchUrl") or attrs.get("search_url") or ""
        self.base = base if is_web_url(base) else ""
        self.keep = {"shop": rc.shop.id} if rc.standalone and not self.base else {}
        if rc.standalone and attrs.get("count") and not self.base:
            self.keep["count"] = attrs["count"]

    def search(self, query: str, page: int = 1) -> str:
        params = {**self.keep, "q": query, **({"page": page} if page > 1 else {})}
        separator = "&" if "?" in self.base else "?"
        return f"{self.base}{separator}{urlencode(params)}"


def _debug(results: SearchResults) -> dict[str, Any]:
    return {
        "query": results.query, "ranking": results.strategy, "weight": results.weight, "total": results.total,
        "more": results.more, "offset": results.offset, "visitor": results.signals,
        "results": [r.as_dict() for r in results.items],
    }

