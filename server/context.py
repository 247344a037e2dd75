"""VisitorContext: everything known about the visitor for one request, built once per request.

Identity comes from the signed token; device from the User-Agent; location from the client
IP (looked up, then dropped: it is never stored or kept in the context); traffic source from
the page URL and referrer; history from the store.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, TypeVar
from urllib.parse import urlsplit

from starlette.requests import Request

from server.client_ip import client_ip, is_trusted_peer, parse_networks
from server.device import Device, parse_device
from server.geo import Geo, GeoLocator
from server.identity import Identity
from server.models import Event, VisitorProfile, utcnow
from server.store import Store
from server.traffic import TrafficSource, classify_source
from server.visitors.page_views import PageView, PageViewWriter

T = TypeVar("T")


@dataclass(frozen=True)
class PageContext:
    url: str = ""
    referrer: str = ""
    type: str = ""  # home, category, product, cart, search, checkout, other
    item_id: str = ""
    category: str = ""
    title: str = ""


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
    # What widgets derive from the visitor (their history's viewed items, affinity, model
    # vector), worked out once per request and shared by every slot. Not copied by
    # dataclasses.replace: a context with QA's overrides derives anew.
    _derived: dict[str, Any] = field(default_factory=dict, init=False, compare=False, repr=False)

    def derive(self, key: str, compute: Callable[[], T]) -> T:
        """`compute()` the first time a request asks for `key`, the same value after."""
        try:
            return self._derived[key]
        except KeyError:
            value = self._derived[key] = compute()
            return value

    @property
    def history(self) -> list[Event]:
        """The visitor's recent events, newest first, from the visitor state (read with the
        profile: no query of its own); none for a visitor without a valid token."""
        if self.is_new_token or self.profile.state is None:
            return []
        return self.profile.state.events()

    @property
    def closed_campaigns(self) -> frozenset[str]:
        if self.is_new_token or self.profile.state is None:
            return frozenset()
        return self.profile.state.closed

    @property
    def visitor_kind(self) -> str:
        """new (first visit), returning (came back, never bought) or customer (has ordered)."""
        if self.profile.orders > 0:
            return "customer"
        return "returning" if self.profile.visits > 1 else "new"

    def as_dict(self) -> dict[str, Any]:
        """The context as plain data: what templates get as `visitor`, and what `?_context=1`
        shows (made once per request: every slot's template gets it)."""
        return self.derive("as_dict", self._as_dict)

    def _as_dict(self) -> dict[str, Any]:
        return {
            "shop": self.shop,
            "kind": self.visitor_kind,
            "is_new_token": self.is_new_token,
            "visits": self.profile.visits,
            "page_views": self.profile.page_views,
            "orders": self.profile.orders,
            "is_customer": self.profile.is_customer,
            "first_seen": self.profile.first_seen.isoformat(timespec="seconds"),
            "device": dataclasses.asdict(self.device),
            "geo": dataclasses.asdict(self.geo),
            "source": {
                "medium": self.source.medium,
                "source": self.source.source,
                "campaign": self.source.campaign,
                "utm": dict(self.source.utm),
            },
            "page": dataclasses.asdict(self.page),
        }


# What QA may pretend to be on a fragment URL: ?visitor=new&country=GB&device=mobile&source=paid
OVERRIDES = ("visitor", "country", "device", "source")


class ContextBuilder:
    def __init__(
        self, store: Store, geo: GeoLocator, trusted_proxies: tuple[str, ...], visit_timeout_s: int,
        page_views: PageViewWriter,
    ) -> None:
        self.store = store
        self.page_views = page_views
        self.geo = geo
        self.trusted = parse_networks(trusted_proxies)
        self.visit_timeout_s = visit_timeout_s

    def is_https(self, request: Request) -> bool:
        if request.url.scheme == "https":
            return True
        peer = request.client.host if request.client else None
        return is_trusted_peer(peer, self.trusted) and request.headers.get("x-forwarded-proto", "").lower() == "https"

    def locate(self, request: Request) -> Geo:
        peer = request.client.host if request.client else None
        return self.geo.lookup(client_ip(peer, request.headers.get("x-forwarded-for"), self.trusted))

    def build(
        self,
        request: Request,
        shop: str,
        identity: Identity,
        page: PageContext,
        *,
        page_view_id: str | None = None,
        overrides: Mapping[str, str] | None = None,
    ) -> VisitorContext:
        """The visitor's context; with a `page_view_id` this request is a page view and is recorded."""
        device = parse_device(request.headers.get("user-agent"))
        geo = self.locate(request)
        source = classify_source(page.url or None, page.referrer or None)
        now = utcnow()
        if page_view_id:
            view = Event(
                event_id=f"pv:{page_view_id}", type="page_view", ts=now, item_id=page.item_id or None,
                props={"page_type": page.type, "path": _path_of(page.url), "medium": source.medium},
            )
            profile = self.page_views.record(PageView(
                shop, identity.visitor_id, now, self.visit_timeout_s,
                country=geo.country, device_class=device.device_class, source=source.medium, event=view,
            ), known=not identity.is_new)
        else:
            profile = self.store.get_visitor(shop, identity.visitor_id) or VisitorProfile(
                visitor_id=identity.visitor_id, first_seen=now, last_seen=now, new_visit=True
            )
        if source.medium == "internal" and profile.source:
            # Browsing inside the shop: the visit keeps the source it arrived from.
            source = TrafficSource(medium=profile.source, source="", campaign="", utm={})
        ctx = VisitorContext(
            shop=shop, visitor_id=identity.visitor_id, is_new_token=identity.is_new,
            profile=profile, device=device, geo=geo, source=source, page=page,
        )
        return apply_overrides(ctx, overrides or {})


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
        changes["geo"] = Geo(country=code, country_name=code)
    if overrides.get("device"):
        changes["device"] = dataclasses.replace(ctx.device, device_class=overrides["device"])
    if overrides.get("source"):
        changes["source"] = TrafficSource(medium=overrides["source"], source="", campaign="", utm={})
    return dataclasses.replace(ctx, **changes) if changes else ctx


def _path_of(url: str) -> str:
    """The path of a page URL: the query string may carry personal data, so it is not kept."""
    try:
        return urlsplit(url).path[:512]
    except ValueError:
        return ""
