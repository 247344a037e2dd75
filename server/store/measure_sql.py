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

import functools
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from server.measure.attribution import CART, CLICKS, TOUCHES, VIEWS, Window, cart_credits, credits, keys_of
from server.measure.experiments import EXPOSURE
from server.models import Event
from server.store.schema import events, experiment_totals, experiment_visitors, rollup_marks, rollups

if TYPE_CHECKING:
    from server.audiences.book import AudienceBook

MARK = "events"
SIMULATED, SIMULATED_PREFIX = "simulated", "sim-"  # the key of simulated traffic's totals; its visitors' ids
CREDITED = "credited"  # the dimension of each order credited to anything, once
AUDIENCE = "audience"  # the dimension of each audience's page views, visitors, orders and revenue
COUNTERS = ("page_views", "impressions", "clicks", "closes", "carts", "orders", "revenue", "view_orders",
            "view_revenue")
ADDED = COUNTERS + ("visitors",)  # what a batch adds to (the total's visitors are counted anew, _count_visitors)
TOUCH_TYPES = TOUCHES | {"close_promotion"}
TOUCH_PROPS = ("creative_slot", "item_list_id", "item_list_name", "experiment", "variant")  # what keys_of reads


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
    now: datetime, batch: int = 10000, lag: timedelta = timedelta(seconds=60), budget_s: float = 50.0,
    pause_s: float = 0.02, audiences: Callable[[str], "AudienceBook | None"] | None = None,
) -> RollupRun:
    """Read what is new in the events into the rollups, a batch per transaction, until
    caught up or `budget_s` is spent. `begin()` opens a write transaction, `insert(table)`
    is the dialect's insert (with on_conflict_do_*), `windows(shop)` the shop's attribution
    windows, `audiences(shop)` its audiences (None: no audience counts)."""
    run = RollupRun()
    started = time.monotonic()
    until = now - lag
    while True:
        with begin() as conn:
            read = _one_batch(conn, insert, windows, audiences or (lambda shop: None), now, until, batch, run)
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


class _Counts:
    """A batch's counters, by (shop, period, start, dimension, key): each addition made to the
    hour's row and the day's."""

    def __init__(self) -> None:
        self.rows: dict[tuple, dict[str, float]] = defaultdict(lambda: dict.fromkeys(ADDED, 0))
        self._starts: dict[tuple, tuple[datetime, datetime]] = {}

    def add(self, shop: str, at: datetime, dimension: str, key: str, name: str, value: float = 1) -> None:
        hour = (at.year, at.month, at.day, at.hour)
        if hour not in self._starts:
            self._starts[hour] = (datetime(*hour), datetime(*hour[:3]))
        h, d = self._starts[hour]
        self.rows[(shop, "hour", h, dimension, key)][name] += value
        self.rows[(shop, "day", d, dimension, key)][name] += value

    def add_day(self, shop: str, day: datetime, dimension: str, key: str, name: str, value: float = 1) -> None:
        self.rows[(shop, "day", day, dimension, key)][name] += value


def _one_batch(conn: Connection, insert, windows, audiences, now: datetime, until: datetime, batch: int,
               run: RollupRun) -> int:
    # The mark's row locked first: a second run at the same time (on PostgreSQL) waits for
    # this one and then reads past what it counted.
    conn.execute(insert(rollup_marks).values(name=MARK, last_event_id=0, updated_at=until).on_conflict_do_nothing())
    mark = conn.execute(sa.select(rollup_marks.c.last_event_id).where(rollup_marks.c.name == MARK).with_for_update()).scalar()
    mark = mark or 0
    e = events.c
    ids = sa.select(e.id).where(e.id > mark, e.received_at < until).order_by(e.id).limit(batch).subquery()
    last = conn.execute(sa.select(sa.func.max(ids.c.id))).scalar()
    if last is None:
        return 0
    # The batch: the first `batch` events after the mark received before `until`, which are
    # the events of (mark, last] received before it.
    in_batch = sa.and_(e.id > mark, e.id <= last, e.received_at < until)
    counts = _Counts()
    days: set[tuple[str, datetime]] = set()
    shops: set[str] = set()
    read = _count_groups(conn, in_batch, counts, days, shops)
    run.shops |= shops
    purchases: dict[tuple[str, str], list[Event]] = defaultdict(list)
    adds: dict[tuple[str, str], list[Event]] = defaultdict(list)
    # What is credited one event at a time (orders, add to carts: a few in a hundred).
    query = sa.select(events).where(in_batch, e.type.in_(("purchase", CART))).order_by(e.id)
    for row in conn.execute(query):
        (purchases if row.type == "purchase" else adds)[(row.shop, row.visitor_id)].append(_event(row))
    run.exposures += _expose(conn, insert, in_batch, mark)
    histories = _histories(conn, purchases, windows)
    for (shop, visitor_id), bought in purchases.items():
        window = windows(shop)
        for purchase in bought:
            run.orders += 1
            _credit_order(counts, shop, purchase, credits(purchase, histories.get((shop, visitor_id), ()), window), run)
    _credit_carts(conn, counts, adds, windows)
    books = {shop: book for shop in sorted(shops) if (book := audiences(shop)) is not None}
    if books:
        _count_audiences(conn, in_batch, mark, counts, books, windows, now)
    _credit_experiments(conn, purchases)
    _write_counts(conn, insert, counts.rows)
    run.days |= days
    stmt = insert(rollup_marks).values(name=MARK, last_event_id=last, updated_at=until)
    conn.execute(stmt.on_conflict_do_update(index_elements=["name"], set_={"last_event_id": last, "updated_at": until}))
    run.events += read
    return read


