"""VisitorContext: everything known about the visitor for one request, built once per request.

Identity comes from the signed token; device from the User-Agent; location from the client
IP (looked up, then dropped: it is never stored or kept in the context); traffic source from
the page URL and referrer; history from the store, as far as the visitor's consent and the
shop's sensitive categories let it be used (server/consent/).
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

from starlette.requests import Request

from server.client_ip import client_ip, is_trusted_peer, parse_networks
from server.consent.rules import (
    ALLOWED, ConsentDecision, ConsentIn, ConsentPolicy, answer_key, answer_source, decide, gpc_signal,
)
from server.countries import geo_name
from server.device import Device, parse_device
from server.geo import Geo, GeoLocator
from server.identity import Identity, new_visitor_id
from server.models import Event, VisitorProfile, utcnow
from server.store import Store, VisitorForgotten
from server.languages import accepted_languages
from server.measure.experiments import Assignment, exposure_event, in_holdout
from server.traffic import TrafficSource, classify_source, referrer_host
from server.visitors.page_views import PageView, PageViewWriter

if TYPE_CHECKING:
    from server.audiences import Membership
    from server.catalog import Catalog

T = TypeVar("T")


@dataclass(frozen=True)
class PageContext:
    url: str = ""
    referrer: str = ""
    type: str = ""  # home, category, product, cart, search, checkout, other
    item_id: str = ""
    category: str = ""
    title: str = ""


class VisitorMemo:
    """What widgets derive from a visitor's state (their history's viewed items, category
    affinity, model vector and top picks), kept across the visitor's requests for `ttl_s`
    while the state stays the same: a visitor going from the home page to a category and
    the cart changes nothing these read, and their menu and panels are not worked out anew.

    Keyed by a fingerprint of what the values depend on (VisitorContext.derive), with the
    state itself hashed, so a new event (another worker's included: the state is read from
    the store on every request) makes a new entry. Values that follow the clock (affinity
    halves with time) are at most `ttl_s` old. The last `max_visitors` visitors are kept."""

    def __init__(self, max_visitors: int = 4096, ttl_s: float = 30.0, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_visitors = max_visitors
        self.ttl_s = ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[tuple, tuple[float, dict[str, Any]]] = OrderedDict()

    def get(self, fingerprint: tuple, key: str, compute: Callable[[], T]) -> T:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is not None and now - entry[0] < self.ttl_s:
                self._entries.move_to_end(fingerprint)
                if key in entry[1]:
                    return entry[1][key]
        value = compute()
        with self._lock:
            entry = self._entries.get(fingerprint)
            if entry is None or now - entry[0] >= self.ttl_s:
                entry = self._entries[fingerprint] = (now, {})
                self._entries.move_to_end(fingerprint)
                while len(self._entries) > self.max_visitors:
                    self._entries.popitem(last=False)
            entry[1][key] = value
        return value

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class VisitorContext:
    shop: str
    visitor_id: str
    is_new_token: bool  # no valid token came with this request
    profile: VisitorProfile
    device: Device
    geo: Geo
    source: TrafficSource
    page: PageContext
    consent: ConsentDecision = ALLOWED
    # QA's `now=` on a fragment URL (naive UTC): the moment schedules and audiences are read at.
    now: datetime | None = None
    # The ids among these items whose views this page must not use (the shop's sensitive
    # categories other than the page's own); None when the shop has none.
    hidden: Callable[[Sequence[str]], set[str]] | None = field(default=None, compare=False, repr=False)
    # What lasts across this visitor's requests while their state stays the same (VisitorMemo).
    memo: "VisitorMemo | None" = field(default=None, compare=False, repr=False)
    # The languages of the request's Accept-Language, preferred first ("en-gb", "en").
    languages: tuple[str, ...] = ()
    # Works out which of the shop's audiences the visitor is in (server/audiences/); None: none.
    audience_source: "Callable[[VisitorContext], Membership] | None" = field(default=None, compare=False, repr=False)
    # Reads the coupon codes the visitor holds with uses left, by pool (server/promotions/);
    # None: none can be held (no consent to personalization).
    coupon_source: "Callable[[VisitorContext], dict[str, str]] | None" = field(default=None, compare=False, repr=False)
    # In the shop's hold-out (server/measure/experiments.py): shown no personalization anywhere.
    holdout: bool = False
    # QA's `variant=hero:b`: the variants to show, by experiment id.
    forced_variants: tuple[tuple[str, str], ...] = ()
    # What widgets derive from the visitor (their history's viewed items, affinity, model
    # vector), worked out once per request and shared by every slot. Not copied by
    # dataclasses.replace: a context with QA's overrides derives anew.
    _derived: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def derive(self, key: str, compute: Callable[[], T], lasting: bool = False) -> T:
        """`compute()` the first time a request asks for `key`, the same value after.

        `lasting`: the value depends on nothing but the visitor's stored state, their device,
        location, kind and consent, the page's category where sensitive categories apply, and
        whatever `key` names (a catalog or model version): the visitor's next requests with the
        same state reuse it for a while (VisitorMemo)."""
        try:
            return self._derived[key]
        except KeyError:
            pass
        memo = self.memo
        if lasting and memo is not None and not self.is_new_token and self.profile.state:
            value = memo.get(self._fingerprint(), key, compute)
        else:
            value = compute()
        self._derived[key] = value
        return value

    def _fingerprint(self) -> tuple:
        """What a lasting value may depend on (see derive)."""
        def make() -> tuple:
            state = self.profile.state
            assert state is not None
            page = (self.page.category, self.page.item_id) if self.hidden is not None else None
            return (self.shop, self.visitor_id, state.digest(), self.consent.personalization, self.geo.country,
                    self.device.device_class, self.visitor_kind, page)

        return self.derive("fingerprint", make)

    @property
    def history(self) -> list[Event]:
        """The visitor's recent events, newest first, from the visitor state (read with the
        profile: no query of its own); none for a visitor without a valid token or without
        consent to personalization. Every reader of the history (recommendations, the menu,
        search, category pages) reads it here, so views of the shop's sensitive categories
        are left out here, except on a page of that category."""
        if self.is_new_token or self.profile.state is None or not self.consent.personalization:
            return []
        if self.hidden is None:
            return self.profile.state.events()
        return self.derive("history:shown", lambda: _without_hidden(self.profile.state.events(), self.hidden))

    @property
    def closed_campaigns(self) -> frozenset[str]:
        if self.is_new_token or self.profile.state is None or not self.consent.personalization:
            return frozenset()
        return self.profile.state.closed

    @property
    def audiences(self) -> "Membership":
        """The shop's audiences the visitor is in, with the reasons, worked out once per request."""
        try:
            return self._derived["audiences"]
        except KeyError:  # the first read (an import inside a property costs on every read)
            pass
        from server.audiences import NO_AUDIENCES

        source = self.audience_source
        return self.derive("audiences", lambda: source(self) if source is not None else NO_AUDIENCES)

    def held_coupons(self) -> dict[str, str]:
        """The codes the visitor (or the customer they identified as) holds with uses left, by
        pool: read once per request, and only by a campaign that asks (`holds_coupon`)."""
        source = self.coupon_source
        return self.derive("coupons:held", lambda: source(self) if source is not None else {})

    @property
    def visitor_kind(self) -> str:
        """new (first visit), returning (came back, never bought) or customer (has ordered)."""
        if self.profile.orders > 0:
            return "customer"
        return "returning" if self.profile.visits > 1 else "new"

    def as_dict(self, geo_detail: str = "region") -> dict[str, Any]:
        """The context as plain data: what templates get as `visitor`, and what `?_context=1`
        shows (made once per request and detail: every slot's template gets it). The location
        is the country and region; the city and time zone only for `geo_detail="city"` (a
        campaign that opts in)."""
        return self.derive(f"as_dict:{geo_detail}", lambda: self._as_dict(geo_detail))

    def _as_dict(self, geo_detail: str) -> dict[str, Any]:
        # vars(), not dataclasses.asdict: these dataclasses hold only strings and flags, and
        # asdict's deep copy was a tenth of the template data's time.
        geo = dict(vars(self.geo))
        if geo_detail != "city":
            geo = {k: geo[k] for k in ("country", "country_name", "region")}
        return {
            "shop": self.shop,
            "kind": self.visitor_kind,
            "is_new_token": self.is_new_token,
            "visits": self.profile.visits,
            "page_views": self.profile.page_views,
            "orders": self.profile.orders,
            "is_customer": self.profile.is_customer,
            "customer": {"id": self.profile.customer_id, "first_name": self.profile.first_name,
                         "group": self.profile.customer_group} if self.profile.customer_id else None,
            "first_seen": self.profile.first_seen.isoformat(timespec="seconds"),
            "device": dict(vars(self.device)),
            "geo": geo,
            "source": {
                "medium": self.source.medium,
                "source": self.source.source,
                "campaign": self.source.campaign,
                "utm": dict(self.source.utm),
            },
            "page": dict(vars(self.page)),
            "consent": self.consent.as_dict(),
            "language": self.languages[0] if self.languages else "",
            "audiences": list(self.audiences.ids),
            "holdout": self.holdout,
        }


