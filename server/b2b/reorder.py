"""Reordering: a customer's usual items (the ones they order most often, with the quantity
of their last order of each) and the one-click link to the shop's cart for each, made from
the shop's `reorder_url` pattern."""

from __future__ import annotations

import string
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Sequence
from urllib.parse import quote

from server.urls import RULE as WEB_URL_RULE
from server.urls import is_web_url

PLACEHOLDERS = ("item_id", "quantity")


@dataclass(frozen=True)
class UsualItem:
    item_id: str
    orders: int  # orders it was in
    quantity: float  # in the newest of them
    last_ordered: datetime


def usual_items(purchases: Sequence[tuple[datetime, str | None, str | None, Any]]) -> list[UsualItem]:
    """The items of these purchases (newest first), the most often ordered first, then the
    most recently; each order counted once (an order both imported and tracked in the browser)."""
    seen_orders: set[str] = set()
    found: dict[str, list[Any]] = {}  # item -> [orders, newest quantity, newest time]
    for ts, order_id, item_id, props in purchases:
        if order_id:
            if order_id in seen_orders:
                continue
            seen_orders.add(order_id)
        lines = (props or {}).get("items") if isinstance(props, dict) else None
        quantities: dict[str, float] = {}
        for line in lines or ([{"item_id": item_id}] if item_id else []):
            if isinstance(line, dict) and line.get("item_id"):
                quantity = line.get("quantity", 1)
                quantities.setdefault(str(line["item_id"]), float(quantity) if isinstance(quantity, (int, float)) else 1.0)
        for item, quantity in quantities.items():
            if item in found:
                found[item][0] += 1
            else:
                found[item] = [1, quantity, ts]
    ranked = sorted(found.items(), key=lambda kv: (-kv[1][0], -kv[1][2].timestamp(), kv[0]))
    return [UsualItem(item, orders, quantity, at) for item, (orders, quantity, at) in ranked]


def check_reorder_url(pattern: str) -> str:
    """The shop's reorder_url pattern, or ValueError saying what is wrong with it."""
    if not pattern:
        return pattern
    try:
        fields = [(name, spec, conversion) for _, name, spec, conversion in string.Formatter().parse(pattern)
                  if name is not None]
    except ValueError as exc:
        raise ValueError(f"{pattern!r} is not a URL pattern: {exc} (write {{item_id}} and {{quantity}}; "
                         "a brace itself as {{ or }})") from None
    names = [name for name, _, _ in fields]
    unknown = [f"{name}{'!' + conversion if conversion else ''}{':' + spec if spec else ''}"
               for name, spec, conversion in fields if name not in PLACEHOLDERS or spec or conversion]
    if unknown:
        raise ValueError(f"unknown placeholder {{{unknown[0]}}} in {pattern!r}; use {{item_id}} and {{quantity}}")
    if "item_id" not in names:
        raise ValueError(f"{pattern!r} has no {{item_id}}: the link would not say which item to add")
    sample = reorder_link(pattern, "A1", 2)
    if not is_web_url(sample):
        raise ValueError(f"{pattern!r} is not a web link (expected {WEB_URL_RULE})")
    return pattern


def reorder_link(pattern: str, item_id: str, quantity: float) -> str:
    """The pattern with the item id and quantity filled in, each URL-encoded."""
    amount = str(int(quantity)) if float(quantity).is_integer() else f"{quantity:g}"
    return pattern.format(item_id=quote(item_id, safe=""), quantity=quote(amount, safe=""))