def _hour(conn: Connection, column: Any, unit: str = "hour") -> Any:
    """The hour (or day) an event time is in: a text prefix of SQLite's stored time, or
    PostgreSQL's date_trunc (read back with _start)."""
    if conn.dialect.name == "sqlite":
        return sa.func.substr(column, 1, 13 if unit == "hour" else 10, type_=sa.String)
    return sa.func.date_trunc(sa.literal_column(f"'{unit}'"), column, type_=sa.DateTime)


@functools.lru_cache(maxsize=4096)
def _parse_start(text: str) -> datetime:
    return datetime.fromisoformat(text if len(text) <= 10 else text + ":00")


def _start(value: Any) -> datetime:
    return value if isinstance(value, datetime) else _parse_start(value)


def _count_groups(conn: Connection, in_batch: Any, counts: _Counts, days: set, shops: set) -> int:
    """The batch's page views, impressions, clicks, closes, add to carts and orders, counted in
    SQL: one row per shop, type, hour and what a touch names (its campaign, slot, strategy,
    experiment and variant), each turned into the counters its events would have added to
    one by one. Returns how many events the batch holds (of every type)."""
    e = events.c
    touch = e.type.in_(TOUCH_TYPES)
    named = [sa.case((touch, e.campaign), else_=None)] + [
        sa.case((touch, e.props[name].as_string()), else_=None) for name in TOUCH_PROPS]
    columns = [e.shop, e.type, _hour(conn, e.ts), e.visitor_id.startswith(SIMULATED_PREFIX, autoescape=True), *named]
    query = (sa.select(*columns, sa.func.count().label("n"), sa.func.sum(e.value).label("value"))
             .where(in_batch).group_by(*(sa.literal_column(str(n + 1)) for n in range(len(columns)))))
    read = 0
    for row in conn.execute(query):
        shop, kind, at, simulated, campaign, *props, n, value = row
        read += n
        shops.add(shop)
        at = _start(at)
        # Simulated traffic (server/demo/simulate.py) is counted apart as well, for the
        # dashboard to say how much of what it shows is simulated.
        totals = ("", SIMULATED) if simulated else ("",)
        if kind == "page_view":
            for key in totals:
                counts.add(shop, at, "total", key, "page_views", n)
            days.add((shop, datetime(at.year, at.month, at.day)))
        elif kind in TOUCH_TYPES:
            name = "impressions" if kind in VIEWS else "clicks" if kind in CLICKS else "closes"
            for key in totals:
                counts.add(shop, at, "total", key, name, n)
            touched = Event(event_id="", type=kind, ts=at, campaign=campaign,
                            props={k: v for k, v in zip(TOUCH_PROPS, props) if v is not None})
            for dimension, key in keys_of(touched):
                counts.add(shop, at, dimension, key, name, n)
        elif kind == "purchase":
            for key in totals:
                counts.add(shop, at, "total", key, "orders", n)
                counts.add(shop, at, "total", key, "revenue", value or 0.0)
        elif kind == CART:
            for key in totals:
                counts.add(shop, at, "total", key, "carts", n)
    return read


def _credit_order(counts: _Counts, shop: str, purchase: Event, given: list, run: RollupRun) -> None:
    value = purchase.value or 0.0
    for credit in given:
        run.credited += 1
        if credit.by == "click":
            counts.add(shop, purchase.ts, credit.dimension, credit.key, "orders")
            counts.add(shop, purchase.ts, credit.dimension, credit.key, "revenue", value)
        else:
            counts.add(shop, purchase.ts, credit.dimension, credit.key, "view_orders")
            counts.add(shop, purchase.ts, credit.dimension, credit.key, "view_revenue", value)
    # The order once, however many things led to it (by a click if one did): the
    # shop's credited orders and revenue, which the per-key rows sum to more than.
    if any(c.by == "click" for c in given):
        counts.add(shop, purchase.ts, CREDITED, "", "orders")
        counts.add(shop, purchase.ts, CREDITED, "", "revenue", value)
    elif given:
        counts.add(shop, purchase.ts, CREDITED, "", "view_orders")
        counts.add(shop, purchase.ts, CREDITED, "", "view_revenue", value)


