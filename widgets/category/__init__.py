"""Category widget: a category's product grid ordered for this visitor (or by sales), paginated.

For shops that let Vitrine render their grid; shops that render it themselves ask the
fragment URL for the order alone (`format=json`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from server.navigation import MAX_PER_PAGE, SORTS, CategoryPage, UnknownCategory
from widgets import why as explain
from widgets.base import MAX_PAGE, Fragment, RenderContext, Slot, Templates, asked_number, group_prices

SORT_LABELS = {"personal": "Recommended", "bestsellers": "Bestsellers", "trending": "Trending"}
DEFAULT_PER_PAGE = 24
CONTROLS = ("sort", "pages")  # the fragment's own sort links and page links
DEBUG_SCORES = 50  # items whose scores `_context=1` lists


@dataclass
class CategoryFragment(Fragment):
    page: CategoryPage | None = None

    def as_json(self) -> dict[str, Any] | None:
        """The order without the HTML: what `format=json` answers."""
        return self.page.as_json() if self.page else None

    def debug(self) -> dict[str, Any]:
        info = super().debug()
        if self.page is not None:
            info["category"] = {
                **self.page.as_json(), "requested": self.page.sort,
                "scores": {
                    i.item_id: round(self.page.scores.get(i.item_id, 0.0), 4) for i in self.page.items[:DEBUG_SCORES]
                },
            }
        return info


@dataclass
class CategoryWidget:
    kind: str = "category"
    shadow: bool = True

    def render(self, rc: RenderContext, slot: Slot) -> Fragment:
        """Slot attributes: category (default: the page's), sort (personal, bestsellers,
        trending; default personal), page, per_page (default 24, at most 96), controls (which
        of "sort,pages" to render; default both). On a shop page, `sort` and `page` in the
        page's own URL count when the slot does not set them."""
        attrs = self._attrs(rc, slot)
        category = attrs.get("category") or rc.ctx.page.category
        sort = attrs.get("sort") or "personal"
        names = Templates.names(self.kind, rc.shop.id, sort)
        fragment = CategoryFragment(html="", shadow=self.shadow, templates=names)
        if rc.navigator is None:
            fragment.error = "category pages are not available"
            return fragment
        if not category:
            fragment.error = "missing category: set data-category on the slot or data-vitrine-category on the page"
            return fragment
        if sort not in SORTS:
            fragment.error = f"unknown sort {sort!r}; known: {', '.join(SORTS)}"
            return fragment
        per_page = asked_number(attrs, ("per_page", "perPage"), DEFAULT_PER_PAGE, MAX_PER_PAGE)
        number = asked_number(attrs, ("page",), 1, MAX_PAGE)
        try:
            page = rc.navigator.category_page(rc.ctx, category, sort, number, per_page)
        except UnknownCategory as exc:
            fragment.error = str(exc)
            return fragment
        fragment.page, fragment.strategy = page, page.served
        link = _linker(rc, page)
        controls = [c for c in attrs.get("controls", ",".join(CONTROLS)).replace(" ", "").split(",") if c in CONTROLS]
        if explain.wanted(rc):
            fragment.why = explain.category(rc, page)
        fragment.html, fragment.template = rc.templates.render(
            names, site=rc.site, group_prices=group_prices(rc), items=page.items, category=page.name, slug=page.slug, sort=page.served, requested=sort,
            page=page.page, pages=page.pages, total=page.total, per_page=page.per_page,
            previous_url=link(page=page.page - 1) if page.page > 1 else "",
            next_url=link(page=page.page + 1) if page.page < page.pages else "",
            sorts=[{"sort": s, "label": SORT_LABELS[s], "url": link(sort=s, page=1), "current": s == sort} for s in SORTS],
            controls=controls, why=explain.shown(rc, fragment.why),
            visitor=rc.ctx.as_dict(), shop=rc.shop, slot=slot, standalone=rc.standalone,
        )
        return fragment


    def items_asked(self, slot: Slot, default_count: int) -> int:
        return asked_number(slot.attrs, ("per_page", "perPage"), DEFAULT_PER_PAGE, MAX_PER_PAGE)

    @staticmethod
    def _attrs(rc: RenderContext, slot: Slot) -> dict[str, str]:
        return {**_page_query(rc), **slot.attrs} if not rc.standalone else slot.attrs


def _page_query(rc: RenderContext) -> dict[str, str]:
    """`sort` and `page` from the shop page's own URL (`/category/bags?sort=trending&page=2`)."""
    try:
        query = dict(parse_qsl(urlsplit(rc.ctx.page.url).query))
    except ValueError:
        return {}
    return {k: query[k] for k in ("sort", "page") if query.get(k)}


def _linker(rc: RenderContext, page: CategoryPage):
    """Links to other pages and sorts: on a fragment URL, the fragment URL itself; on a shop
    page, the page's URL with `sort` and `page` replaced."""
    if rc.standalone:
        base = {"shop": rc.shop.id, "category": page.slug, "sort": page.sort, "per_page": str(page.per_page)}
    else:
        try:
            base = dict(parse_qsl(urlsplit(rc.ctx.page.url).query))
        except ValueError:
            base = {}
        base["sort"] = page.sort

    def link(**changes: Any) -> str:
        return "?" + urlencode({**base, **{k: str(v) for k, v in changes.items()}})

    return link

