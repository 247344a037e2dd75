"""The demo shop: its data files, the script that derives them from the Online Retail data, and
the shift that makes its history a live shop's."""

from __future__ import annotations

import dataclasses
from datetime import date, timedelta
from typing import Sequence

from server.models import Interaction

# The demo's coupon pools (demo.toml's coupon_pool): the welcome popup's 10% off and the
# newsletter sign-up's 15%, a single-use code of their own for each visitor who reveals one;
# the apology popup's £10, which the shop's backend issues to a customer (docs/promotions.md).
# The gold members' calendar rewards: 50% capped at £500 on their anniversary, £20 and free
# shipping on their birthday; everyone else's anniversary, 15%.
COUPON_POOLS = (
    ("welcome", "WELCOME-", dict(kind="percent", value=10.0)),
    ("hello", "HELLO-", dict(kind="percent", value=15.0)),
    ("sorry", "SORRY-", dict(kind="amount", value=10.0)),
    ("gold-anniversary", "GOLD-", dict(kind="percent", value=50.0, max_discount=500.0)),
    ("gold-birthday", "BDAY-", dict(kind="amount", value=20.0, free_shipping=True)),
    ("anniversary", "THANKS-", dict(kind="percent", value=15.0)),
)
POOL_SIZE = 2000
POOL_LOW = 500


def fill_coupon_pools(store, shop: str, size: int = POOL_SIZE, low: int = POOL_LOW) -> dict[str, int]:
    """Make the demo's pools, and top up to `size` codes not yet issued any that has fewer
    than `low` left (at each start of `vitrine demo`). Returns the codes added by pool."""
    from server.promotions.codes import Pattern
    from server.promotions.pools import ensure_pool, generate_codes
    from server.promotions.rules import PoolRules

    added = {}
    stats = {s["pool"]: s for s in store.coupon_stats(shop)}  # once: a pool made below has none
    for pool, prefix, rule in COUPON_POOLS:
        rules, _ = ensure_pool(store, shop, pool, PoolRules(**rule, reveal="campaign"))
        held = stats.get(pool, {})
        left = held.get("codes", 0) - held.get("issued", 0)
        if left < low:
            added[pool] = len(generate_codes(store, shop, pool, rules, size - left, Pattern(prefix)))
    return added


def shifted_history(rows: Sequence[Interaction], today: date) -> tuple[list[Interaction], int]:
    """The demo's interactions (December 2010 to December 2011) moved forward by whole days so
    that the newest is on the day before `today` (the demo's first start): recency-based
    audiences (lapsed, back after three months), trending and the model's recent weights
    then read them as a live shop's, and the weekdays of the year stay together. Returns
    the rows and the days they moved."""
    if not rows:
        return list(rows), 0
    newest = max(r.timestamp for r in rows).date()
    days = (today - timedelta(days=1) - newest).days
    moved = timedelta(days=days)
    return [dataclasses.replace(r, timestamp=r.timestamp + moved) for r in rows], days
