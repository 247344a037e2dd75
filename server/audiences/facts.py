"""The visitor facts audience rules test: each one's kind, how it reads in plain words, how it
is worked out for a request (VisitorFacts), and whether audience sizes can count it from
stored rows.

A request's facts come from its VisitorContext (the profile and state read with it, the
device, location, language and traffic source of the request) and from what the worker holds
in memory (the catalog, for categories and prices); none needs a store read. Each is worked out
the first time a rule asks for it, once per request.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from server.traffic import referrer_host

if TYPE_CHECKING:
    from server.affinity import Affinity
    from server.catalog.memory import ShopCatalog
    from server.context import VisitorContext

NUMBER, FLAG, CHOICE, SET, PER_CATEGORY = "number", "flag", "choice", "set", "per category"
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
DEVICES = ("mobile", "tablet", "desktop", "bot", "other")
MEDIUMS = ("direct", "organic", "paid", "social", "email", "referral")
VIEWS = ("view_item", "page_view")  # what counts as viewing an item
REQUEST_ONLY = "known only during a request, not stored"


@dataclass(frozen=True)
class Fact:
    name: str
    kind: str
    help: str
    describe: Callable[[Any], str]  # the value in plain words: "3 orders", "last order 20 days ago"
    unit: str = ""  # of a number, in constraints: "days" ("at least 300 days")
    choices: tuple[str, ...] = ()  # the only values a rule may name (empty: any)
    not_sized: str = ""  # why audience sizes cannot count it; "" when they can
    percent: bool = False  # a share (0..1), written in rules as a number and shown as a percentage


def _count(one: str, many: str, none: str | None = None) -> Callable[[Any], str]:
    def describe(n: Any) -> str:
        if n == 0 and none is not None:
            return none
        return f"{_number(n)} {one if n == 1 else many}"
    return describe


def _ago(what: str, unit: str, none: str) -> Callable[[Any], str]:
    return lambda n: none if n is None else f"{what} {_number(n)} {unit[:-1] if n == 1 else unit} ago"


def _is(label: str, none: str = "unknown") -> Callable[[Any], str]:
    return lambda value: f"{label} {value if value not in (None, '') else none}"


def _listed(label: str, none: str) -> Callable[[Any], str]:
    def describe(values: Any) -> str:
        shown = [f'"{v}"' if label == "searched" else str(v) for v in list(values)[:5]]
        more = len(values) - len(shown)
        return f"{label} {', '.join(shown)}" + (f" and {more} more" if more > 0 else "") if shown else none
    return describe


def _number(n: Any) -> str:
    if isinstance(n, float) and not n.is_integer():
        return f"{n:.2f}"
    return str(int(n)) if isinstance(n, (int, float)) else str(n)


_FACTS = [
    Fact("orders", NUMBER, "orders so far", _count("order", "orders", "no order yet"), unit="orders"),
    Fact("revenue", NUMBER, "the value of every order so far, in the shop's currency", lambda v: f"revenue {v:.2f}"),
    Fact("visits", NUMBER, "visits so far, this one included", lambda n: "first visit" if n == 1 else f"visit {n}",
         unit="visits"),
    Fact("page_views", NUMBER, "page views so far", _count("page view", "page views"), unit="page views"),
    Fact("visit_page_views", NUMBER, "page views in this visit, this one included",
         _count("page view this visit", "page views this visit", "no page view this visit"), unit="page views"),
    Fact("days_since_last_order", NUMBER, "whole days since the last order (none: never ordered)",
         _ago("last order", "days", "no order yet"), unit="days"),
    Fact("days_since_last_visit", NUMBER, "whole days between the visit before this one and now (none: first visit)",
         _ago("previous visit", "days", "no visit before"), unit="days"),
    Fact("days_since_first_visit", NUMBER, "whole days since the first visit",
         _ago("first visit", "days", "first visit today"), unit="days"),
    Fact("signed_up", FLAG, "signed up or logged in at least once (a sign_up or login event)",
         lambda v: "signed up" if v else "never signed up or logged in"),
    Fact("hours_since_sign_up", NUMBER, "whole hours since the first sign-up or login (none: never)",
         _ago("signed up", "hours", "never signed up or logged in"), unit="hours"),
    Fact("first_name", CHOICE, "the identified customer's first name, as imported (\"\": anonymous, or none imported)",
         _is("first name", "unknown"), not_sized="the identified customer's, read with the visitor; not counted"),
    Fact("customer_group", CHOICE, "the identified customer's group, as imported (\"wholesale\"; \"\": anonymous, or "
         "none imported)", _is("customer group", "none"),
         not_sized="the identified customer's, read with the visitor; not counted"),
    Fact("cart_value", NUMBER, "what the cart holds: quantity times price (the price sent with the cart add, "
         "else the catalog's)", lambda v: f"cart value {v:.2f}"),
    Fact("cart_count", NUMBER, "items in the cart (their quantities added up)",
         _count("item in the cart", "items in the cart", "empty cart"), unit="items"),
    Fact("cart_age_minutes", NUMBER, "whole minutes since the newest item still in the cart was added (none: "
         "empty cart)", _ago("cart added to", "minutes", "empty cart"), unit="minutes"),
    Fact("cart_items", SET, "ids of the items in the cart", _listed("cart holds", "empty cart")),
    Fact("cart_categories", SET, "categories of the items in the cart (a category also matches its subcategories)",
         _listed("cart holds items of", "empty cart")),
    Fact("viewed_items", SET, "ids of the items viewed lately (the visitor state's newest 200 events)",
         _listed("viewed", "viewed nothing lately")),
    Fact("viewed_categories", SET, "categories of the items viewed lately (a category also matches its "
         "subcategories)", _listed("viewed items of", "viewed nothing lately")),
    Fact("category_views", PER_CATEGORY, "different items viewed lately in the category (or its subcategories)",
         lambda v: f"{v[1]} {'item' if v[1] == 1 else 'items'} viewed in {v[0]}"),
    Fact("interest", PER_CATEGORY, "the category's share of the visitor's category affinity (views, cart adds "
         "and purchases, halved every affinity_half_life_hours), 0 to 1",
         lambda v: f"{round(v[1] * 100)}% of interest in {v[0]}", percent=True,
         not_sized="worked out per request (it decays with time); category_views is sized"),
    Fact("searches", SET, "the visitor's recent search terms, lower-case", _listed("searched", "no searches")),
    Fact("device", CHOICE, "device class of this request", _is("device"), choices=DEVICES),
    Fact("os", CHOICE, "operating system of this request (\"iOS\", \"Android\", \"Windows\", \"Mac OS X\" ...)",
         _is("OS"), not_sized=REQUEST_ONLY),
    Fact("browser", CHOICE, "browser of this request (\"Chrome\", \"Safari\", \"Firefox\" ...)", _is("browser"),
         not_sized=REQUEST_ONLY),
    Fact("country", CHOICE, "ISO country code, from the IP address", _is("country")),
    Fact("region", CHOICE, "region (state, county), from the IP address", _is("region"), not_sized=REQUEST_ONLY),
    Fact("city", CHOICE, "city, from the IP address (never stored, never shown)", _is("city"),
         not_sized=REQUEST_ONLY),
    Fact("language", CHOICE, "the browser's preferred language (Accept-Language): \"de\" also matches \"de-AT\"",
         _is("language"), not_sized=REQUEST_ONLY),
    Fact("local_hour", NUMBER, "the hour (0-23) in the visitor's time zone, from the IP address",
         lambda h: "local time unknown (no time zone)" if h is None else f"local hour {h}", not_sized=REQUEST_ONLY),
    Fact("weekday", CHOICE, "the day of the week in the visitor's time zone: mon, tue, wed, thu, fri, sat, sun",
         _is("weekday", "unknown (no time zone)"), choices=WEEKDAYS, not_sized=REQUEST_ONLY),
    Fact("medium", CHOICE, "the visit's traffic medium", _is("traffic medium"), choices=MEDIUMS),
    Fact("source", CHOICE, "the visit's traffic source: utm_source, a known name (\"google\", \"facebook\") or the "
         "referrer's host", _is("traffic source", "none")),
    Fact("campaign", CHOICE, "the visit's utm_campaign", _is("UTM campaign", "none")),
    Fact("referrer", CHOICE, "the host the visit came from (\"google.com\" also matches \"www.google.com\" and "
         "\"news.google.com\")", _is("referrer", "none")),
    Fact("landing_page", CHOICE, "the path of the visit's first page (\"/sale/tv\", never a query string)",
         _is("landing page", "none")),
]
FACTS: dict[str, Fact] = {fact.name: fact for fact in _FACTS}


class VisitorFacts:
    """One request's facts, each worked out the first time a rule reads it."""

    def __init__(
        self, ctx: "VisitorContext", catalog: "ShopCatalog | None", affinity: Callable[[], "Affinity"] | None,
        now: datetime, visit_timeout_s: int,
    ) -> None:
        self.ctx = ctx
        self.catalog = catalog
        self._affinity = affinity
        self.now = now
        self.visit_timeout_s = visit_timeout_s
        self._known: dict[str, Any] = {}

    def value(self, name: str) -> Any:
        try:
            return self._known[name]
        except KeyError:
            value = self._known[name] = getattr(self, f"_{name}")()
            return value

    # -- the profile ----------------------------------------------------------------
    def _orders(self) -> int:
        return self.ctx.profile.orders

    def _revenue(self) -> float:
        return float(self.ctx.profile.revenue)

    def _visits(self) -> int:
        return self.ctx.profile.visits

    def _page_views(self) -> int:
        return self.ctx.profile.page_views

    def _visit_page_views(self) -> int:
        profile = self.ctx.profile
        return profile.visit_page_views if self._in_visit() else 0

    def _days_since_last_order(self) -> int | None:
        return _whole(self.now, self.ctx.profile.last_order_at, 86400)

    def _days_since_last_visit(self) -> int | None:
        profile = self.ctx.profile
        before = profile.previous_seen if self._in_visit() else profile.last_seen
        return _whole(self.now, before, 86400)

    def _days_since_first_visit(self) -> int | None:
        return _whole(self.now, self.ctx.profile.first_seen, 86400)

    def _in_visit(self) -> bool:
        """A visit is going on: the latest page view is within the visit timeout."""
        return self.now - self.ctx.profile.last_seen <= timedelta(seconds=self.visit_timeout_s)

    # -- the state: sign-up, cart, history ------------------------------------------
    def _state(self):  # the state this request may use (as VisitorContext.history decides)
        ctx = self.ctx
        if ctx.is_new_token or ctx.profile.state is None or not ctx.consent.personalization:
            return None
        return ctx.profile.state

    def _signed_up(self) -> bool:
        # A browser identified as one of the shop's customers has logged in.
        state = self._state()
        return bool(self.ctx.profile.customer_id) or (state is not None and state.signed_up is not None)

    def _hours_since_sign_up(self) -> int | None:
        state = self._state()
        times = [t for t in (state.signed_up_at if state is not None else None, self.ctx.profile.customer_signed_up_at)
                 if t is not None]
        return _whole(self.now, min(times), 3600) if times else None

    def _first_name(self) -> str:
        return self.ctx.profile.first_name if self.ctx.consent.personalization else ""

    def _customer_group(self) -> str:
        return self.ctx.profile.customer_group if self.ctx.consent.personalization else ""

    def _cart(self) -> tuple:
        state = self._state()
        return state.cart if state is not None else ()

    def _cart_value(self) -> float:
        known = self.catalog.by_id if self.catalog is not None else {}
        total = 0.0
        for item, quantity, price, _ in self._cart():
            if price is None and item in known:
                price = known[item].price
            total += quantity * (price or 0.0)
        return round(total, 2)

    def _cart_count(self) -> float:
        count = sum(line[1] for line in self._cart())
        return int(count) if float(count).is_integer() else count

    def _cart_age_minutes(self) -> int | None:
        state = self._state()
        return _whole(self.now, state.cart_at, 60) if state is not None else None

    def _cart_items(self) -> tuple[str, ...]:
        ids = [line[0] for line in self._cart()]
        hidden = self.ctx.hidden(ids) if self.ctx.hidden is not None and ids else set()
        return tuple(i for i in ids if i not in hidden)

    def _cart_categories(self) -> tuple[str, ...]:
        return self._categories_of(self.value("cart_items"))

    def _viewed_items(self) -> tuple[str, ...]:
        # Depends on the state alone: kept across the visitor's requests while it stays the same.
        return self.ctx.derive("audiences:viewed", lambda: tuple(dict.fromkeys(
            i for e in self.ctx.history if e.type in VIEWS for i in e.item_ids())), lasting=True)

    def _viewed_categories(self) -> tuple[str, ...]:
        return self._categories_of(self.value("viewed_items"))

    def viewed_in(self, category: str) -> int:
        """Different items viewed lately in `category` or its subcategories."""
        from server.context import in_category

        return sum(n for c, n in self.value("viewed_per_category").items() if in_category(c, category))

    def _viewed_per_category(self) -> dict[str, int]:
        known = self.catalog.by_id if self.catalog is not None else {}

        def count() -> dict[str, int]:
            counts: dict[str, int] = {}
            for item in self.value("viewed_items"):
                if item in known and known[item].category:
                    counts[known[item].category] = counts.get(known[item].category, 0) + 1
            return counts

        version = self.catalog.version if self.catalog is not None else 0
        return self.ctx.derive(f"audiences:viewed_per_category:{version}", count, lasting=True)

    def interest_in(self, category: str) -> float:
        """The category's (and its subcategories') share of the visitor's affinity, 0..1."""
        from server.context import in_category

        if self._affinity is None:
            return 0.0
        affinity = self._affinity()
        total = affinity.total
        if not total:
            return 0.0
        return sum(score for c, score in affinity.scores.items() if in_category(c, category)) / total

    def _searches(self) -> tuple[str, ...]:
        terms = (str((e.props or {}).get("search_term", "")).strip().lower() for e in self.ctx.history if e.type == "search")
        return tuple(dict.fromkeys(t for t in terms if t))

    def _categories_of(self, ids: tuple[str, ...]) -> tuple[str, ...]:
        known = self.catalog.by_id if self.catalog is not None else {}
        return tuple(dict.fromkeys(known[i].category for i in ids if i in known and known[i].category))

    # -- the request ----------------------------------------------------------------
    def _device(self) -> str:
        return self.ctx.device.device_class

    def _os(self) -> str:
        return self.ctx.device.os

    def _browser(self) -> str:
        return self.ctx.device.browser

    def _country(self) -> str:
        return self.ctx.geo.country

    def _region(self) -> str:
        return self.ctx.geo.region

    def _city(self) -> str:
        return self.ctx.geo.city

    def _language(self) -> str:
        return self.ctx.languages[0] if self.ctx.languages else ""

    def _local_time(self) -> datetime | None:
        zone = _zone(self.ctx.geo.timezone)
        if zone is None:
            return None
        return (self.now.replace(tzinfo=_UTC)).astimezone(zone)

    def _local_hour(self) -> int | None:
        local = self.value("local_time")
        return local.hour if local is not None else None

    def _weekday(self) -> str:
        local = self.value("local_time")
        return WEEKDAYS[local.weekday()] if local is not None else ""

    def _medium(self) -> str:
        return self.ctx.source.medium

    def _source(self) -> str:
        return self.ctx.source.source

    def _campaign(self) -> str:
        return self.ctx.source.campaign

    def _referrer(self) -> str:
        ctx = self.ctx
        if ctx.profile.referrer_domain:
            return ctx.profile.referrer_domain
        return referrer_host(ctx.page.referrer) if ctx.source.medium != "internal" else ""

    def _landing_page(self) -> str:
        from server.context import _path_of

        return self.ctx.profile.landing_page or _path_of(self.ctx.page.url)


_UTC = ZoneInfo("UTC")


def _zone(name: str) -> ZoneInfo | None:
    if not name:
        return None
    try:
        return ZoneInfo(name)  # cached by zoneinfo itself
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _whole(now: datetime, then: datetime | None, unit_s: int) -> int | None:
    """Whole units (days, hours, minutes) from `then` to `now`; None when there is no `then`."""
    if then is None:
        return None
    return max(0, math.floor((now - then).total_seconds() / unit_s))
