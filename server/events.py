"""Event ingestion: the shape of an event batch, its validation, and conversion to stored events.

Names follow GA4's ecommerce vocabulary where one exists (page_view, view_item,
add_to_cart, purchase, search, view_promotion, select_promotion, sign_up, login ...);
`close_promotion` (a visitor closed a popup or banner) has no GA4 twin. A `sign_up` or
`login` makes the visitor known (a `prospect` until they order, server/audiences/).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from server.consent.rules import ConsentIn
from server.models import Event, utcnow

EventType = Literal[
    "page_view", "view_item", "view_item_list", "select_item", "add_to_cart", "remove_from_cart",
    "begin_checkout", "purchase", "search", "view_promotion", "select_promotion", "close_promotion",
    "sign_up", "login",
]
Id = Annotated[str, Field(min_length=1, max_length=128)]
# The window an event's `ts` must fall in, around the server's clock when the batch arrives:
# the embed script sends within seconds, a queued beacon within hours; a client clock may
# run a day ahead. Anything outside is refused (422 naming the field), never guessed.
MAX_EVENT_AGE = timedelta(days=7)
MAX_CLOCK_SKEW = timedelta(hours=24)
MAX_RESULTS = 1_000_000  # a search event's `results`


class LineItem(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    item_id: Id
    quantity: float = Field(default=1, gt=0, le=100000)
    price: float | None = Field(default=None, ge=0, le=1e9)


class EventIn(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)

    event_id: str = Field(min_length=8, max_length=64, pattern=r"^[A-Za-z0-9_.:-]+$")
    type: EventType
    ts: float | datetime | None = Field(default=None, description="Unix milliseconds or ISO 8601")
    item_id: Id | None = None
    items: list[LineItem] = Field(default_factory=list, max_length=100)
    value: float | None = Field(default=None, ge=0, le=1e9)
    currency: str | None = Field(default=None, pattern=r"^[A-Za-z]{3}$")
    transaction_id: Id | None = None
    promotion_id: Id | None = None
    creative_slot: str | None = Field(default=None, max_length=128)
    item_list_id: str | None = Field(default=None, max_length=128)
    item_list_name: str | None = Field(default=None, max_length=128)
    search_term: str | None = Field(default=None, max_length=200)
    # How many results the shop's own search found (a search event's): counted per term for
    # the dashboard's searches that find nothing (server/search_counts.py). A JSON integer.
    results: int | None = None
    page_view_id: str | None = Field(default=None, max_length=64)
    # The experiment and variant of the fragment it happened in (the page call names them).
    experiment: Id | None = None
    variant: Id | None = None

    @field_validator("results", mode="before")
    @classmethod
    def _whole_count(cls, results: object) -> object:
        """A JSON integer, not a string, a fraction or a boolean that could be read as one."""
        if results is None:
            return None
        if isinstance(results, bool) or not isinstance(results, int) or not 0 <= results <= MAX_RESULTS:
            raise ValueError(f"must be how many results the search found, a whole number from 0 to {MAX_RESULTS}")
        return results

    @field_validator("ts")
    @classmethod
    def _within_window(cls, ts: float | datetime | None, info: ValidationInfo) -> float | datetime | None:
        """Naive UTC, within the window around the server's clock; history written by the
        shop's own tools (validation context `{"history": True}`) may be of any time."""
        if ts is None:
            return None
        context = info.context or {}
        history = bool(context.get("history"))
        now = context.get("now") or utcnow()  # parse_batch reads the clock once for the batch
        try:
            if isinstance(ts, datetime):
                moment = ts if ts.tzinfo is None else ts.astimezone(timezone.utc).replace(tzinfo=None)
            else:
                moment = datetime.fromtimestamp(ts / 1000, tz=timezone.utc).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            moment = None
        if moment is not None and history:
            return moment
        if moment is None or not now - MAX_EVENT_AGE <= moment <= now + MAX_CLOCK_SKEW:
            raise ValueError(
                f"must be within {MAX_EVENT_AGE.days} days before and {MAX_CLOCK_SKEW // timedelta(hours=1)} hours "
                "after the server's clock (Unix milliseconds or ISO 8601)"
            )
        return moment

    @model_validator(mode="after")
    def _required_per_type(self) -> "EventIn":
        for need in _NEEDS.get(self.type, ()):
            if need == "item" and not (self.item_id or self.items):
                raise ValueError(f"{self.type} needs item_id or items")
            if need != "item" and getattr(self, need) in (None, ""):
                raise ValueError(f"{self.type} needs {need}")
        return self

    def to_event(self, received: datetime) -> Event:
        props: dict = {}
        if self.items:
            props["items"] = [i.model_dump(exclude_none=True) for i in self.items]
        for name in ("creative_slot", "search_term", "page_view_id", "item_list_id", "item_list_name", "experiment", "variant"):
            if getattr(self, name):
                props[name] = getattr(self, name)
        if self.type == "search" and self.results is not None:
            props["results"] = self.results
        return Event(
            event_id=self.event_id,
            type=self.type,
            ts=_event_time(self.ts, received),
            item_id=self.item_id or (self.items[0].item_id if len(self.items) == 1 else None),
            value=self.value,
            currency=self.currency.upper() if self.currency else None,
            order_id=self.transaction_id,
            campaign=self.promotion_id or self.item_list_id,
            props=props or None,
        )


# What an event of each type must have ("item": item_id or items).
_NEEDS: dict[str, tuple[str, ...]] = {
    "view_item": ("item",), "add_to_cart": ("item",), "remove_from_cart": ("item",),
    "select_item": ("item",), "view_item_list": ("item",), "purchase": ("transaction_id", "value"),
    "search": ("search_term",), "view_promotion": ("promotion_id",),
    "select_promotion": ("promotion_id",), "close_promotion": ("promotion_id",),
}


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    shop: str = Field(min_length=1, max_length=64)
    token: str | None = Field(default=None, max_length=512)
    events: list[EventIn] = Field(min_length=1)
    consent: ConsentIn | None = None  # what the visitor allowed (server/consent/); absent: unknown
    gpc: bool | None = None  # navigator.globalPrivacyControl


class BatchError(ValueError):
    """A batch that cannot be accepted; the message says what to fix."""


def parse_batch(raw: bytes, max_events: int) -> EventBatch:
    try:
        batch = EventBatch.model_validate_json(raw, context={"now": utcnow()})
    except ValidationError as exc:
        raise BatchError(describe_validation_error(exc)) from None
    if len(batch.events) > max_events:
        raise BatchError(f"too many events in one batch: {len(batch.events)} (at most {max_events})")
    return batch


def describe_validation_error(exc: ValidationError, limit: int = 5) -> str:
    """One readable line per problem, e.g. `events.2.type: Input should be 'page_view', ...`."""
    problems = []
    for err in exc.errors()[:limit]:
        where = ".".join(str(p) for p in err["loc"]) or "body"
        message = err["msg"].removeprefix("Value error, ")
        problems.append(f"{where}: {message}" if err["type"] != "json_invalid" else f"invalid JSON: {err['ctx'].get('error', message)}")
    more = len(exc.errors()) - limit
    return "; ".join(problems) + (f" (and {more} more)" if more > 0 else "")


def to_events(batch: EventBatch) -> list[Event]:
    received = utcnow()
    return [e.to_event(received) for e in batch.events]


def _event_time(ts: float | datetime | None, received: datetime) -> datetime:
    """The event's time: its own (checked to be in the window, naive UTC), or the arrival's."""
    return ts if isinstance(ts, datetime) else received
