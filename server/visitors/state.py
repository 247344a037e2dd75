"""The visitor state: the compact per-visitor record every widget reads, kept up to date as
events are written, so that a request reads one row instead of the visitor's events.

It holds the visitor's recent meaningful events (items viewed, put in the cart, bought,
searches), newest first and at most `HISTORY_EVENTS`, the campaigns they closed, what is in
their cart now (each line with its quantity, price and when it was added: a purchase empties
what was added before it) and when they first signed up or logged in. It is
stored as JSON beside the visitor's counters (`visitors.state`) and changed in the same
transaction as the events it comes from. What widgets derive from it (recently viewed,
category affinity, recent searches, purchases) they derive from `events()`, so the rules
stay where they were; only the reading of raw events is gone from the request path.
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Iterable, NamedTuple, Sequence

import orjson

from server.models import Event

HISTORY_EVENTS = 200  # recent events kept per visitor
MAX_ITEMS = 100  # line items kept per event (a batch's event has at most 100)
MAX_CLOSED = 200  # campaigns remembered as closed
# Event types the state keeps: what recommendations, navigation and search read. Impressions,
# clicks on promotions and checkouts are measured elsewhere and would crowd out the history.
KEPT = frozenset({"page_view", "view_item", "select_item", "add_to_cart", "remove_from_cart", "purchase", "search"})
# What makes the visitor known (a `prospect` before their first order): kept as a time, not as events.
SIGN_UP_TYPES = frozenset({"sign_up", "login"})
CART_TYPES = frozenset({"add_to_cart", "remove_from_cart", "purchase"})
# Every event type the state is made from (a rebuild reads these).
READ_TYPES = KEPT | SIGN_UP_TYPES | {"close_promotion"}
MAX_CART_LINES = 100
EPOCH = datetime(1970, 1, 1)
VERSION = 1


CartLine = tuple[str, float, "float | None", float]  # item id, quantity, unit price (None: unknown), added (epoch s)


@dataclass(frozen=True)
class VisitorState:
    """Recent events as compact tuples (type, seconds since the epoch, item ids, search term),
    the closed campaigns, the cart's lines and the first sign-up or login (epoch seconds)."""

    recent: tuple[tuple[str, float, tuple[str, ...], str], ...] = ()
    closed: frozenset[str] = frozenset()
    cart: tuple[CartLine, ...] = ()
    signed_up: float | None = None
    birthday: str | None = None  # as given in a sign-up ("YYYY-MM-DD" or "--MM-DD"), the latest
    _events: tuple["RecentEvent", ...] | None = field(default=None, compare=False, repr=False)
    _digest: int | None = field(default=None, compare=False, repr=False)

    def digest(self) -> int:
        """A hash of the recent events, worked out once per state (what VisitorMemo keys by)."""
        if self._digest is None:
            object.__setattr__(self, "_digest", hash(self.recent))
        return self._digest  # type: ignore[return-value]

    def events(self) -> list["RecentEvent"]:
        """The recent events, newest first, as Event records (made once per state, which
        StateCache shares between requests: each caller gets its own list of them)."""
        if self._events is None:
            # Every request with a history makes up to 200 of them: tuples made directly.
            make, at = tuple.__new__, _from_seconds
            made = tuple(make(RecentEvent, (t, at(seconds), items, term)) for t, seconds, items, term in self.recent)
            object.__setattr__(self, "_events", made)
        return list(self._events)

    def add(self, events: Iterable[Event]) -> "VisitorState":
        """The state after these events (in any order; kept newest first, at most HISTORY_EVENTS)."""
        events = list(events)
        new = [_entry(e) for e in events if _kept(e)]
        closed = set(self.closed) | {e.campaign for e in events if e.type == "close_promotion" and e.campaign}
        cart = _cart_after(self.cart, [e for e in events if e.type in CART_TYPES])
        signed_up = min([_seconds(e.ts) for e in events if e.type in SIGN_UP_TYPES] + (
            [self.signed_up] if self.signed_up is not None else []), default=None)
        given = [e for e in events if e.type in SIGN_UP_TYPES and isinstance((e.props or {}).get("birthday"), str)]
        birthday = max(given, key=lambda e: e.ts).props["birthday"][:10] if given else self.birthday
        if (not new and len(closed) == len(self.closed) and cart == self.cart and signed_up == self.signed_up
                and birthday == self.birthday):
            return self
        # A stable sort: among equal times the newer write stays first, as the events query ordered by id.
        new = sorted(reversed(new), key=lambda entry: -entry[1])
        if not new or not self.recent or new[-1][1] >= self.recent[0][1]:
            recent = [*new, *self.recent][:HISTORY_EVENTS]  # the usual case: all of them newer
        else:
            recent = sorted([*new, *self.recent], key=lambda entry: -entry[1])[:HISTORY_EVENTS]
        return VisitorState(tuple(recent), frozenset(sorted(closed)[:MAX_CLOSED]), cart, signed_up, birthday)

    @property
    def cart_at(self) -> datetime | None:
        """When the newest line still in the cart was added; None for an empty cart."""
        return _from_seconds(max(line[3] for line in self.cart)) if self.cart else None

    @property
    def signed_up_at(self) -> datetime | None:
        return _from_seconds(self.signed_up) if self.signed_up is not None else None

    # -- storage ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        # The tuples as they are: JSON writes them as arrays (and from_json reads them back).
        data: dict[str, Any] = {"v": VERSION, "recent": self.recent, "closed": sorted(self.closed)}
        if self.cart:
            data["cart"] = self.cart
        if self.signed_up is not None:
            data["signed_up"] = self.signed_up
        if self.birthday is not None:
            data["birthday"] = self.birthday
        return data

    @classmethod
    def from_json(cls, data: Any) -> "VisitorState":
        """The stored state; anything unreadable is an empty state (it refills as events come)."""
        if not isinstance(data, dict) or data.get("v") != VERSION:
            return EMPTY
        try:
            # Only this module writes the state: its shape is checked, its strings are not
            # converted one by one (that was most of a page call's reading of the visitor).
            recent = tuple((t, float(ts), tuple(items), term or "") for t, ts, items, term in data.get("recent", ()))
            closed = frozenset(data.get("closed", ()))
            if not all(type(e[0]) is str and type(e[3]) is str for e in recent):
                return EMPTY
            cart = tuple((str(i), float(q), None if p is None else float(p), float(at)) for i, q, p, at in data.get("cart", ()))
            signed_up = data.get("signed_up")
            signed_up = None if signed_up is None else float(signed_up)
            birthday = data.get("birthday")
            birthday = birthday if type(birthday) is str else None
        except (TypeError, ValueError):
            return EMPTY
        return cls(recent, closed, cart, signed_up, birthday)

    @classmethod
    def from_text(cls, text: str | None) -> "VisitorState":
        """The state from its stored JSON text (None: a row without one)."""
        if not text:
            return EMPTY
        try:
            return cls.from_json(orjson.loads(text))
        except orjson.JSONDecodeError:
            return EMPTY

    def to_text(self) -> str:
        return orjson.dumps(self.to_json()).decode()

    @classmethod
    def from_events(cls, newest_first: Sequence[Event]) -> "VisitorState":
        """A state rebuilt from stored events (migrations and imports, never a request)."""
        return EMPTY.add(reversed(list(newest_first)))


