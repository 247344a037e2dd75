"""The public HTTP API: the embed script, the page call, events, and fragment URLs."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal

import anyio
import anyio.to_thread
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response

from server.consent.rules import ConsentDecision, ConsentIn, from_query
from server.context import OVERRIDES, PageContext, VisitorContext, non_personal
from server.customers.identify import IdentifyIn, identify as identify_customer
from server.errors import ApiError
from server.events import BatchError, describe_validation_error, parse_batch, to_events
from server.client_ip import client_ip
from server.identity import Identity, attach_token, clear_token, identify
from server.models import ANONYMOUS_VISITOR
from server.measure.experiments import holdout_assignment
from server.leads import LeadIn, LeadLimiter, interests_offered
from server.models import ANONYMOUS_VISITOR, Event, utcnow
from server.navigation import MAX_MENU_ENTRIES
from server.privacy.data import delete_visitor
from server.promotions.reveal import NeedsAVisitor, NoCodeLeft, banner_code, campaign_code
from server.qa import QA_HEADER, QA_PARAM, qa_allowed
from server.schedules import parse_now
from server.shops import ShopConfig
from server.store import StoreBusy, VisitorForgotten
from server.urls import site_base
from server.web.front import body_shop, request_shop
from server.web.html import debug_comment
from server.web.responses import JSONResponse
from widgets import WIDGETS, RenderContext, Slot, SlotLimit, isolated, items_asked, render_slot

ACCEPTED_TYPES = ("application/json", "text/plain", "")
FORGOTTEN = "this visitor's data was deleted at their request; the next page call gives a new visitor id"
# Codes revealed per visitor and per address in LeadLimiter's window (ten minutes): each
# visitor keeps their one code, so more are only asked for by making new visitors.
REVEALS_PER_WINDOW = 20
log = logging.getLogger("vitrine")
STATIC_DIR = Path(__file__).resolve().parent.parent / "static"
# Fragment URL parameters that become the slot's attributes.
SLOT_PARAMS = (
    "placement", "strategy", "count", "title", "item", "category", "price_min", "price_max",
    "q", "page", "suggest", "search_url", "sort", "per_page", "categories", "controls",
)


class PageIn(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

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
    consent: ConsentIn | None = None  # what the visitor allowed; absent or null: unknown
    gpc: bool | None = None  # navigator.globalPrivacyControl
    # vitrine('identify', {id, signature}) of a logged-in customer, false at log-out; absent: as before.
    identify: IdentifyIn | Literal[False] | None = None


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
    if b"\\u0000" in body:  # a NUL in a JSON string: no store can hold it
        raise ApiError(400, "the request body contains a NUL character (\\u0000)")
    return bytes(body)


def _respond(
    request: Request, payload: dict, shop: str, identity: Identity, consent: ConsentDecision, status: int = 200,
    withdrawn: bool = False,
) -> Response:
    """The answer, with the (re-)signed token as cookie and header when the visitor's consent
    lets Vitrine keep one; without it no token is signed, and a withdrawal clears the cookie."""
    if consent.personalization:
        return _respond_with_token(request, payload, shop, identity, status)
    svc = _services(request)
    response = JSONResponse(payload, status_code=status, headers={"Cache-Control": "no-store"})
    if withdrawn:
        clear_token(response, shop, svc.settings.cookie_name, https=svc.contexts.is_https(request))
    return response


def _respond_with_token(request: Request, payload: dict, shop: str, identity: Identity, status: int = 200) -> Response:
    svc = _services(request)
    token = identity.token or svc.signer.sign(shop, identity.visitor_id)
    response = JSONResponse({**payload, "token": token}, status_code=status, headers={"Cache-Control": "no-store"})
    attach_token(
        response, token, shop, svc.settings.cookie_name, svc.signer.max_age_seconds,
        https=svc.contexts.is_https(request),
    )
    return response


# -- endpoints -----------------------------------------------------------------------
# The embed script is part of the installed package: read once per process, served from
# memory (no thread, no file system call), so it answers at once even when the request
# threads are all busy.
_SCRIPT = (STATIC_DIR / "vitrine.js").read_bytes()
# The popups' part of it, loaded by the embed script only for a page call that has popups.
_POPUPS_SCRIPT = (STATIC_DIR / "popups.js").read_bytes()


async def script(request: Request) -> Response:
    return _script_response(_SCRIPT)


async def popups_script(request: Request) -> Response:
    return _script_response(_POPUPS_SCRIPT)


def _script_response(body: bytes) -> Response:
    return Response(
        body,
        media_type="text/javascript; charset=utf-8",
        headers={"Cache-Control": "public, max-age=300", "Access-Control-Allow-Origin": "*"},
    )


async def health(request: Request) -> Response:
    svc = _services(request)
    # A thread of its own (per app and event loop): a worker whose request threads are all
    # busy still answers its health check.
    limiter = getattr(request.app.state, "health_thread", None)
    if limiter is None:
        limiter = request.app.state.health_thread = anyio.CapacityLimiter(1)
    version = await anyio.to_thread.run_sync(svc.store.schema_version, limiter=limiter)
    return JSONResponse({"status": "ok", "schema": version})


async def page(request: Request) -> Response:
    """One call per page view: every slot's fragment, the popups, and the renewed token."""
    svc = _services(request)
    body = await _read_json(request, svc, PageRequest)
    if len(body.slots) > svc.settings.max_slots_per_page:
        raise ApiError(422, f"too many slots: {len(body.slots)} (at most {svc.settings.max_slots_per_page})")
    shop = svc.shop(body_shop(request, body.shop))
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name, body.token)
    page_ctx = PageContext(**body.page.model_dump())
    slots = [Slot(s.id, s.widget, s.attrs) for s in body.slots]
    _check_work(slots, svc.settings.recommendation_count, svc.settings.max_items_per_page)
    consent = svc.contexts.consent(request, shop.consent_policy, body.consent, body.gpc)
    # A visitor with a token was profiled with their consent: saying no now deletes it all.
    # An unknown answer (a consent manager that has not answered yet) deletes nothing.
    withdrawn = consent.refused and not identity.is_new

    def render() -> dict[str, Any]:
        if withdrawn:
            # This worker's page views of theirs not written yet go first (as for DELETE /v1/me).
            svc.contexts.page_views.forget(shop.id, identity.visitor_id)
            delete_visitor(svc.store, shop.id, identity.visitor_id)
        page_view_id = secrets.token_urlsafe(12)
        ctx = svc.contexts.build(
            request, shop.id, identity, page_ctx, page_view_id=page_view_id, consent=consent,
            sensitive_categories=shop.sensitive_categories, audiences=svc.audiences.for_shop(shop.audience_book),
            holdout=shop.holdout,
        )
        identified = None
        if body.identify is not None:
            ctx, identified = identify_customer(svc.store, svc.shop_keys, ctx, body.identify)
        rc = _render_context(svc, ctx, shop)
        fragments, errors = {}, {}
        for slot in slots:
            if slot.widget == "popup":  # popups come with the page, not in a slot
                errors[slot.id] = "popups need no slot: they come with every page call"
                continue
            fragment = render_slot(rc, slot)
            if fragment.error:
                errors[slot.id] = fragment.error
            if fragment.html:
                fragments[slot.id] = {
                    "html": fragment.html, "shadow": fragment.shadow, "campaigns": fragment.campaigns,
                    "strategy": fragment.strategy,
                }
                if fragment.experiment:
                    fragments[slot.id].update(experiment=fragment.experiment, variant=fragment.variant)
        popup_widget = WIDGETS["popup"]
        payload = {
            "page_view_id": page_view_id,
            "visitor": {"kind": ctx.visitor_kind, "visits": ctx.profile.visits, "new_visit": ctx.profile.new_visit},
            "fragments": fragments,
            "popups": isolated(shop.id, "popups", lambda: popup_widget.page_popups(rc), list),  # type: ignore[attr-defined]
            "errors": errors,
            "consent": {"personalization": consent.personalization, "analytics": consent.analytics, "withdrawn": withdrawn},
            "holdout": ctx.holdout,
        }
        if identified is not None:
            payload["identify"] = identified
        if body.nav and rc.navigator:
            navigator = rc.navigator
            nav = isolated(shop.id, "menu order", lambda: navigator.order_menu(ctx, body.nav, shop.nav).as_json(), dict)
            if nav:
                payload["nav"] = nav
            else:
                errors["nav"] = "the menu order could not be computed (the server log says why)"
        # Every experiment the visitor is counted in on this page, and the first exposure to each
        # stored; the hold-out too (its two sides are compared as an experiment's variants).
        payload["experiments"] = {a.experiment.id: a.variant.id for a, _ in rc.exposures if a.counted}
        held = holdout_assignment(ctx, shop.holdout)
        if held is not None:
            rc.exposures.append((held, ""))
        isolated(shop.id, "exposures", lambda: svc.contexts.record_exposures(ctx, rc.exposures), int)
        return payload, ctx

    payload, ctx = await run_in_threadpool(render)
    if consent.personalization and ctx.visitor_id != identity.visitor_id:
        # The token named a visitor deleted at their request: this page call made a new one.
        identity = Identity(visitor_id=ctx.visitor_id, is_new=True)
    return _respond(request, payload, shop.id, identity, consent, withdrawn=withdrawn)


