"""Which campaigns, panels, strategies and variants an order is credited to.

The rules (docs/measurement.md#attribution), for each purchase of a visitor:

- a **click** credits what was clicked (a campaign's call to action or link, `select_promotion`;
  an item of a panel, `select_item`) up to `click_window` before the purchase (default 7 days);
- a **view** credits what was seen (`view_promotion`, `view_item_list`: the fragment was at
  least half visible for a second) in the same visit as the purchase: the run of the
  visitor's events before it with no gap longer than the visit timeout (30 minutes);
- an **add to cart** is credited, as an order is by a click, to what was clicked up to
  `click_window` before it (no view credits a cart): the funnel's step between clicks and
  orders;
- each campaign, slot, strategy and variant is credited once per order, with the order's
  whole value, by a click if it had one (else by a view); two panels that both led to it are
  each credited with it, so credited revenue adds up to more than the revenue when several
  did, as with the peers' "assisted" numbers.

Pure functions over events; the rollup job (server/store/measure_sql.py) feeds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Iterable, Sequence

from server.models import Event

CLICKS = frozenset({"select_promotion", "select_item"})
VIEWS = frozenset({"view_promotion", "view_item_list"})
TOUCHES = CLICKS | VIEWS
CART = "add_to_cart"
DIMENSIONS = ("campaign", "slot", "strategy", "variant")


@dataclass(frozen=True)
class Window:
    click: timedelta = timedelta(days=7)
    visit_timeout: timedelta = timedelta(minutes=30)


def keys_of(event: Event) -> list[tuple[str, str]]:
    """What a touch (an impression or a click) is counted under: (dimension, key) pairs."""
    props = event.props or {}
    found = []
    if event.type in ("view_promotion", "select_promotion", "close_promotion"):
        if event.campaign:
            found.append(("campaign", event.campaign))
        if props.get("creative_slot"):
            found.append(("slot", str(props["creative_slot"])))
    else:  # a panel: its slot and the strategy that filled it
        if props.get("item_list_id"):
            found.append(("slot", str(props["item_list_id"])))
        if props.get("item_list_name"):
            found.append(("strategy", str(props["item_list_name"])))
    if props.get("experiment") and props.get("variant"):
        found.append(("variant", f"{props['experiment']}:{props['variant']}"))
    return found


@dataclass(frozen=True)
class Credit:
    dimension: str
    key: str
    by: str  # "click" or "view"


def visit_start(purchase_at: datetime, earlier: Sequence[datetime], timeout: timedelta) -> datetime:
    """When the visit holding the purchase began: going back from it over the visitor's
    earlier event times, the last one before a gap longer than `timeout`."""
    start = purchase_at
    for at in sorted((t for t in earlier if t <= purchase_at), reverse=True):
        if start - at > timeout:
            break
        start = at
    return start


def credits(purchase: Event, history: Iterable[Event], window: Window = Window()) -> list[Credit]:
    """What the purchase is credited to, from the visitor's events (any order, any types:
    the visit is worked out from all of them)."""
    earlier = [e for e in history if e.ts <= purchase.ts and e.event_id != purchase.event_id]
    began = visit_start(purchase.ts, [e.ts for e in earlier], window.visit_timeout)
    by: dict[tuple[str, str], str] = {}
    for event in earlier:
        if event.type in CLICKS and purchase.ts - event.ts <= window.click:
            for key in keys_of(event):
                by[key] = "click"
        elif event.type in VIEWS and event.ts >= began:
            for key in keys_of(event):
                by.setdefault(key, "view")
    return [Credit(dimension, key, how) for (dimension, key), how in sorted(by.items())]


def cart_credits(add: Event, history: Iterable[Event], window: Window = Window()) -> list[tuple[str, str]]:
    """What an add to cart is credited to: each (dimension, key) that a click of the visitor's
    named up to the click window before it, once."""
    found = {key for event in history if event.type in CLICKS and event.ts <= add.ts and add.ts - event.ts <= window.click
             for key in keys_of(event)}
    return sorted(found)