# What QA may pretend to be on a fragment URL: ?visitor=new&country=GB&device=mobile&source=paid&audience=lapsed
# &variant=hero:b (an experiment's variant) &holdout=1 (in the shop's hold-out, or 0: not)
OVERRIDES = ("visitor", "country", "device", "source", "audience", "variant", "holdout")


class ContextBuilder:
    def __init__(
        self, store: Store, geo: GeoLocator, trusted_proxies: tuple[str, ...], visit_timeout_s: int,
        page_views: PageViewWriter, catalog: "Catalog | None" = None,
    ) -> None:
        self.store = store
        self.catalog = catalog
        self.page_views = page_views
        self.geo = geo
        self.trusted = parse_networks(trusted_proxies)
        self.visit_timeout_s = visit_timeout_s
        self.memo = VisitorMemo()
        self._exposed = RecentKeys(100_000)

    def is_https(self, request: Request) -> bool:
        if request.scope.get("scheme") == "https":  # not request.url: building it is a tenth of a millisecond
            return True
        peer = request.client.host if request.client else None
        return is_trusted_peer(peer, self.trusted) and request.headers.get("x-forwarded-proto", "").lower() == "https"

    def locate(self, request: Request) -> Geo:
        peer = request.client.host if request.client else None
        return self.geo.lookup(client_ip(peer, request.headers.get("x-forwarded-for"), self.trusted))

    def consent(
        self, request: Request, policy: ConsentPolicy, given: ConsentIn | None, page_gpc: bool | None = None,
    ) -> ConsentDecision:
        """What this request may store, by the visitor's answer, GPC and the shop's rule (for
        `required_in`, by the country of the request's address, which is then dropped)."""
        country = self.locate(request).country if policy.rule == "required_in" else ""
        return decide(policy, given, country, gpc_signal(request.headers, page_gpc))

    def build(
        self,
        request: Request,
        shop: str,
        identity: Identity,
        page: PageContext,
        *,
        page_view_id: str | None = None,
        overrides: Mapping[str, str] | None = None,
        consent: ConsentDecision = ALLOWED,
        sensitive_categories: Sequence[str] = (),
        audiences: "Callable[[VisitorContext], Membership] | None" = None,
        holdout: float = 0.0,
    ) -> VisitorContext:
        """The visitor's context; with a `page_view_id` this request is a page view and is
        recorded. Without consent to personalization nothing is read or recorded: the visitor
        is a new one, known only by this request (device, location, source, page). `holdout`:
        the shop's hold-out share, which the visitor is in or not by their id."""
        if not consent.personalization:
            identity = Identity(visitor_id=new_visitor_id(), is_new=True)
        device = parse_device(request.headers.get("user-agent"))
        geo = self.locate(request)
        source = classify_source(page.url or None, page.referrer or None)
        now = utcnow()
        if page_view_id and consent.personalization:
            view = Event(
                event_id=f"pv:{page_view_id}", type="page_view", ts=now, item_id=page.item_id or None,
                props={"page_type": page.type, "path": _path_of(page.url), "medium": source.medium},
            )
            def record(visitor_id: str, known: bool) -> VisitorProfile:
                return self.page_views.record(PageView(
                    shop, visitor_id, now, self.visit_timeout_s,
                    country=geo.country, device_class=device.device_class, source=source.medium, event=view,
                    gpc=consent.gpc, consent=answer_key(consent), consent_source=answer_source(consent),
                    path=_path_of(page.url), referrer_domain=referrer_host(page.referrer),
                    source_name=source.source, campaign=source.campaign,
                ), known=known)

            try:
                profile = record(identity.visitor_id, not identity.is_new)
            except VisitorForgotten:  # their data was deleted at their request: a new visitor
                identity = Identity(visitor_id=new_visitor_id(), is_new=True)
                profile = record(identity.visitor_id, False)
        elif identity.is_new:  # nothing can be stored under an id this request made
            profile = VisitorProfile(visitor_id=identity.visitor_id, first_seen=now, last_seen=now, new_visit=True)
        else:
            # With this worker's page views of theirs not written yet (page_views.py).
            profile = self.page_views.read(shop, identity.visitor_id) or VisitorProfile(
                visitor_id=identity.visitor_id, first_seen=now, last_seen=now, new_visit=True
            )
        if source.medium == "internal" and profile.source:
            # Browsing inside the shop: the visit keeps the source it arrived from.
            source = TrafficSource(medium=profile.source, source=profile.source_name, campaign=profile.utm_campaign, utm={})
        ctx = VisitorContext(
            shop=shop, visitor_id=identity.visitor_id, is_new_token=identity.is_new,
            profile=profile, device=device, geo=geo, source=source, page=page, consent=consent,
            hidden=self._hidden(shop, page, sensitive_categories) if sensitive_categories else None, memo=self.memo,
            languages=accepted_languages(request.headers.get("accept-language")), audience_source=audiences,
            holdout=consent.personalization and device.device_class != "bot" and in_holdout(holdout, shop, identity.visitor_id),
            coupon_source=self._held_coupons if consent.personalization else None,
        )
        return apply_overrides(ctx, overrides or {})

    def _held_coupons(self, ctx: VisitorContext) -> dict[str, str]:
        """Read for identified customers only (the shop's backend issues to customers): an
        anonymous visitor's page call never pays for the query."""
        from server.store.sql import imported_visitor_id

        if not ctx.profile.customer_id:
            return {}
        return self.store.held_coupons(ctx.shop, [ctx.visitor_id, imported_visitor_id(ctx.profile.customer_id)])

    def record_exposures(self, ctx: VisitorContext, exposures: "Sequence[tuple[Assignment, str]]") -> int:
        """Store the visitor's first exposure to each experiment this page view showed them
        (counted assignments only), once: this worker remembers the recent ones, and the event
        id made from the visitor's makes any other a duplicate. Returns how many were queued."""
        now = utcnow()
        fresh = []
        for assignment, slot in exposures:
            key = (ctx.shop, assignment.experiment.id, ctx.visitor_id)
            if assignment.counted and self._exposed.add(key):
                fresh.append(exposure_event(assignment, ctx.shop, ctx.visitor_id, now, slot))
        if fresh:
            self.page_views.add_events(ctx.shop, ctx.visitor_id, now, tuple(fresh))
        return len(fresh)


    def _hidden(self, shop: str, page: PageContext, sensitive: Sequence[str]) -> Callable[[Sequence[str]], set[str]] | None:
        """Which items' views this page must not use: those in a sensitive category, unless the
        page itself is in that category (its own page, or one of its items)."""
        if self.catalog is None:
            return None
        catalog = self.catalog.shop(shop)
        own = [page.category] + [c for c, _ in catalog.facts([page.item_id]).values()] if page.item_id else [page.category]
        closed = [s for s in sensitive if not any(in_category(c, s) for c in own if c)]
        if not closed:
            return None
        return lambda item_ids: {
            i for i, (category, _) in catalog.facts(item_ids).items() if any(in_category(category, s) for s in closed)
        }