EMPTY = VisitorState()


class StateCache:
    """Visitor states as read from their stored JSON text, kept by visitor and reused while
    the stored text is exactly the same: the page call, the page-view writer and the event
    writer each read a visitor's row and would otherwise parse its 10 kB of JSON (and make
    200 tuples) every time. Exact, across workers: any write by anyone changes the text,
    and a different text is parsed anew. The last `max_visitors` visitors are kept."""

    def __init__(self, max_visitors: int = 2048) -> None:
        self.max_visitors = max_visitors
        self._lock = threading.Lock()
        self._states: OrderedDict[tuple[str, str], tuple[str, VisitorState]] = OrderedDict()

    def read(self, key: tuple[str, str], text: str | None) -> VisitorState:
        if not text:
            return EMPTY
        with self._lock:
            held = self._states.get(key)
            if held is not None and held[0] == text:
                self._states.move_to_end(key)
                return held[1]
        state = VisitorState.from_text(text)
        self.remember(key, text, state)
        return state

    def remember(self, key: tuple[str, str], text: str, state: VisitorState) -> None:
        """What was just written (or read): the next read of that text is this state."""
        with self._lock:
            self._states[key] = (text, state)
            self._states.move_to_end(key)
            while len(self._states) > self.max_visitors:
                self._states.popitem(last=False)

    def __len__(self) -> int:
        return len(self._states)