async def events(request: Request) -> Response:
    """A batch of events; 202 only once it is committed to the store."""
    svc = _services(request)
    raw = await read_body(request, svc.settings.max_body_bytes)
    try:
        batch = parse_batch(raw, svc.settings.max_events_per_batch)
    except BatchError as exc:
        status = 400 if str(exc).startswith("invalid JSON") else 422
        raise ApiError(status, str(exc)) from None
    shop = svc.shop(body_shop(request, batch.shop))
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name, batch.token)
    consent = svc.contexts.consent(request, shop.consent_policy, batch.consent, batch.gpc)
    kept = [e for e in to_events(batch) if consent.allows(e.type)]
    dropped = len(batch.events) - len(kept)
    if not kept:
        raise ApiError(403, (
            f"nothing recorded: the visitor's consent does not allow these events ({consent.why}; "
            'send "consent": {"personalization": true, "analytics": true} once the visitor agreed)'
        ))
    # Measurement of a visitor who allows no profile is counted under one id shared by all.
    visitor_id = identity.visitor_id if consent.personalization else ANONYMOUS_VISITOR
    # Trending near you counts the events where they came from (a visitor's first page view
    # may not be written yet when their first events come, server/visitors/page_views.py).
    country = svc.contexts.locate(request).country
    try:
        # The batch goes to the store's group writer and this request waits for the commit on
        # the event loop, holding no thread: concurrent batches share commits, and how many
        # wait at once is bounded by max_event_batches_in_flight (server/web/overload.py).
        committed = svc.store.submit_events(shop.id, visitor_id, kept, country)
        try:
            stored, duplicates = await asyncio.wait_for(asyncio.wrap_future(committed), svc.store.write_wait_s)
        except TimeoutError:
            raise StoreBusy(f"the batch was not committed within {svc.store.write_wait_s:.1f} s") from None
    except VisitorForgotten:
        # A batch on its way when the visitor had their data deleted (a beacon as the page
        # unloaded): nothing of it is kept, and the cookie goes.
        response = JSONResponse({"error": (
            "nothing recorded: this visitor's data was deleted at their request; the next page call "
            "gives a new visitor id")}, status_code=403, headers={"Cache-Control": "no-store"})
        clear_token(response, shop.id, svc.settings.cookie_name, https=svc.contexts.is_https(request))
        return response
    answer = {"accepted": stored, "duplicates": duplicates, "dropped": dropped}
    return _respond(request, answer, shop.id, identity, consent, 202)