def _credit_carts(conn: Connection, counts: _Counts, adds: dict[tuple[str, str], list[Event]], windows) -> None:
    """Each add to cart credited to what its visitor clicked within the click window before
    it (server/measure/attribution.py cart_credits), and once under `credited` when anything
    was: the funnel's step between clicks and orders. The adders' clicks read at once, one
    query per shop and hundred adders."""
    by_shop: dict[str, list[str]] = defaultdict(list)
    for shop, visitor_id in adds:
        by_shop[shop].append(visitor_id)
    e = events.c
    for shop, adders in by_shop.items():
        window = windows(shop)
        for start in range(0, len(adders), 100):
            part = adders[start : start + 100]
            added = [a for v in part for a in adds[(shop, v)]]
            clicks: dict[str, list[Event]] = defaultdict(list)
            query = sa.select(e.visitor_id, e.type, e.ts, e.campaign, e.props).where(
                e.shop == shop, e.visitor_id.in_(part), _of_type(tuple(sorted(CLICKS))),
                e.ts >= min(a.ts for a in added) - window.click, e.ts <= max(a.ts for a in added))
            for row in conn.execute(query):
                clicks[row.visitor_id].append(Event(event_id="", type=row.type, ts=row.ts, campaign=row.campaign,
                                                    props=row.props))
            for visitor_id in part:
                for add in adds[(shop, visitor_id)]:
                    given = cart_credits(add, clicks.get(visitor_id, ()), window)
                    for dimension, key in given:
                        counts.add(shop, add.ts, dimension, key, "carts")
                    if given:
                        counts.add(shop, add.ts, CREDITED, "", "carts")


def _count_audiences(conn: Connection, in_batch: Any, mark: int, counts: _Counts, books: dict[str, Any], windows,
                     now: datetime) -> None:
    """The batch's page views, orders and revenue per audience, and each day's visitors: each
    event counted under the audiences its visitor is in when the job reads it (their stored
    row, as the sizes are counted: server/store/audience_sql.py), one read of the batch's
    distinct visitors per shop. A visitor counts once a day in an audience: in those they
    were in when the job read their day's first page view."""
    from server.store.audience_sql import audience_members

    e = events.c
    hour = _hour(conn, e.ts)
    query = (sa.select(e.shop, e.visitor_id, e.type, hour, sa.func.count().label("n"), sa.func.sum(e.value).label("value"))
             .where(in_batch, e.type.in_(("page_view", "purchase")))
             .group_by(*(sa.literal_column(str(n)) for n in range(1, 5))))
    by_shop: dict[str, list[Any]] = defaultdict(list)
    for row in conn.execute(query):
        if row.shop in books:
            by_shop[row.shop].append(row)
    for shop, rows in by_shop.items():
        visitor_ids = sorted({r.visitor_id for r in rows})
        timeout = int(windows(shop).visit_timeout.total_seconds())
        members = audience_members(conn, conn.dialect.name, shop, books[shop], now, timeout, visitor_ids)
        if not members:
            continue
        first_views: set[tuple[str, datetime]] = set()
        for row in rows:
            in_them = members.get(row.visitor_id, ())
            if not in_them:
                continue
            at = _start(row[3])
            if row.type == "page_view":
                first_views.add((row.visitor_id, datetime(at.year, at.month, at.day)))
            for audience in in_them:
                if row.type == "page_view":
                    counts.add(shop, at, AUDIENCE, audience, "page_views", row.n)
                else:
                    counts.add(shop, at, AUDIENCE, audience, "orders", row.n)
                    counts.add(shop, at, AUDIENCE, audience, "revenue", row.value or 0.0)
        for visitor_id, day in first_views - _seen_before(conn, shop, first_views, mark):
            for audience in members[visitor_id]:
                counts.add_day(shop, day, AUDIENCE, audience, "visitors")


def _seen_before(conn: Connection, shop: str, views: set[tuple[str, datetime]], mark: int) -> set[tuple[str, datetime]]:
    """Which of these (visitor, day) had a page view the job read before (at or below the mark)."""
    if not views:
        return set()
    e = events.c
    day = _hour(conn, e.ts, "day")
    visitor_ids = sorted({v for v, _ in views})
    first, last = min(d for _, d in views), max(d for _, d in views) + timedelta(days=1)
    found: set[tuple[str, datetime]] = set()
    for start in range(0, len(visitor_ids), 500):
        query = sa.select(e.visitor_id, day).distinct().where(
            e.shop == shop, e.visitor_id.in_(visitor_ids[start : start + 500]), _of_type(("page_view",)),
            e.ts >= first, e.ts < last, e.id <= mark)
        found |= {(visitor_id, _start(at)) for visitor_id, at in conn.execute(query)}
    return found & views