def in_category(category: str, parent: str) -> bool:
    """`category` is `parent` or one of its subcategories ("Health > Diet" is in "Health")."""
    category, parent = category.casefold(), parent.casefold()
    return category == parent or category.startswith(parent + " > ")


def _without_hidden(events: list, hidden: Callable[[Sequence[str]], set[str]]) -> list:
    """The events without the hidden items; an event left with no item goes altogether."""
    gone = hidden(list({i for e in events for i in e.item_ids()}))
    if not gone:
        return events
    kept = []
    for event in events:
        items = event.item_ids()
        if not any(i in gone for i in items):
            kept.append(event)
        elif any(i not in gone for i in items):
            kept.append(event._replace(items=tuple(i for i in items if i not in gone)))
    return kept


def apply_overrides(ctx: VisitorContext, overrides: Mapping[str, str]) -> VisitorContext:
    """Let QA see a fragment as another kind of visitor, without touching stored data."""
    changes: dict[str, Any] = {}
    profile = ctx.profile
    kind = overrides.get("visitor")
    if kind == "new":
        profile = dataclasses.replace(profile, visits=1, orders=0)
    elif kind == "returning":
        profile = dataclasses.replace(profile, visits=max(2, profile.visits), orders=0)
    elif kind == "customer":
        profile = dataclasses.replace(profile, visits=max(2, profile.visits), orders=max(1, profile.orders))
    if profile is not ctx.profile:
        changes["profile"] = profile
    if overrides.get("country"):
        code = overrides["country"].upper()[:2]
        # Named as the GeoIP database names countries ("Ireland", "United Kingdom").
        changes["geo"] = Geo(country=code, country_name=geo_name(code))
    if overrides.get("device"):
        changes["device"] = dataclasses.replace(ctx.device, device_class=overrides["device"])
    if overrides.get("source"):
        changes["source"] = TrafficSource(medium=overrides["source"], source="", campaign="", utm={})
    if overrides.get("audience"):
        from server.audiences import with_forced

        changes["audience_source"] = with_forced(ctx.audience_source, overrides["audience"])
    if overrides.get("holdout"):
        changes["holdout"] = overrides["holdout"].lower() in ("1", "true", "yes")
    if overrides.get("variant"):
        pairs = (part.split(":", 1) for part in overrides["variant"].split(",") if ":" in part)
        changes["forced_variants"] = tuple((e.strip()[:64], v.strip()[:64]) for e, v in pairs)
    return dataclasses.replace(ctx, **changes) if changes else ctx


