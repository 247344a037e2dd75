"""The public HTTP API: the embed script, the page call, events, and fragment URLs."""

from __future__ import annotations

import json
import secrets
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, HTMLResponse, JSONResponse, Response

from server.context import OVERRIDES, PageContext, VisitorContext
from server.errors import ApiError
from server.events import BatchError, describe_validation_error, parse_batch, to_events
from server.identity import attach_token, identify
from server.navigation import MAX_MENU_ENTRIES
from server.shops import ShopConfig
from widgets import WIDGETS, RenderContext, Slot

ACCEPTED_TYPES = ("application/json", "text/plain", "")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Fragment URL parameters that become the slot's attributes.
SLOT_PARAMS = (
    "placement", "strategy", "count", "title", "item", "category", "price_min", "price_max",
    "q", "page", "suggest", "search_url", "sort", "per_page", "categories", "controls",
)


class PageIn(BaseModel):
    model_config = ConfigDict(extra="ignore")

    url: str = Field(default="", max_length=4096)
    referrer: str = Field(default="", max_length=4096)
    type: str = Field(default="", max_length=32)
    item_id: str = Field(default="", max_length=128)
    category: str = Field(default="", max_length=256)
    title: str = Field(default="", max_length=512)


class SlotIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    widget: str = Field(min_length=1, max_length=32)
    attrs: dict[str, str] = Field(default_factory=dict, max_length=30)


class PageRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shop: str = Field(min_length=1, max_length=64)
    token: str | None = Field(default=None, max_length=512)
    page: PageIn = Field(default_factory=PageIn)
    slots: list[SlotIn] = Field(default_factory=list)
    # The shop's menu entries (data-category of each), in the shop's order.
    nav: list[Annotated[str, Field(max_length=128)]] = Field(default_factory=list, max_length=MAX_MENU_ENTRIES)


# -- helpers -------------------------------------------------------------------------
def _services(request: Request):  # -> Services (import cycle otherwise)
    return request.app.state.services


async def read_body(request: Request, limit: int) -> bytes:
    """The body, refusing (413) anything over `limit` bytes without reading it all."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type not in ACCEPTED_TYPES:
        raise ApiError(415, f"send JSON (application/json or text/plain), not {content_type}")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, f"request body too large: {declared} bytes (at most {limit})")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, f"request body too large (at most {limit} bytes)")
    if not body:
        raise ApiError(400, "empty request body: send a JSON object")
    return bytes(body)


def _shop_from(request: Request, body_shop: str | None) -> str | None:
    query_shop = request.query_params.get("shop")
    if query_shop and body_shop and query_shop != body_shop:
        raise ApiError(400, f"shop in the URL ({query_shop!r}) and in the body ({body_shop!r}) differ")
    return body_shop or query_shop


def _respond_with_token(request: Request, payload: dict, shop: str, visitor_id: str, status: int = 200) -> Response:
    svc = _services(request)
    token = svc.signer.sign(shop, visitor_id)
    response = JSONResponse({**payload, "token": token}, status_code=status, headers={"Cache-Control": "no-store"})
    attach_token(
        response, token, shop, svc.settings.cookie_name, svc.signer.max_age_seconds,
        https=svc.contexts.is_https(request),
    )
    return response


# -- endpoints -----------------------------------------------------------------------
async def script(request: Request) -> Response:
    return FileResponse(
        STATIC_DIR / "vitrine.js",
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )


async def health(request: Request) -> Response:
    svc = _services(request)
    version = await run_in_threadpool(svc.store.schema_version)
    return JSONResponse({"status": "ok", "schema": version})


async def page(request: Request) -> Response:
    """One call per page view: every slot's fragment, the popups, and the renewed token."""
    svc = _services(request)
    raw = await read_body(request, svc.settings.max_body_bytes)
    try:
        body = PageRequest.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(400 if _is_json_error(exc) else 422, describe_validation_error(exc)) from None
    if len(body.slots) > svc.settings.max_slots_per_page:
        raise ApiError(422, f"too many slots: {len(body.slots)} (at most {svc.settings.max_slots_per_page})")
    shop = svc.shop(_shop_from(request, body.shop))
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name, body.token)
    page_ctx = PageContext(**body.page.model_dump())

    def render() -> dict[str, Any]:
        page_view_id = secrets.token_urlsafe(12)
        ctx = svc.contexts.build(request, shop.id, identity, page_ctx, page_view_id=page_view_id)
        rc = _render_context(svc, ctx, shop)
        fragments, errors = {}, {}
        for slot_in in body.slots:
            widget = WIDGETS.get(slot_in.widget)
            if widget is None or slot_in.widget == "popup":
                errors[slot_in.id] = f"unknown widget kind {slot_in.widget!r}"
                continue
            fragment = widget.render(rc, Slot(slot_in.id, slot_in.widget, slot_in.attrs))
            if fragment.error:
                errors[slot_in.id] = fragment.error
            if fragment.html:
                fragments[slot_in.id] = {
                    "html": fragment.html, "shadow": fragment.shadow, "campaigns": fragment.campaigns,
                    "strategy": fragment.strategy,
                }
        payload = {
            "page_view_id": page_view_id,
            "visitor": {"kind": ctx.visitor_kind, "visits": ctx.profile.visits, "new_visit": ctx.profile.new_visit},
            "fragments": fragments,
            "popups": WIDGETS["popup"].page_popups(rc),  # type: ignore[attr-defined]
            "errors": errors,
        }
        if body.nav and rc.navigator:
            payload["nav"] = rc.navigator.order_menu(ctx, body.nav, shop.nav).as_json()
        return payload

    payload = await run_in_threadpool(render)
    return _respond_with_token(request, payload, shop.id, identity.visitor_id)