async def leads(request: Request) -> Response:
    """An e-mail sign-up from a popup's form: stored (linked to the visitor only with their
    consent, which also makes them a `prospect`), answered with the campaign's reward."""
    svc = _services(request)
    body = await _read_json(request, svc, LeadIn)
    shop = svc.shop(body_shop(request, body.shop))
    campaign = shop.campaign(body.campaign)
    if campaign is None or campaign.signup is None or not campaign.enabled:
        raise ApiError(404, f"shop {shop.id!r} has no sign-up campaign {body.campaign!r}")
    if not body.opt_in:
        raise ApiError(422, "opt_in: the box must be ticked to sign up (a lead is a sign-up to the shop's e-mails)")
    if body.birthday and not campaign.signup.birthday:
        raise ApiError(422, f"birthday: campaign {campaign.id!r} does not ask for one")
    offered = interests_offered(campaign, svc.catalog.shop(shop.id))
    unknown = [i for i in body.interests if i not in offered]
    if unknown:
        raise ApiError(422, f"interests: {unknown[0]!r} is not one campaign {campaign.id!r} offers")
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name, body.token)
    consent = svc.contexts.consent(request, shop.consent_policy, body.consent, body.gpc)
    linked = consent.personalization
    _limit(request, svc, "lead_limiter", 5, shop.id, identity, "too many sign-ups")
    lead = dict(campaign=campaign.id, email=body.email, opt_in=True, birthday=body.birthday,
                interests="|".join(dict.fromkeys(body.interests)))

    def store() -> None:
        if linked:
            # The birthday goes with it into the visitor state: birthday campaigns read it there.
            sign_up = Event(event_id=f"lead:{secrets.token_urlsafe(12)}", type="sign_up", ts=utcnow(), campaign=campaign.id,
                            props={"birthday": body.birthday} if body.birthday else None)
            svc.store.record_events(shop.id, identity.visitor_id, [sign_up])
        svc.store.add_lead(shop.id, identity.visitor_id if linked else None, lead)

    def reward() -> str:
        """The code the answer reveals: the campaign's, or the visitor's own of its pool."""
        if not campaign.coupon_pool:
            return campaign.code
        try:
            return campaign_code(svc.store, campaign, _reader_context(svc, request, shop, identity, consent))
        except NoCodeLeft as exc:
            log.warning("sign-up to %s on shop %s got no code: %s", campaign.id, shop.id, exc)
            return ""  # signed up all the same: the thanks, without a code
        except NeedsAVisitor:
            return ""  # an unlinked lead: nobody to give a code of their own

    try:
        await run_in_threadpool(store)
        code = await run_in_threadpool(reward)
    except VisitorForgotten:
        raise ApiError(403, FORGOTTEN) from None
    answer = {"signed_up": True, "linked": linked, "thanks": campaign.signup.thanks, "code": code,
              "reveal_text": campaign.reveal_text if code else ""}
    return _respond(request, answer, shop.id, identity, consent, 201)


