"""Plain records shared by the importers, the store and the widgets."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from server.visitors.state import VisitorState

INTERACTION_KINDS = ("view", "cart", "purchase", "rating")
# Measurement of a visitor who allowed analytics but no profile is kept under this one id,
# shared by all of them: counted, never linked to anyone (server/consent/). It has no
# visitors row: nothing is known about it to keep there. Real ids are 22 URL-safe characters.
ANONYMOUS_VISITOR = ":anonymous"


def utcnow() -> datetime:
    """Now in UTC, naive: the store keeps every time as naive UTC."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


def to_naive_utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is None else moment.astimezone(timezone.utc).replace(tzinfo=None)


@dataclass(frozen=True)
class CatalogItem:
    item_id: str
    title: str
    description: str = ""
    category: str = ""  # a path, levels separated by " > " (Google's product_type style)
    brand: str = ""
    price: float | None = None
    currency: str = ""
    url: str = ""
    image_url: str = ""
    tags: tuple[str, ...] = field(default_factory=tuple)
    in_stock: bool = True


@dataclass(frozen=True)
class Interaction:
    user_id: str
    item_id: str
    event: str  # one of INTERACTION_KINDS
    timestamp: datetime  # timezone-aware, UTC
    value: float | None = None
    country: str = ""


@dataclass(frozen=True)
class Customer:
    """One of the shop's customers as imported (`vitrine import customers`)."""

    customer_id: str
    email: str = ""  # lower-case; "" when only its hash was imported
    email_sha256: str = ""  # hex SHA-256 of the lower-case e-mail
    first_name: str = ""
    signed_up_at: datetime | None = None  # naive UTC
    birthday: date | None = None
    group: str = ""
    marketing_consent: bool = False  # may be sent marketing (exports and webhooks need it)


@dataclass(frozen=True)
class Order:
    """One of the shop's orders as imported (`vitrine import orders`)."""

    order_id: str
    customer_id: str
    timestamp: datetime  # timezone-aware, UTC
    value: float | None = None
    currency: str = ""
    lines: tuple[tuple[str, float], ...] = ()  # (item id, quantity)


@dataclass(frozen=True)
class Event:
    """One thing a visitor did, as stored (GA4 ecommerce names where one exists)."""

    event_id: str
    type: str
    ts: datetime  # naive UTC
    item_id: str | None = None
    value: float | None = None
    currency: str | None = None
    order_id: str | None = None
    campaign: str | None = None
    props: dict | None = None

    def item_ids(self) -> list[str]:
        """The items the event is about: its line items, or its one item."""
        lines = (self.props or {}).get("items") or []
        ids = [str(line["item_id"]) for line in lines if line.get("item_id")]
        return ids or ([self.item_id] if self.item_id else [])


@dataclass(frozen=True)
class VisitorProfile:
    visitor_id: str
    first_seen: datetime
    last_seen: datetime
    visits: int = 1
    page_views: int = 0
    orders: int = 0
    revenue: float = 0.0
    last_order_at: datetime | None = None
    country: str = ""
    device_class: str = ""
    source: str = ""  # traffic medium the current visit started with
    new_visit: bool = False  # this request started a visit
    # The current (latest) visit: its page views, where it came from and where it landed.
    visit_page_views: int = 0
    previous_seen: datetime | None = None  # the last page view before this visit (None: first visit)
    landing_page: str = ""  # the path of the visit's first page (never a query string)
    referrer_domain: str = ""  # the host the visit came from ("" for direct and internal)
    source_name: str = ""  # the visit's source: utm_source, a known name ("google") or the referrer host
    utm_campaign: str = ""
    gpc: bool = False  # Global Privacy Control on the latest page view: never exported to a third party
    consent: str | None = None  # the latest explicit consent answer (server/consent/rules.py answer_key)
    state: "VisitorState | None" = None  # recent events and closed campaigns (None: nothing yet)
    # The shop's customer this browser identified as (server/customers/): their id ("": anonymous),
    # first name and sign-up, read with the row; `orders`, `revenue` and `last_order_at` are
    # then the customer's imported ones where those are more.
    customer_id: str = ""
    first_name: str = ""
    customer_signed_up_at: datetime | None = None
    birthday: str = ""  # the identified customer's, as imported: "YYYY-MM-DD" ("": none)
    customer_group: str = ""  # the identified customer's group, as imported ("wholesale"; "": none)

    @property
    def is_customer(self) -> bool:
        return self.orders > 0

    @property
    def is_returning(self) -> bool:
        return self.visits > 1


@dataclass(frozen=True)
class Interacted:
    """One visitor-item interaction as training reads it (a purchase's line items are one each)."""

    visitor_id: str
    item_id: str
    type: str  # view_item, add_to_cart, purchase, rating
    ts: datetime
    value: float | None
    basket: str  # what was bought together shares this: the order id, or visitor and time
