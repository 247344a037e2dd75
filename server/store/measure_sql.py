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
SIMULATED, SIMULATED_PREFIX = "simulated", "sim-"  # the key of simulated traffic's totals; its visitors' ids
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
    days: set[tuple[str, datetime]] = field(default_factory=set)  # (shop, day) with page views read


def roll_up(
    begin: Callable[[], Any], insert: Callable[[sa.Table], Any], windows: Callable[[str], Window],
    now: datetime, batch: int = 1000, lag: timedelta = timedelta(seconds=60), budget_s: float = 50.0,
    pause_s: float = 0.02,
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
        time.sleep(pause_s)  # the request path's writers take their turn (SQLite has one writer)
    if run.days:  # each day's distinct visitors, counted anew once per run
        with begin() as conn:
            for shop, day in sorted(run.days):
                _count_visitors(conn, insert, shop, day)
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
    starts: dict[tuple, tuple[datetime, datetime]] = {}

    def add(shop: str, at: datetime, dimension: str, key: str, name: str, value: float = 1) -> None:
        hour = (at.year, at.month, at.day, at.hour)
        if hour not in starts:
            starts[hour] = (datetime(*hour), datetime(*hour[:3]))
        h, d = starts[hour]
        counts[(shop, "hour", h, dimension, key)][name] += value
        counts[(shop, "day", d, dimension, key)][name] += value

    for row in rows:
        shop, kind, at = row.shop, row.type, row.ts
        run.shops.add(shop)
        # Simulated traffic (server/demo/simulate.py) is counted apart as well, for the
        # dashboard to say how much of what it shows is simulated.
        totals = ("", SIMULATED) if row.visitor_id.startswith(SIMULATED_PREFIX) else ("",)
        if kind == "page_view":
            for key in totals:
                add(shop, at, "total", key, "page_views")
            days.add((shop, datetime(at.year, at.month, at.day)))
        elif kind in TOUCHES or kind == "close_promotion":
            name = "impressions" if kind in VIEWS else "clicks" if kind in CLICKS else "closes"
            for key in totals:
                add(shop, at, "total", key, name)
            for dimension, key in keys_of(_event(row)):
                add(shop, at, dimension, key, name)
        elif kind == "purchase":
            for key in totals:
                add(shop, at, "total", key, "orders")
                add(shop, at, "total", key, "revenue", row.value or 0.0)
            purchases[(shop, row.visitor_id)].append(_event(row))
        elif kind == EXPOSURE:
            exposures.append((shop, row.visitor_id, _event(row)))
    run.exposures += _expose(conn, insert, exposures, mark)
    histories = _histories(conn, purchases, windows)
    for (shop, visitor_id), bought in purchases.items():
        window = windows(shop)
        for purchase in bought:
            run.orders += 1
            value = purchase.value or 0.0
            given = credits(purchase, histories.get((shop, visitor_id), ()), window)
            for credit in given:
                run.credited += 1
                if credit.by == "click":
                    add(shop, purchase.ts, credit.dimension, credit.key, "orders")
                    add(shop, purchase.ts, credit.dimension, credit.key, "revenue", value)
                else:
                    add(shop, purchase.ts, credit.dimension, credit.key, "view_orders")
                    add(shop, purchase.ts, credit.dimension, credit.key, "view_revenue", value)
            # The order once, however many things led to it (by a click if one did): the
            # shop's credited orders and revenue, which the per-key rows sum to more than.
            if any(c.by == "click" for c in given):
                add(shop, purchase.ts, CREDITED, "", "orders")
                add(shop, purchase.ts, CREDITED, "", "revenue", value)
            elif given:
                add(shop, purchase.ts, CREDITED, "", "view_orders")
                add(shop, purchase.ts, CREDITED, "", "view_revenue", value)
    _credit_experiments(conn, purchases)
    _write_counts(conn, insert, counts)
    run.days |= days
    last = rows[-1].id
    stmt = insert(rollup_marks).values(name=MARK, last_event_id=last, updated_at=until)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"last_event_id": last, "updated_at": until}))
    run.events += len(rows)
    return len(rows)