class RevealIn(BaseModel):
    """`POST /v1/reveal`: the popup whose second step the visitor opened."""

    model_config = ConfigDict(extra="forbid")

    shop: str = Field(min_length=1, max_length=64)
    token: str | None = Field(default=None, max_length=512)
    campaign: str = Field(min_length=1, max_length=64)
    consent: ConsentIn | None = None
    gpc: bool | None = None


async def reveal(request: Request) -> Response:
    """The visitor's own code of a popup's coupon pool, issued on the first reveal and the
    same one after (server/promotions/reveal.py)."""
    svc = _services(request)
    body = await _read_json(request, svc, RevealIn)
    shop = svc.shop(body_shop(request, body.shop))
    campaign = shop.campaign(body.campaign)
    if campaign is None or not campaign.coupon_pool or campaign.signup is not None or not campaign.enabled:
        raise ApiError(404, f"shop {shop.id!r} has no enabled popup {body.campaign!r} that reveals a code of a coupon pool")
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name, body.token)
    consent = svc.contexts.consent(request, shop.consent_policy, body.consent, body.gpc)
    _limit(request, svc, "reveal_limiter", REVEALS_PER_WINDOW, shop.id, identity, "too many codes asked for")
    try:
        code = await run_in_threadpool(
            lambda: campaign_code(svc.store, campaign, _reader_context(svc, request, shop, identity, consent)))
    except NoCodeLeft as exc:
        raise ApiError(409, str(exc)) from None
    except NeedsAVisitor as exc:
        raise ApiError(403, str(exc)) from None
    except VisitorForgotten:
        raise ApiError(403, FORGOTTEN) from None
    answer = {"campaign": campaign.id, "code": code, "reveal_text": campaign.reveal_text}
    return _respond(request, answer, shop.id, identity, consent)