def _of_type(types: tuple[str, ...]) -> Any:
    """The events of these types, as a condition that no index serves: with it, SQLite looks the
    visitors up in ix_events_visitor, not every event of the type in ix_events_type (which it
    otherwise picks, and which grows with the table: the job slowed as it read on)."""
    return (events.c.type + "").in_(types)


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


def _expose(conn: Connection, insert, in_batch: Any, mark: int) -> int:
    """Count each visitor's first exposure to an experiment, once: one insert of the batch's
    exposures straight from the events (in the order they were stored, so a visitor's first
    one in the batch is the one kept), and each variant's totals added to once with what it
    took. A purchase of theirs after the exposure that an earlier batch read (an exposure is
    written behind the page call, so a purchase right after it can be stored first) is
    credited to it now."""
    e = events.c
    experiment = sa.func.substr(e.props["experiment"].as_string(), 1, 64)
    variant = sa.func.substr(e.props["variant"].as_string(), 1, 64)
    exposed = (sa.select(e.shop, experiment, e.visitor_id, variant, e.ts)
               .where(in_batch, e.type == EXPOSURE, sa.func.coalesce(experiment, "") != "",
                      sa.func.coalesce(variant, "") != "")
               .order_by(e.id))
    ev = experiment_visitors.c
    stmt = insert(experiment_visitors).from_select(
        ["shop", "experiment", "visitor_id", "variant", "exposed_at"], exposed,
    ).on_conflict_do_nothing().returning(ev.shop, ev.experiment, ev.visitor_id, ev.variant, ev.exposed_at)
    added: dict[tuple[str, str, str], list[datetime]] = defaultdict(list)
    new: dict[tuple[str, str], datetime] = {}
    fresh: set[tuple[str, str, str]] = set()
    for row in conn.execute(stmt):
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
                                            _of_type(("purchase",)), e.id <= mark)
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
    """The batch's counters added to the rollups' rows. SQLite: one statement executed for
    each row. PostgreSQL: one statement for the batch, each column bound as an array
    (`unnest`), since a statement a row was most of a batch's time there, and a VALUES list
    of hundreds of rows took longer to compile than to run."""
    if not counts:
        return
    merged: dict[tuple, dict[str, float]] = {}
    for (shop, period, start, dimension, key), values in sorted(counts.items()):
        row = merged.setdefault((shop, period, start, dimension, key[:200]), dict.fromkeys(ADDED, 0))
        for name, value in values.items():
            row[name] += value
    rows = [dict(shop=k[0], period=k[1], start=k[2], dimension=k[3], key=k[4], **v) for k, v in merged.items()]
    if conn.dialect.name == "postgresql":
        _write_counts_postgresql(conn, rows)
        return
    r = rollups.c
    stmt = insert(rollups)
    stmt = stmt.on_conflict_do_update(
        index_elements=["shop", "period", "start", "dimension", "key"],
        set_={name: getattr(r, name) + getattr(stmt.excluded, name) for name in ADDED},
    )
    conn.execute(stmt, rows)


_KEY_ARRAYS = {"shop": "text[]", "period": "text[]", "start": "timestamp[]", "dimension": "text[]", "key": "text[]"}


def _write_counts_postgresql(conn: Connection, rows: list[dict[str, Any]]) -> None:
    floats = {name for name in ADDED if isinstance(rollups.c[name].type, sa.Float)}
    arrays = {**_KEY_ARRAYS, **{name: "float8[]" if name in floats else "bigint[]" for name in ADDED}}
    names = list(arrays)
    # Each array of one type (psycopg types a list by its first element: 0 then 12.5 fails).
    kinds = {name: (lambda x: x) if name in _KEY_ARRAYS else float if name in floats else int for name in names}
    params = {name: [kinds[name](row[name]) for row in rows] for name in names}
    sources = ", ".join(f"CAST(:{name} AS {kind})" for name, kind in arrays.items())
    added = ", ".join(f"{name} = rollups.{name} + excluded.{name}" for name in ADDED)
    conn.execute(sa.text(
        f"INSERT INTO rollups ({', '.join(names)}) SELECT * FROM unnest({sources}) "
        f"ON CONFLICT (shop, period, start, dimension, key) DO UPDATE SET {added}"
    ), params)


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
    sums = [sa.func.sum(r[name]).label(name) for name in ADDED]
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