async def events(request: Request) -> Response:
    """A batch of events; 202 only once it is committed to the store."""
    svc = _services(request)
    raw = await read_body(request, svc.settings.max_body_bytes)
    try:
        batch = parse_batch(raw, svc.settings.max_events_per_batch)
    except BatchError as exc:
        status = 400 if str(exc).startswith("invalid JSON") else 422
        raise ApiError(status, str(exc)) from None
    shop = svc.shop(_shop_from(request, batch.shop))
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name, batch.token)
    stored, duplicates = await run_in_threadpool(svc.store.record_events, shop.id, identity.visitor_id, to_events(batch))
    return _respond_with_token(request, {"accepted": stored, "duplicates": duplicates}, shop.id, identity.visitor_id, 202)


async def fragment(request: Request) -> Response:
    """`GET /v1/fragments/{kind}?shop=S`: one widget's HTML for this visitor, for QA and SSI.

    `?visitor=new|returning|customer&country=GB&device=mobile&source=paid` render as another
    kind of visitor; `page_type`, `item_id`, `category` set the page; `slot` and
    `placement` pick the slot; `_context=1` returns the template context and the decisions
    as JSON; `_debug=1` appends them to the HTML as a comment.
    """
    svc = _services(request)
    kind = request.path_params["kind"]
    widget = WIDGETS.get(kind)
    if widget is None:
        raise ApiError(404, f"unknown widget kind {kind!r}; known: {', '.join(sorted(WIDGETS))}")
    params = request.query_params
    shop = svc.shop(params.get("shop"))
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name)
    page_ctx = PageContext(
        url=params.get("url", ""), referrer=params.get("referrer", ""), type=params.get("page_type", ""),
        item_id=params.get("item_id", ""), category=params.get("category", ""),
    )
    overrides = {k: params[k] for k in OVERRIDES if params.get(k)}
    slot_id = params.get("slot", kind)
    attrs = {k: v for k, v in params.items() if k in SLOT_PARAMS}

    def render():
        ctx = svc.contexts.build(request, shop.id, identity, page_ctx, overrides=overrides)
        rc = _render_context(svc, ctx, shop, standalone=True)
        return ctx, widget.render(rc, Slot(slot_id, kind, attrs))

    ctx, frag = await run_in_threadpool(render)
    debug = frag.debug()
    if params.get("_context"):
        return JSONResponse({"visitor": ctx.as_dict(), **debug}, headers={"Cache-Control": "no-store"})
    if params.get("format") == "json":  # the order alone, for shops that render it themselves
        if frag.error:
            raise ApiError(422, frag.error)
        data = frag.as_json() if hasattr(frag, "as_json") else None
        if data is None:
            raise ApiError(400, f"{kind} fragments have no format=json")
        return JSONResponse(data, headers={"Cache-Control": "private, no-store"})
    html = frag.html
    if not html:
        html = f"<!-- vitrine: no {kind} for this visitor; add _context=1 to see why -->\n"
    if params.get("_debug") or svc.settings.debug:
        html += "\n<!-- vitrine debug\n" + json.dumps(debug, indent=2).replace("--", "- -") + "\n-->\n"
    headers = {"Cache-Control": "private, no-store", "X-Vitrine-Template": frag.template or "none"}
    if frag.campaigns:
        headers["X-Vitrine-Campaigns"] = ",".join(frag.campaigns)
    if frag.strategy:
        headers["X-Vitrine-Strategy"] = frag.strategy
    if frag.error:
        raise ApiError(422, frag.error)
    return HTMLResponse(html, headers=headers)


def _render_context(svc, ctx: VisitorContext, shop: ShopConfig, standalone: bool = False) -> RenderContext:
    closed = svc.store.closed_campaigns(shop.id, ctx.visitor_id) if not ctx.is_new_token else set()
    return RenderContext(
        ctx=ctx, shop=shop, templates=svc.templates, closed=closed, standalone=standalone,
        recommender=svc.recommender, default_count=svc.settings.recommendation_count, search=svc.search,
        navigator=svc.navigator,
    )


def _is_json_error(exc: ValidationError) -> bool:
    return any(err["type"] == "json_invalid" for err in exc.errors())
