"""The visitor state: the compact per-visitor record every widget reads, kept up to date as
events are written, so that a request reads one row instead of the visitor's events.

It holds the visitor's recent meaningful events (items viewed, put in the cart, bought,
searches), newest first and at most `HISTORY_EVENTS`, and the campaigns they closed. It is
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
EPOCH = datetime(1970, 1, 1)
VERSION = 1


@dataclass(frozen=True)
class VisitorState:
    """Recent events as compact tuples (type, seconds since the epoch, item ids, search term)."""

    recent: tuple[tuple[str, float, tuple[str, ...], str], ...] = ()
    closed: frozenset[str] = frozenset()
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
        if not new and len(closed) == len(self.closed):
            return self
        # A stable sort: among equal times the newer write stays first, as the events query ordered by id.
        new = sorted(reversed(new), key=lambda entry: -entry[1])
        if not new or not self.recent or new[-1][1] >= self.recent[0][1]:
            recent = [*new, *self.recent][:HISTORY_EVENTS]  # the usual case: all of them newer
        else:
            recent = sorted([*new, *self.recent], key=lambda entry: -entry[1])[:HISTORY_EVENTS]
        return VisitorState(tuple(recent), frozenset(sorted(closed)[:MAX_CLOSED]))

    # -- storage ---------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        # The tuples as they are: JSON writes them as arrays (and from_json reads them back).
        return {"v": VERSION, "recent": self.recent, "closed": sorted(self.closed)}

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
        except (TypeError, ValueError):
            return EMPTY
        return cls(recent, closed)

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
    return event.type == "close_promotion" or _kept(event)


def _kept(event: Event) -> bool:
    if event.type not in KEPT:
        return False
    if event.type == "search":
        return bool((event.props or {}).get("search_term"))
    return bool(event.item_ids())


def _entry(event: Event) -> tuple[str, float, tuple[str, ...], str]:
    term = str((event.props or {}).get("search_term", ""))[:200] if event.type == "search" else ""
    seconds = round((event.ts - EPOCH).total_seconds(), 3)
    return (event.type, seconds, tuple(event.item_ids()[:MAX_ITEMS]), term)


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
