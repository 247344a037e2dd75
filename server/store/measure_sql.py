"""The rollup job's SQL: events read once, in the order they were stored, into counters by
hour and day (rollups), the visitors of each experiment (experiment_visitors) and each
variant's totals (experiment_totals), on SQLite and PostgreSQL.

Each run reads the events after the mark (`rollup_marks`) that were received more than
`lag` ago, a batch at a time; a batch's counters, the experiments' rows and the new mark
are written in one transaction, so a run cut short, or run twice, counts every event
exactly once. The lag lets a transaction that took an id before a later one committed
finish first (ids are given at insert, rows are seen at commit): an event committed more
than `lag` after its id was given would be missed, which the store's short transactions
do not come near.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.measure.attribution import CLICKS, TOUCHES, VIEWS, Window, credits, keys_of
from server.measure.experiments import EXPOSURE
from server.models import Event
from server.store.schema import events, experiment_totals, experiment_visitors, rollup_marks, rollups

MARK = "events"
PERIODS = (("hour", lambda t: t.replace(minute=0, second=0, microsecond=0)),
           ("day", lambda t: t.replace(hour=0, minute=0, second=0, microsecond=0)))
CREDITED = "credited"  # the dimension of each order credited to anything, once
COUNTERS = ("page_views", "impressions", "clicks", "closes", "orders", "revenue", "view_orders", "view_revenue")


@dataclass
class RollupRun:
    events: int = 0  # events read
    batches: int = 0
    exposures: int = 0  # visitors newly counted in an experiment
    orders: int = 0
    credited: int = 0  # (order, dimension key) credits
    caught_up: bool = True
    seconds: float = 0.0
    shops: set[str] = field(default_factory=set)


def roll_up(
    begin: Callable[[], Any], insert: Callable[[sa.Table], Any], windows: Callable[[str], Window],
    now: datetime, batch: int = 5000, lag: timedelta = timedelta(seconds=60), budget_s: float = 50.0,
) -> RollupRun:
    """Read what is new in the events into the rollups, a batch per transaction, until
    caught up or `budget_s` is spent. `begin()` opens a write transaction, `insert(table)`
    is the dialect's insert (with on_conflict_do_*), `windows(shop)` the shop's attribution
    windows."""
    run = RollupRun()
    started = time.monotonic()
    until = now - lag
    while True:
        with begin() as conn:
            read = _one_batch(conn, insert, windows, until, batch, run)
        run.batches += 1
        if read < batch:
            break
        if time.monotonic() - started > budget_s:
            run.caught_up = False
            break
    run.seconds = time.monotonic() - started
    return run


def _one_batch(conn: Connection, insert, windows, until: datetime, batch: int, run: RollupRun) -> int:
    # The mark's row locked first: a second run at the same time (on PostgreSQL) waits for
    # this one and then reads past what it counted.
    conn.execute(insert(rollup_marks).values(name=MARK, last_event_id=0, updated_at=until).on_conflict_do_nothing())
    mark = conn.execute(sa.select(rollup_marks.c.last_event_id).where(rollup_marks.c.name == MARK).with_for_update()).scalar()
    mark = mark or 0
    rows = conn.execute(
        sa.select(events).where(events.c.id > mark, events.c.received_at < until).order_by(events.c.id).limit(batch)
    ).all()
    if not rows:
        return 0
    counts: dict[tuple, dict[str, float]] = defaultdict(lambda: dict.fromkeys(COUNTERS, 0))
    days: set[tuple[str, datetime]] = set()
    purchases: dict[tuple[str, str], list[Event]] = defaultdict(list)
    exposures: list[tuple[str, str, Event]] = []

    def add(shop: str, at: datetime, dimension: str, key: str, **values: float) -> None:
        for period, start in PERIODS:
            row = counts[(shop, period, start(at), dimension, key)]
            for name, value in values.items():
                row[name] += value

    for row in rows:
        event = _event(row)
        shop = row.shop
        run.shops.add(shop)
        if event.type == "page_view":
            add(shop, event.ts, "total", "", page_views=1)
            days.add((shop, PERIODS[1][1](event.ts)))
        elif event.type in TOUCHES or event.type == "close_promotion":
            name = "impressions" if event.type in VIEWS else "clicks" if event.type in CLICKS else "closes"
            add(shop, event.ts, "total", "", **{name: 1})
            for dimension, key in keys_of(event):
                add(shop, event.ts, dimension, key, **{name: 1})
        elif event.type == "purchase":
            add(shop, event.ts, "total", "", orders=1, revenue=event.value or 0.0)
            purchases[(shop, row.visitor_id)].append(event)
        elif event.type == EXPOSURE:
            exposures.append((shop, row.visitor_id, event))
    run.exposures += _expose(conn, insert, exposures)
    for (shop, visitor_id), bought in purchases.items():
        window = windows(shop)
        history = _touches(conn, shop, visitor_id, min(p.ts for p in bought) - max(window.click, window.visit_timeout),
                           max(p.ts for p in bought))
        for purchase in bought:
            run.orders += 1
            value = purchase.value or 0.0
            given = credits(purchase, history, window)
            for credit in given:
                run.credited += 1
                if credit.by == "click":
                    add(shop, purchase.ts, credit.dimension, credit.key, orders=1, revenue=value)
                else:
                    add(shop, purchase.ts, credit.dimension, credit.key, view_orders=1, view_revenue=value)
            # The order once, however many things led to it (by a click if one did): the
            # shop's credited orders and revenue, which the per-key rows sum to more than.
            if any(c.by == "click" for c in given):
                add(shop, purchase.ts, CREDITED, "", orders=1, revenue=value)
            elif given:
                add(shop, purchase.ts, CREDITED, "", view_orders=1, view_revenue=value)
            _credit_experiments(conn, shop, visitor_id, purchase)
    _write_counts(conn, insert, counts)
    for shop, day in days:
        _count_visitors(conn, insert, shop, day)
    last = rows[-1].id
    stmt = insert(rollup_marks).values(name=MARK, last_event_id=last, updated_at=until)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"last_event_id": last, "updated_at": until}))
    run.events += len(rows)
    return len(rows)


def _event(row: Any) -> Event:
    return Event(event_id=row.event_id, type=row.type, ts=row.ts, item_id=row.item_id, value=row.value,
                 currency=row.currency, order_id=row.order_id, campaign=row.campaign, props=row.props)


def _touches(conn: Connection, shop: str, visitor_id: str, since: datetime, until: datetime) -> list[Event]:
    """The visitor's events from `since` to `until` (all types: the visit is worked out from them)."""
    query = (sa.select(events).where(events.c.shop == shop, events.c.visitor_id == visitor_id,
                                     events.c.ts >= since, events.c.ts <= until).order_by(events.c.ts))
    return [_event(row) for row in conn.execute(query)]


