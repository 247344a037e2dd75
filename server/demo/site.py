"""The demo shop under /demo/: a small but real shop page set, with the script tag pasted as a shop would.

It reads the demo catalog from the store like any shop's back end would read its own
database; Vitrine itself only reaches it through the script tag and slots.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from xml.sax.saxutils import escape

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.taxonomy import CATEGORIES, FALLBACK_CATEGORY, slugify

DEMO_DIR = Path(__file__).parent
SHOP = "demo"
# The consent demo's shop (demo-consent.toml, beside demo.toml): consent = "required".
CONSENT_SHOP = "demo-consent"
PAGE_SIZE = 24
_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(DEMO_DIR / "templates")), autoescape=True, trim_blocks=True, lstrip_blocks=True
)
CATEGORY_BY_SLUG = {slugify(c): c for c in CATEGORIES}
# The category page's sort control: the shop's own order, or one of Vitrine's (its grid slot).
SORTS = {"": "A to Z", "personal": "Recommended for you", "bestsellers": "Bestsellers", "trending": "Trending"}
# The shop's own menu order: by name, the catch-all last (pinned there in demo.toml).
MENU = [(slugify(c), c) for c in sorted(set(CATEGORIES) - {FALLBACK_CATEGORY})] + [
    (slugify(FALLBACK_CATEGORY), FALLBACK_CATEGORY)
]


def demo_routes() -> list[BaseRoute]:
    return [
        Route("/", home),
        Route("/category/{slug}", category),
        Route("/product/{item_id}", product),
        Route("/cart", cart),
        Route("/search", search),
        Route("/privacy", privacy),
        Route("/consent", consent),
        Route("/account", account),
        Route("/img/{item_id}.svg", image),
        Mount("/static", StaticFiles(directory=str(DEMO_DIR / "static")), name="demo-static"),
    ]


def _store(request: Request):
    return request.app.state.services.store


def _render(request: Request, template: str, status: int = 200, shop: str = SHOP, **context) -> HTMLResponse:
    settings = request.app.state.services.settings
    # The configured public URL, else a path on this server: never the request's Host
    # header, which anyone can set (and a cache would then keep their script tag).
    base = settings.public_url.rstrip("/")
    html = _env.get_template(template).render(
        base_url=base, shop=shop, categories=MENU, **context
    )
    return HTMLResponse(html, status_code=status)


async def home(request: Request) -> Response:
    store = _store(request)
    bestsellers = await run_in_threadpool(store.bestsellers, SHOP, 10)
    return _render(request, "home.html", page_type="home", items=bestsellers)


async def category(request: Request) -> Response:
    name = CATEGORY_BY_SLUG.get(request.path_params["slug"])
    if name is None:
        return _render(request, "notfound.html", status=404, page_type="other", what="category")
    page = _page(request)
    sort = request.query_params.get("sort", "")
    sort = sort if sort in SORTS else ""
    store = _store(request)
    items = await run_in_threadpool(
        lambda: store.list_items(SHOP, category=name, limit=PAGE_SIZE + 1, offset=(page - 1) * PAGE_SIZE)
    )
    return _render(
        request, "category.html", page_type="category", category=name, slug=slugify(name),
        items=items[:PAGE_SIZE], page=page, has_next=len(items) > PAGE_SIZE, sort=sort,
        sorts=SORTS,
    )


async def product(request: Request) -> Response:
    item = await run_in_threadpool(_store(request).get_item, SHOP, request.path_params["item_id"])
    if item is None:
        return _render(request, "notfound.html", status=404, page_type="other", what="product")
    return _render(request, "product.html", page_type="product", item=item, slug=slugify(item.category))


async def cart(request: Request) -> Response:
    """The cart; `?add=ITEM&qty=N` (the reorder widget's links, demo.toml's reorder_url) puts
    N of the item in it first, as a shop's "add to cart" link does."""
    adding = None
    item_id = request.query_params.get("add", "")[:128]
    if item_id:
        item = await run_in_threadpool(_store(request).get_item, SHOP, item_id)
        try:
            quantity = max(1, min(999, int(request.query_params.get("qty", "1"))))
        except ValueError:
            quantity = 1
        if item is not None:
            adding = {"item_id": item.item_id, "title": item.title, "price": item.price or 0, "quantity": quantity}
    return _render(request, "cart.html", page_type="cart", adding=adding)