def _event(row: Any) -> Event:
    return Event(event_id=row.event_id, type=row.type, ts=row.ts, item_id=row.item_id, value=row.value,
                 currency=row.currency, order_id=row.order_id, campaign=row.campaign, props=row.props)


def _histories(conn: Connection, purchases: dict[tuple[str, str], list[Event]], windows) -> dict[tuple[str, str], list[Event]]:
    """The buyers' events from as far back as their purchases' windows reach (all types: the
    visit is worked out from them), one query per shop and hundred buyers."""
    found: dict[tuple[str, str], list[Event]] = defaultdict(list)
    by_shop: dict[str, list[str]] = defaultdict(list)
    for shop, visitor_id in purchases:
        by_shop[shop].append(visitor_id)
    for shop, buyers in by_shop.items():
        window = windows(shop)
        reach = max(window.click, window.visit_timeout)
        for start in range(0, len(buyers), 100):
            part = buyers[start : start + 100]
            bought = [p for v in part for p in purchases[(shop, v)]]
            since, until = min(p.ts for p in bought) - reach, max(p.ts for p in bought)
            query = sa.select(events).where(events.c.shop == shop, events.c.visitor_id.in_(part),
                                            events.c.ts >= since, events.c.ts <= until)
            for row in conn.execute(query):
                found[(shop, row.visitor_id)].append(_event(row))
    return found


def _expose(conn: Connection, insert, exposures: list[tuple[str, str, Event]], mark: int) -> int:
    """Count each visitor's first exposure to an experiment, once: one insert for the batch,
    and each variant's totals added to once with what it took. A purchase of theirs after
    the exposure that an earlier batch read (an exposure is written behind the page call,
    so a purchase right after it can be stored first) is credited to it now."""
    rows: dict[tuple[str, str, str], dict] = {}
    for shop, visitor_id, event in exposures:
        props = event.props or {}
        experiment, variant = str(props.get("experiment", ""))[:64], str(props.get("variant", ""))[:64]
        if experiment and variant and (shop, experiment, visitor_id) not in rows:
            rows[(shop, experiment, visitor_id)] = dict(shop=shop, experiment=experiment, visitor_id=visitor_id,
                                                        variant=variant, exposed_at=event.ts)
    if not rows:
        return 0
    ev = experiment_visitors.c
    stmt = insert(experiment_visitors).on_conflict_do_nothing().returning(
        ev.shop, ev.experiment, ev.visitor_id, ev.variant, ev.exposed_at)
    added: dict[tuple[str, str, str], list[datetime]] = defaultdict(list)
    new: dict[tuple[str, str], datetime] = {}
    fresh: set[tuple[str, str, str]] = set()
    for row in conn.execute(stmt, list(rows.values())):
        added[(row.shop, row.experiment, row.variant)].append(row.exposed_at)
        fresh.add((row.shop, row.experiment, row.visitor_id))
        key = (row.shop, row.visitor_id)
        new[key] = min(new.get(key, row.exposed_at), row.exposed_at)
    t = experiment_totals.c
    for (shop, experiment, variant), times in sorted(added.items()):
        first, last = min(times), max(times)
        stmt = insert(experiment_totals).values(shop=shop, experiment=experiment, variant=variant, visitors=len(times),
                                                first_exposed=first, last_exposed=last)
        conn.execute(stmt.on_conflict_do_update(
            index_elements=["shop", "experiment", "variant"],
            set_={"visitors": t.visitors + len(times),
                  "first_exposed": sa.case((t.first_exposed > first, first), else_=t.first_exposed),
                  "last_exposed": sa.case((t.last_exposed < last, last), else_=t.last_exposed)},
        ))
    earlier: dict[tuple[str, str], list[Event]] = defaultdict(list)
    e = events.c
    by_shop: dict[str, list[str]] = defaultdict(list)
    for shop, visitor_id in new:
        by_shop[shop].append(visitor_id)
    for shop, exposed in by_shop.items():
        for start in range(0, len(exposed), 500):
            query = sa.select(events).where(e.shop == shop, e.visitor_id.in_(exposed[start : start + 500]),
                                            e.type == "purchase", e.id <= mark)
            for row in conn.execute(query):
                if row.ts >= new[(shop, row.visitor_id)]:
                    earlier[(shop, row.visitor_id)].append(_event(row))
    if any(earlier.values()):
        _credit_experiments(conn, {k: v for k, v in earlier.items() if v}, only=fresh)
    return sum(len(t) for t in added.values())