def _expose(conn: Connection, insert, exposures: list[tuple[str, str, Event]]) -> int:
    """Count each visitor's first exposure to an experiment, once."""
    added = 0
    for shop, visitor_id, event in exposures:
        props = event.props or {}
        experiment, variant = str(props.get("experiment", ""))[:64], str(props.get("variant", ""))[:64]
        if not experiment or not variant:
            continue
        inserted = conn.execute(insert(experiment_visitors).values(
            shop=shop, experiment=experiment, visitor_id=visitor_id, variant=variant, exposed_at=event.ts,
        ).on_conflict_do_nothing()).rowcount
        if not inserted:
            continue
        added += 1
        stmt = insert(experiment_totals).values(shop=shop, experiment=experiment, variant=variant, visitors=1,
                                                first_exposed=event.ts, last_exposed=event.ts)
        t = experiment_totals.c
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["shop", "experiment", "variant"],
            set_={"visitors": t.visitors + 1,
                  "first_exposed": sa.case((t.first_exposed > event.ts, event.ts), else_=t.first_exposed),
                  "last_exposed": sa.case((t.last_exposed < event.ts, event.ts), else_=t.last_exposed)},
        ))
    return added


def _credit_experiments(conn: Connection, shop: str, visitor_id: str, purchase: Event) -> None:
    """The purchase counts for every experiment the visitor was exposed to before it."""
    ev = experiment_visitors.c
    value = purchase.value or 0.0
    rows = conn.execute(sa.select(ev.experiment, ev.variant, ev.orders, ev.revenue).where(
        ev.shop == shop, ev.visitor_id == visitor_id, ev.exposed_at <= purchase.ts)).all()
    for row in rows:
        conn.execute(sa.update(experiment_visitors).where(
            ev.shop == shop, ev.experiment == row.experiment, ev.visitor_id == visitor_id,
        ).values(orders=ev.orders + 1, revenue=ev.revenue + value))
        t = experiment_totals.c
        conn.execute(sa.update(experiment_totals).where(
            t.shop == shop, t.experiment == row.experiment, t.variant == row.variant,
        ).values(
            conversions=t.conversions + (1 if row.orders == 0 else 0), orders=t.orders + 1,
            revenue=t.revenue + value,
            # Each visitor's revenue squared, summed: theirs goes from r to r + value.
            revenue_sq=t.revenue_sq + ((row.revenue + value) ** 2 - row.revenue ** 2),
        ))