def non_personal(ctx: VisitorContext) -> VisitorContext:
    """The context a hold-out visitor (or an experiment's default variant) is rendered with:
    this request's device, location, source and page, and nothing of the visitor (no
    history, no model vector, no audience, a first visit). The customer's group stays: its
    prices and the items it may not buy are terms of trade, not personalization (docs/b2b.md)."""
    now = ctx.profile.last_seen
    return dataclasses.replace(
        ctx, visitor_id="", is_new_token=True, memo=None, audience_source=None, forced_variants=(),
        profile=VisitorProfile(visitor_id="", first_seen=now, last_seen=now, new_visit=True,
                               customer_group=ctx.profile.customer_group),
    )


class RecentKeys:
    """The last `size` keys seen, for a cheap "seen before?" (a bounded set, oldest out first)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._keys: OrderedDict[tuple, None] = OrderedDict()
        self._lock = threading.Lock()

    def add(self, key: tuple) -> bool:
        """True when `key` was not among the recent keys (it is now)."""
        with self._lock:
            if key in self._keys:
                self._keys.move_to_end(key)
                return False
            self._keys[key] = None
            if len(self._keys) > self.size:
                self._keys.popitem(last=False)
            return True


def _path_of(url: str) -> str:
    """The path of a page URL: the query string may carry personal data, so it is not kept."""
    try:
        return urlsplit(url).path[:512]
    except ValueError:
        return ""