async def _read_json(request: Request, svc, model: type[BaseModel]) -> Any:
    """The request's body as `model`: 400 for what is not JSON, 422 naming each bad field."""
    raw = await read_body(request, svc.settings.max_body_bytes)
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise ApiError(400 if _is_json_error(exc) else 422, describe_validation_error(exc)) from None


def _limit(request: Request, svc, name: str, limit: int, shop: str, identity: Identity, what: str) -> None:
    """429 once this visitor or their address went over `limit` in LeadLimiter's window (the
    limiter `name`, one per process)."""
    limiter = getattr(request.app.state, name, None)
    if limiter is None:
        limiter = LeadLimiter(limit=limit)
        setattr(request.app.state, name, limiter)
    peer = request.client.host if request.client else None
    address = client_ip(peer, request.headers.get("x-forwarded-for"), svc.contexts.trusted)
    if not limiter.allow(shop, None if identity.is_new else identity.visitor_id, address):
        raise ApiError(429, f"{what} from this visitor or address: try again in a few minutes")


def _reader_context(svc, request: Request, shop: ShopConfig, identity: Identity, consent: ConsentDecision) -> VisitorContext:
    """The visitor as a request that is not a page view sees them (nothing recorded): for
    what their audiences and consent allow."""
    return svc.contexts.build(request, shop.id, identity, PageContext(), consent=consent,
                              audiences=svc.audiences.for_shop(shop.audience_book))