def _write_counts(conn: Connection, insert, counts: dict[tuple, dict[str, float]]) -> None:
    if not counts:
        return
    r = rollups.c
    values = [dict(shop=k[0], period=k[1], start=k[2], dimension=k[3], key=k[4][:200], **v)
              for k, v in sorted(counts.items())]
    stmt = insert(rollups)
    stmt = stmt.on_conflict_do_update(
        index_elements=["shop", "period", "start", "dimension", "key"],
        set_={name: getattr(r, name) + getattr(stmt.excluded, name) for name in COUNTERS},
    )
    conn.execute(stmt, values)


def _count_visitors(conn: Connection, insert, shop: str, day: datetime) -> None:
    """The day's distinct visitors (with a page view), counted anew from that day's page views."""
    e = events.c
    count = conn.execute(sa.select(sa.func.count(sa.distinct(e.visitor_id))).where(
        e.shop == shop, e.type == "page_view", e.ts >= day, e.ts < day + timedelta(days=1))).scalar() or 0
    stmt = insert(rollups).values(shop=shop, period="day", start=day, dimension="total", key="", visitors=count)
    conn.execute(stmt.on_conflict_do_update(index_elements=["shop", "period", "start", "dimension", "key"],
                                            set_={"visitors": count}))


def read_rollups(conn: Connection, shop: str, period: str, since: datetime, until: datetime,
                 dimension: str | None = None) -> list[dict[str, Any]]:
    r = rollups.c
    query = sa.select(rollups).where(r.shop == shop, r.period == period, r.start >= since, r.start < until)
    if dimension is not None:
        query = query.where(r.dimension == dimension)
    return [dict(row._mapping) for row in conn.execute(query.order_by(r.start, r.dimension, r.key))]


def sum_rollups(conn: Connection, shop: str, period: str, since: datetime, until: datetime,
                dimensions: list[str]) -> list[dict[str, Any]]:
    """Each (dimension, key)'s counters summed from `since` to `until`: one row per key."""
    r = rollups.c
    sums = [sa.func.sum(r[name]).label(name) for name in COUNTERS]
    query = (sa.select(r.dimension, r.key, *sums)
             .where(r.shop == shop, r.period == period, r.start >= since, r.start < until, r.dimension.in_(dimensions))
             .group_by(r.dimension, r.key).order_by(r.dimension, r.key))
    return [dict(row._mapping) for row in conn.execute(query)]


def mark_simulated(conn: Connection, insert: Any, shop: str, page_views: dict[datetime, int]) -> None:
    """Count page views under the dimension "simulated" (server/demo/simulated.py), by day."""
    r = rollups.c
    for day, count in page_views.items():
        stmt = insert(rollups).values(shop=shop, period="day", start=day, dimension="simulated", key="", page_views=count)
        conn.execute(stmt.on_conflict_do_update(index_elements=["shop", "period", "start", "dimension", "key"],
                                                set_={"page_views": r.page_views + count}))


def read_experiment_totals(conn: Connection, shop: str, experiment: str | None = None) -> list[dict[str, Any]]:
    t = experiment_totals.c
    query = sa.select(experiment_totals).where(t.shop == shop)
    if experiment is not None:
        query = query.where(t.experiment == experiment)
    rows = [dict(row._mapping) for row in conn.execute(query.order_by(t.experiment, t.variant))]
    for row in rows:  # float sums of squares can go a hair below what they must be
        row["revenue_sq"] = max(row["revenue_sq"], 0.0) if math.isfinite(row["revenue_sq"]) else 0.0
    return rows