def _credit_experiments(conn: Connection, purchases: dict[tuple[str, str], list[Event]],
                        only: set[tuple[str, str, str]] | None = None) -> None:
    """Each purchase counts for every experiment its buyer was exposed to before it (of
    `only`, when given: (shop, experiment, visitor)): the buyers' rows read at once, each
    changed row written once, each variant's totals once."""
    if not purchases:
        return
    ev = experiment_visitors.c
    mine: dict[tuple[str, str, str], dict] = {}
    of_visitor: dict[tuple[str, str], list[tuple[str, dict]]] = defaultdict(list)
    by_shop: dict[str, list[str]] = defaultdict(list)
    for shop, visitor_id in purchases:
        by_shop[shop].append(visitor_id)
    for shop, buyers in by_shop.items():
        for start in range(0, len(buyers), 500):
            query = sa.select(experiment_visitors).where(ev.shop == shop, ev.visitor_id.in_(buyers[start : start + 500]))
            for row in conn.execute(query):
                if only is not None and (shop, row.experiment, row.visitor_id) not in only:
                    continue
                mine[(shop, row.experiment, row.visitor_id)] = found = dict(row._mapping)
                of_visitor[(shop, row.visitor_id)].append((row.experiment, found))
    deltas: dict[tuple[str, str, str], dict[str, float]] = defaultdict(lambda: dict.fromkeys(
        ("conversions", "orders", "revenue", "revenue_sq"), 0))
    changed = set()
    for (shop, visitor_id), bought in purchases.items():
        for purchase in sorted(bought, key=lambda p: p.ts):
            for experiment, row in of_visitor.get((shop, visitor_id), ()):
                if row["exposed_at"] > purchase.ts:
                    continue
                value = purchase.value or 0.0
                delta = deltas[(shop, experiment, row["variant"])]
                delta["conversions"] += 1 if row["orders"] == 0 else 0
                delta["orders"] += 1
                delta["revenue"] += value
                # Each visitor's revenue squared, summed: theirs goes from r to r + value.
                delta["revenue_sq"] += (row["revenue"] + value) ** 2 - row["revenue"] ** 2
                row["orders"] += 1
                row["revenue"] += value
                changed.add((shop, experiment, visitor_id))
    if changed:
        conn.execute(
            sa.update(experiment_visitors).where(
                ev.shop == sa.bindparam("k_shop"), ev.experiment == sa.bindparam("k_experiment"),
                ev.visitor_id == sa.bindparam("k_visitor"),
            ).values(orders=sa.bindparam("n_orders"), revenue=sa.bindparam("n_revenue")),
            [dict(k_shop=k[0], k_experiment=k[1], k_visitor=k[2], n_orders=mine[k]["orders"], n_revenue=mine[k]["revenue"])
             for k in sorted(changed)],
        )
    t = experiment_totals.c
    for (shop, experiment, variant), d in sorted(deltas.items()):
        conn.execute(sa.update(experiment_totals).where(
            t.shop == shop, t.experiment == experiment, t.variant == variant,
        ).values(conversions=t.conversions + d["conversions"], orders=t.orders + d["orders"],
                 revenue=t.revenue + d["revenue"], revenue_sq=t.revenue_sq + d["revenue_sq"]))


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


def read_experiment_totals(conn: Connection, shop: str, experiment: str | None = None) -> list[dict[str, Any]]:
    t = experiment_totals.c
    query = sa.select(experiment_totals).where(t.shop == shop)
    if experiment is not None:
        query = query.where(t.experiment == experiment)
    rows = [dict(row._mapping) for row in conn.execute(query.order_by(t.experiment, t.variant))]
    for row in rows:  # float sums of squares can go a hair below what they must be
        row["revenue_sq"] = max(row["revenue_sq"], 0.0) if math.isfinite(row["revenue_sq"]) else 0.0
    return rows
