"""The B2B SQL (server/b2b/): each shop's price list per customer group (quantity tiers and
the items a group may not buy) with its version, and a customer's purchases for reordering."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Sequence

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.store.schema import events, group_prices, group_restrictions, price_list_versions

_prices, _barred, _versions = group_prices.c, group_restrictions.c, price_list_versions.c


def replace_price_list(
    conn: Connection, insert: Any, shop: str, tiers: Sequence[tuple[str, str, int, float]],
    restricted: Sequence[tuple[str, str]], now: datetime,
) -> int:
    """The shop's price list is now these (group, item, min quantity, price) tiers and
    (group, item) restrictions; the new version."""
    conn.execute(sa.delete(group_prices).where(_prices.shop == shop))
    conn.execute(sa.delete(group_restrictions).where(_barred.shop == shop))
    rows = [dict(shop=shop, customer_group=g, item_id=i, min_quantity=q, price=p) for g, i, q, p in tiers]
    for start in range(0, len(rows), 1000):
        conn.execute(sa.insert(group_prices), rows[start : start + 1000])
    barred = [dict(shop=shop, customer_group=g, item_id=i) for g, i in restricted]
    for start in range(0, len(barred), 1000):
        conn.execute(sa.insert(group_restrictions), barred[start : start + 1000])
    bump = insert(price_list_versions).values(shop=shop, version=1, imported_at=now)
    conn.execute(bump.on_conflict_do_update(
        index_elements=["shop"], set_={"version": _versions.version + 1, "imported_at": now}))
    return conn.execute(sa.select(_versions.version).where(_versions.shop == shop)).scalar_one()


def price_list_version(conn: Connection, shop: str) -> int:
    return conn.execute(sa.select(_versions.version).where(_versions.shop == shop)).scalar() or 0


def price_list(conn: Connection, shop: str) -> tuple[list[tuple[str, str, int, float]], list[tuple[str, str]]]:
    tiers = conn.execute(sa.select(_prices.customer_group, _prices.item_id, _prices.min_quantity, _prices.price)
                         .where(_prices.shop == shop)
                         .order_by(_prices.customer_group, _prices.item_id, _prices.min_quantity))
    barred = conn.execute(sa.select(_barred.customer_group, _barred.item_id).where(_barred.shop == shop)
                          .order_by(_barred.customer_group, _barred.item_id))
    return [tuple(r) for r in tiers], [tuple(r) for r in barred]  # type: ignore[misc]


def purchases(conn: Connection, shop: str, visitor_ids: Sequence[str], limit: int) -> list[tuple[datetime, str | None, str | None, Any]]:
    """(time, order id, item id, props) of these visitors' newest purchases, newest first."""
    query = (sa.select(events.c.ts, events.c.order_id, events.c.item_id, events.c.props)
             .where(events.c.shop == shop, events.c.visitor_id.in_(list(visitor_ids)), events.c.type == "purchase")
             .order_by(events.c.ts.desc(), events.c.id.desc()).limit(limit))
    return [(r.ts, r.order_id, r.item_id, r.props) for r in conn.execute(query)]