async def fragment(request: Request) -> Response:
    """`GET /v1/fragments/{kind}?shop=S`: one widget's HTML for this visitor, for QA and SSI.

    `page_type`, `item_id`, `category` set the page; `slot` and `placement` pick the slot.
    With the shop's QA key (or on a shop open for QA): `?visitor=new|returning|customer&
    country=GB&device=mobile&source=paid&audience=lapsed,cart_abandoner` render as another kind
    of visitor; `_context=1`
    returns the template context and the decisions as JSON; `_debug=1` appends them to the
    HTML as a comment. Without it, the overrides are ignored (the real visitor is rendered)
    and `_context` / `_debug` answer 403.
    """
    svc = _services(request)
    kind = request.path_params["kind"]
    widget = WIDGETS.get(kind)
    if widget is None:
        raise ApiError(404, f"unknown widget kind {kind!r}; known: {', '.join(sorted(WIDGETS))}")
    params = request.query_params
    shop = svc.shop(request_shop(request))
    qa = qa_allowed(svc.signer.keys, shop, request.headers.get(QA_HEADER) or params.get(QA_PARAM))
    if not qa and (params.get("_context") or params.get("_debug")):
        raise ApiError(
            403,
            f"_context and _debug need the QA key of shop {shop.id!r}: send it as the {QA_HEADER} header or the "
            f"{QA_PARAM} parameter (`vitrine shops qa-key {shop.id}` prints it)",
        )
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name)
    try:
        given = from_query(params.get("consent"))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    consent = svc.contexts.consent(request, shop.consent_policy, given)
    page_ctx = PageContext(
        url=params.get("url", ""), referrer=params.get("referrer", ""), type=params.get("page_type", ""),
        item_id=params.get("item_id", ""), category=params.get("category", ""),
    )
    overrides = {k: params[k] for k in OVERRIDES if params.get(k)} if qa else {}
    now = None
    if qa and params.get("now"):
        try:
            now = parse_now(params["now"], shop.timezone)
        except ValueError as exc:
            raise ApiError(400, str(exc)) from None
    slot = Slot(params.get("slot", kind)[:64], kind, {k: v for k, v in params.items() if k in SLOT_PARAMS})
    try:
        items_asked(slot, svc.settings.recommendation_count)
    except SlotLimit as exc:
        raise ApiError(422, str(exc)) from None

    # The decisions' reasons are worded only for whoever reads them (QA).
    explain = bool(params.get("_context") or params.get("_debug") or (svc.settings.debug and qa))

    def render():
        ctx = svc.contexts.build(
            request, shop.id, identity, page_ctx, overrides=overrides, consent=consent,
            sensitive_categories=shop.sensitive_categories, audiences=svc.audiences.for_shop(shop.audience_book),
            holdout=shop.holdout,
        )
        if now is not None:
            ctx = dataclasses.replace(ctx, now=now)
        rc = _render_context(svc, ctx, shop, standalone=True, explain=explain)
        rc.count_searches = not (overrides or now is not None or params.get("_context") or params.get("_debug"))
        return ctx, render_slot(rc, slot)

    ctx, frag = await run_in_threadpool(render)
    if frag.failed:
        raise ApiError(503, f"this {kind} fragment could not be rendered now (the server log says why)")
    debug = frag.debug()
    if params.get("_context"):
        # Every audience of the shop, in or not, with the reason: what QA reads to see why.
        payload = {"visitor": ctx.as_dict(), "audiences": ctx.audiences.as_json(), **debug}
        return JSONResponse(payload, headers={"Cache-Control": "no-store"})
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
    if params.get("_debug") or (svc.settings.debug and qa):
        html += debug_comment(debug)
    headers = {"Cache-Control": "private, no-store", "X-Vitrine-Template": frag.template or "none"}
    if frag.campaigns:
        headers["X-Vitrine-Campaigns"] = ",".join(frag.campaigns)
    if frag.strategy:
        headers["X-Vitrine-Strategy"] = frag.strategy
    if frag.assignment is not None:
        headers["X-Vitrine-Variant"] = f"{frag.assignment.experiment.id}:{frag.assignment.variant.id}"
    if frag.error:
        raise ApiError(422, frag.error)
    return HTMLResponse(html, headers=headers)


def _check_work(slots: list[Slot], default_count: int, most_items: int) -> None:
    """Refuse (422) a page call that asks for more than a page call may, before any work."""
    total = 0
    for slot in slots:
        try:
            total += items_asked(slot, default_count)
        except SlotLimit as exc:
            raise ApiError(422, f"slot {slot.id!r}: {exc}") from None
    if total > most_items:
        raise ApiError(
            422, f"the slots of this page call ask for {total} items; a page call may ask for at most {most_items}"
        )


def _render_context(svc, ctx: VisitorContext, shop: ShopConfig, standalone: bool = False,
                    explain: bool = False) -> RenderContext:
    """What every slot of the request renders with; a hold-out visitor's shows nothing of them."""
    return RenderContext(
        ctx=non_personal(ctx) if ctx.holdout else ctx, shop=shop, templates=svc.templates, closed=set(ctx.closed_campaigns), standalone=standalone, explain=explain,
        recommender=svc.recommender, default_count=svc.settings.recommendation_count, search=svc.search,
        navigator=svc.navigator, catalog=svc.catalog,
        coupon_code=lambda campaign, visitor: banner_code(svc.store, campaign, visitor),
        site=site_base(shop.site_url, svc.settings.public_url, svc.settings.host, svc.settings.port) if shop.site_url else "",
    )


def _is_json_error(exc: ValidationError) -> bool:
    return any(err["type"] == "json_invalid" for err in exc.errors())