async def search(request: Request) -> Response:
    """Vitrine ranks the results in the page's search slot; the shop's own plain word match
    is the slot's default content (shown until the fragment arrives, kept if none comes)."""
    query = request.query_params.get("q", "").strip()[:100]
    page = _page(request)
    items = await run_in_threadpool(
        lambda: _store(request).list_items(SHOP, text=query, limit=PAGE_SIZE, offset=(page - 1) * PAGE_SIZE)
    ) if query else []
    return _render(request, "search.html", page_type="search", query=query, page=page, items=items)


async def privacy(request: Request) -> Response:
    """The shop's privacy page: what is kept, and the visitor's "download my data" and "forget me"."""
    return _render(request, "privacy.html", page_type="other")


async def consent(request: Request) -> Response:
    """The required-consent flow: a page of the demo-consent shop with the shop's own consent
    banner, whose "Accept" and "Only necessary" call vitrine('consent', ...)."""
    return _render(request, "consent.html", shop=CONSENT_SHOP, page_type="home")


# The demo's customers (data/customers.csv) a visitor may log in as, with what each shows.
DEMO_CUSTOMERS = [
    ("17850", "Ada", "15 orders, the last one more than ten months ago: a loyal customer who lapsed"),
    ("14911", "Grace", "well over a hundred orders, the last one yesterday: a gold-tier customer, in the "
     "wholesale group"),
    ("12713", "Alan", "one order, yesterday: a first-time customer"),
    ("90001", "Bea", "a trade buyer (group wholesale) with three orders by the dozen: wholesale prices, "
     "the reorder list below and, on her first visit, the business welcome"),
]
LOGIN_COOKIE = "demo_customer"


async def account(request: Request) -> Response:
    """The shop's log-in, as the demo plays it: "log in as" one of the demo's customers. As a
    shop's backend does, it signs the customer's id with the shop's secret key and the page
    tells Vitrine with vitrine('identify', ...); logging out says vitrine('identify', false)."""
    ids = {c[0] for c in DEMO_CUSTOMERS}
    chosen = request.query_params.get("as", "")
    current = request.cookies.get(LOGIN_COOKIE, "")
    identify: dict | bool | None = None
    if chosen in ids:
        current = chosen
    elif request.query_params.get("logout"):
        current, identify = "", False
    current = current if current in ids else ""
    if current:
        from server.customers.keys import sign

        keys = request.app.state.services.shop_keys
        key = await run_in_threadpool(keys.key, SHOP)
        identify = {"id": current, "signature": sign(key, current)}
    response = _render(request, "account.html", page_type="other", customers=DEMO_CUSTOMERS, current=current,
                       identify=identify)
    if current:
        response.set_cookie(LOGIN_COOKIE, current, path="/demo", httponly=True, samesite="lax")
    else:
        response.delete_cookie(LOGIN_COOKIE, path="/demo")
    return response


PALETTE = ["#b4233c", "#1f3a5f", "#1e6b45", "#8a5a00", "#5b3f8c", "#0f6e7a", "#9c3d6b", "#4d5b23", "#7a3b1d"]


async def image(request: Request) -> Response:
    """A generated product tile (the data set has no photos): a colour per category, the title's words."""
    item = await run_in_threadpool(_store(request).get_item, SHOP, request.path_params["item_id"])
    title = item.title if item else "Item"
    key = item.category if item else ""
    colour = PALETTE[int(hashlib.md5(key.encode()).hexdigest(), 16) % len(PALETTE)]
    words, lines = title.split(), [""]
    for word in words:
        if len(lines[-1]) + len(word) > 14 and lines[-1]:
            lines.append("")
        lines[-1] = (lines[-1] + " " + word).strip()
    text = "".join(
        f'<text x="200" y="{200 - 22 * (len(lines[:5]) - 1) + 44 * i}" text-anchor="middle">{escape(line)}</text>'
        for i, line in enumerate(lines[:5])
    )
    svg = (
        '<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 400 400" width="400" height="400">'
        f'<rect width="400" height="400" fill="{colour}"/>'
        '<circle cx="330" cy="70" r="120" fill="#fff" opacity=".08"/>'
        '<g font-family="Georgia, serif" font-size="32" fill="#fff">'
        f"{text}</g></svg>"
    )
    return Response(svg, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"})


MAX_PAGE = 1000


def _page(request: Request) -> int:
    """`?page=N`, from 1 to MAX_PAGE (a page beyond the last one is empty, not an error)."""
    return min(MAX_PAGE, max(1, _int(request.query_params.get("page"), 1)))


def _int(value: str | None, default: int) -> int:
    try:
        return int(value) if value else default
    except ValueError:
        return default