# Naive UTC from epoch seconds: the C constructor takes a third of the time of
# `EPOCH + timedelta(seconds=...)`; Python 3.12 deprecates it, so there the sum it is.
if sys.version_info < (3, 12):
    _from_seconds = datetime.utcfromtimestamp
else:  # pragma: no cover - the project's CI runs 3.11
    def _from_seconds(seconds: float) -> datetime:
        return EPOCH + timedelta(seconds=seconds)


def changes_state(event: Event) -> bool:
    """Whether adding this event to a state changes it (a page view without an item does not:
    the page-view writer then leaves the stored state as it is)."""
    return event.type == "close_promotion" or event.type in SIGN_UP_TYPES or _kept(event)


def state_columns(state: VisitorState | None) -> dict[str, datetime | None]:
    """What the visitors row keeps beside the state, copied from it so that audience sizes are
    counted in SQL without reading the state: `cart_at` and `signed_up_at`. Every writer of
    a state that events changed writes them with it (page views change neither)."""
    if state is None:
        return {"cart_at": None, "signed_up_at": None}
    return {"cart_at": state.cart_at, "signed_up_at": state.signed_up_at}


def _seconds(ts: datetime) -> float:
    return round((ts - EPOCH).total_seconds(), 3)


def _cart_after(cart: tuple[CartLine, ...], events: list[Event]) -> tuple[CartLine, ...]:
    """The cart's lines after these events, applied in time order: an add adds its quantity
    (the line keeps the newest add's time and a known price), a removal takes its quantity off
    a line added before it, and a purchase empties every line added before it."""
    if not events:
        return cart
    lines: dict[str, list] = {line[0]: list(line) for line in cart}
    for event in sorted(events, key=lambda e: e.ts):
        at = _seconds(event.ts)
        if event.type == "purchase":
            lines = {item: line for item, line in lines.items() if line[3] > at}
            continue
        for item, quantity, price in _lines(event):
            line = lines.get(item)
            if event.type == "add_to_cart":
                if line is None:
                    if len(lines) >= MAX_CART_LINES:
                        continue
                    line = lines[item] = [item, 0.0, None, at]
                line[1] += quantity
                line[2] = price if price is not None else line[2]
                line[3] = max(line[3], at)
            elif line is not None and line[3] <= at:
                line[1] -= quantity
                if line[1] <= 0:
                    del lines[item]
    return tuple((i, q, p, at) for i, q, p, at in sorted(lines.values(), key=lambda line: (line[3], line[0])))


def _lines(event: Event) -> list[tuple[str, float, float | None]]:
    """An add or removal's (item, quantity, unit price): its line items, or its one item (with
    its value as the price when it has no line items)."""
    lines = (event.props or {}).get("items") or []
    found = []
    for line in lines[:MAX_ITEMS]:
        if line.get("item_id"):
            price = line.get("price")
            found.append((str(line["item_id"]), float(line.get("quantity") or 1), None if price is None else float(price)))
    if not found and event.item_id:
        found.append((event.item_id, 1.0, event.value))
    return found


def _kept(event: Event) -> bool:
    if event.type not in KEPT:
        return False
    if event.type == "search":
        return bool((event.props or {}).get("search_term"))
    return bool(event.item_ids())


def _entry(event: Event) -> tuple[str, float, tuple[str, ...], str]:
    term = str((event.props or {}).get("search_term", ""))[:200] if event.type == "search" else ""
    return (event.type, _seconds(event.ts), tuple(event.item_ids()[:MAX_ITEMS]), term)


class RecentEvent(NamedTuple):
    """One event of the state, read like an Event (type, ts, item_id, item_ids(), props)
    by the code that ranks with it; a tuple, since every request makes up to 200 of them."""

    type: str
    ts: datetime
    items: tuple[str, ...]
    term: str

    @property
    def item_id(self) -> str | None:
        return self.items[0] if len(self.items) == 1 else None

    @property
    def props(self) -> dict[str, Any] | None:
        return {"search_term": self.term} if self.term else None

    def item_ids(self) -> list[str]:
        return list(self.items)
