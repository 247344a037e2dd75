"""The SQL store: SQLite (WAL, durable commits) by default, PostgreSQL with the same code."""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import sqlite3
import threading
from concurrent.futures import Future
from contextlib import contextmanager
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable, Iterator, Sequence

import orjson
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.engine import Connection, Engine

from server.models import (
    ANONYMOUS_VISITOR, CatalogItem, Customer, Event, Interacted, Interaction, Order, VisitorProfile, to_naive_utc,
    utcnow,
)
from server import trending
from server.consent.rules import parse_answer_key
from server.countries import to_iso
from server.store import DEFAULT_BUSY_TIMEOUT_MS, StoreBusy, StoreConflict, StoreError, VisitorForgotten
from server.store.group import GroupWriter
from server.store.schema import events, forgotten_visitors, item_sales, item_trends, items, leads, shop_versions, visitors
from server.store.schema import popular_searches as popular_searches_table
from server.store.schema import audience_members, customers, experiment_visitors, shop_keys, webhook_deliveries
from server.store.schema import consent_history, worker_leases
from server.store.schema import coupon_issues, coupon_redemptions, search_counts
from server.search_counts import Tally, add_search_event, merge as merge_searches
from server.urls import web_url
from server.visitors.page_views import PageView, count_view
from server.visitors.state import EMPTY as EMPTY_STATE
from server.visitors.state import HISTORY_EVENTS as HISTORY_STATE_EVENTS
from server.visitors.state import READ_TYPES as STATE_TYPES
from server.visitors.state import StateCache, VisitorState, changes_state, state_columns

MIGRATIONS = Path(__file__).parent / "migrations"

# Imported interactions become events with these types (GA4 names).
INTERACTION_EVENT_TYPES = {"view": "view_item", "cart": "add_to_cart", "purchase": "purchase", "rating": "rating"}


SQLITE_BUSY = 5  # the primary result code of "database is locked"
PG_LOCK_NOT_AVAILABLE = "55P03"  # SQLSTATE of lock_timeout running out (psycopg's LockNotAvailable)


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # what orjson does not write (an integer past 64 bits in event properties)
        return json.dumps(value)


# JSON columns (the visitor state of every page call, event properties) through orjson: a
# 200-event state is written in 15 µs instead of json's 220, and read in 40 instead of 110.
JSON_CODEC = {"json_serializer": _json_text, "json_deserializer": orjson.loads}


def create_engine(url: str, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS) -> Engine:
    """An engine whose every wait is bounded by busy_timeout_ms: for a free pooled connection,
    and for a lock (SQLite's busy timeout, PostgreSQL's lock_timeout).

    hide_parameters: an error's message (and so the log) shows the SQL but not the values
    bound to it, which are visitor data: search terms, visitor and order ids.
    """
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() == "sqlite":
        path = parsed.database
        in_memory = not path or path == ":memory:"
        if not in_memory:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        # An in-memory database has one connection per thread and no pool to wait for.
        pool = {} if in_memory else {"pool_timeout": busy_timeout_ms / 1000}
        connect_args = {"check_same_thread": False, "timeout": busy_timeout_ms / 1000}
        engine = sa.create_engine(url, connect_args=connect_args, hide_parameters=True, **JSON_CODEC, **pool)
        sa.event.listen(engine, "connect", _sqlite_pragmas(busy_timeout_ms))
        return engine
    options = parsed.query.get("options", "")
    options = " ".join(options) if isinstance(options, tuple) else options
    connect_args = {"options": f"{options} -c lock_timeout={busy_timeout_ms}ms".strip()}
    return sa.create_engine(
        url, pool_pre_ping=True, pool_timeout=busy_timeout_ms / 1000, connect_args=connect_args, hide_parameters=True,
        **JSON_CODEC,
    )


# The execution option holding what a write transaction adds to the shared counters (_Additions).
ADDITIONS = "vitrine_additions"


@dataclasses.dataclass
class _Additions:
    """What one write transaction adds to the rows that every writer shares, written when its
    work is done (SqlStore._write_additions)."""

    sales: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)  # (shop, item): order lines
    trends: dict[tuple[str, str, str], float] = dataclasses.field(default_factory=dict)  # (shop, scope, item): log
    searches: Tally = dataclasses.field(default_factory=dict)  # (shop, day, term): [searches, zero results]


def _sqlite_pragmas(busy_timeout_ms: int) -> Callable[[Any, Any], None]:
    def on_connect(dbapi_conn: Any, record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        # FULL: a commit survives power loss, so a 202 for an event means it is on disk.
        cur.execute("PRAGMA synchronous=FULL")
        record.info["synchronous"] = "FULL"
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.close()
        # Trending scores are added up by the upsert itself (SqlStore._add_trends).
        dbapi_conn.create_function("vitrine_log_add", 2, trending.log_add, deterministic=True)

    return on_connect


def _begin_immediate(conn: Connection, synchronous: str) -> None:
    """Start an SQLite write transaction now, with the database's write lock: BEGIN IMMEDIATE.

    Left to itself the driver begins a transaction at the first INSERT, UPDATE or DELETE:
    what a write read before it (a visitor's counters) was read outside the transaction,
    and another process could change it before the write. A deferred BEGIN would fail with
    SQLITE_BUSY, without waiting, when another process committed between the read and the
    write. BEGIN IMMEDIATE takes the lock first (waiting up to the busy timeout), so what
    the transaction reads stays true until it commits; readers never wait for it (WAL).
    `PRAGMA synchronous` cannot change inside a transaction: it goes first, when it changes.

    Not SQLAlchemy's recipe (the driver's isolation_level None and a "begin" event): any
    engine event costs every store call some 16 µs, reads included.
    """
    info = conn.connection.info
    if info.get("synchronous") != synchronous:
        conn.exec_driver_sql(f"PRAGMA synchronous={synchronous}")
        info["synchronous"] = synchronous
    conn.exec_driver_sql("BEGIN IMMEDIATE")


def _ran_out_of_wait(error: Exception) -> str | None:
    """What a bounded wait was for, when this error is one running out; None for other errors."""
    if isinstance(error, sa.exc.TimeoutError):
        return "a free database connection"
    orig = getattr(error, "orig", None)
    if getattr(orig, "sqlstate", None) == PG_LOCK_NOT_AVAILABLE:
        return "a lock held by another transaction"
    if isinstance(orig, sqlite3.OperationalError):
        code = getattr(orig, "sqlite_errorcode", None)
        if (code is not None and code & 0xFF == SQLITE_BUSY) or str(orig).startswith(
            ("database is locked", "database is busy")
        ):
            return "the database, locked by another writer"
    return None


class SqlStore:
    def __init__(
        self, url: str, trending_half_life_hours: float = 72.0, busy_timeout_ms: int = DEFAULT_BUSY_TIMEOUT_MS,
    ) -> None:
        if busy_timeout_ms < 1:  # 0 would mean "no limit" to PostgreSQL, -1 forever to the lock
            raise ValueError(f"the store's busy timeout must be at least 1 ms, not {busy_timeout_ms}")
        self.url = url
        self.half_life_hours = trending_half_life_hours
        self.busy_timeout_ms = busy_timeout_ms
        self.engine = create_engine(url, busy_timeout_ms)
        self.dialect = self.engine.dialect.name
        self._autocommit_reads = self.dialect == "postgresql"
        # SQLite has one writer at a time. Threads queueing on a lock wake as soon as the
        # writer commits; left to SQLite's busy handler they sleep in steps of up to
        # 100 ms, which is what made the tail latency of concurrent page calls.
        self._write_lock = threading.Lock() if self.dialect == "sqlite" else None
        # Visitor states are read and written as their JSON text, parsed once per text (StateCache).
        self.states = StateCache()
        text = sa.bindparam("new_state", type_=sa.Text)
        # SQLite stores the text as it is; PostgreSQL takes it as json (CAST there, since on
        # SQLite a CAST to an unknown type name would read the text as a number).
        self._state_value = text if self.dialect == "sqlite" else sa.cast(text, visitors.c.state.type)
        # The state after an event batch, with the columns copied from it (state_columns).
        self._state_update = _by_key(sa.update(visitors)).ordered_values(
            (visitors.c.state, self._state_value),
            *((visitors.c[name], sa.bindparam(f"new_{name}")) for name in state_columns(None)))
        # The page-view writer's update for views that change the state (built once, as
        # _VIEW_UPDATE is: a flush every 50 ms need not make it and its cache key again).
        self._view_state_update = _VIEW_UPDATE.values(state=self._state_value)
        self._upserts = self._addition_upserts()
        # The event batches' and page views' other statements of every group, built once too.
        self._new_visitors = self._insert(visitors).on_conflict_do_nothing()
        self._events_returning_ids = self._event_insert(events.c.shop, events.c.event_id)
        # Event batches and page views share transactions and commits (server/store/group.py).
        self._writer_conn: Connection | None = None  # the group writer's (_held_connection)
        self._group = GroupWriter(self._group_writing, wait_s=2 * busy_timeout_ms / 1000 + 1.0)

    @contextmanager
    def _bounded(self) -> Iterator[None]:
        """Turns a wait that ran out (a locked database, a held lock, an exhausted pool) into
        StoreBusy, and any other error of the database into StoreError without its values.
        The transaction was rolled back."""
        try:
            yield
        except (sa.exc.DBAPIError, sa.exc.TimeoutError) as error:
            waited_for = _ran_out_of_wait(error)
            if waited_for is not None:
                raise StoreBusy(f"waited {self.busy_timeout_ms} ms for {waited_for}") from None
            if isinstance(error, sa.exc.DBAPIError):
                # A connection the database ended (a restart, an administrator) is dropped
                # from the pool: the same work on a new one succeeds, as after a deadlock.
                conflict = getattr(error.orig, "sqlstate", None) in CONFLICT_STATES or error.connection_invalidated
                raise (StoreConflict if conflict else StoreError)(_describe(error)) from None
            raise

    @contextmanager
    def _reading(self) -> Iterator[Connection]:
        """A connection for reads. On PostgreSQL in autocommit: each statement its own
        transaction, as under READ COMMITTED each sees its own snapshot anyway, without the
        BEGIN before it and the ROLLBACK when the connection goes back to the pool, two round
        trips of the three a visitor's read took (1.1-1.2 -> 0.66 ms, 0.56-0.62 -> 0.46 ms of
        CPU). SQLite's driver begins no transaction for a read in the first place."""
        with self._bounded(), self.engine.connect() as conn:
            if self._autocommit_reads:
                conn.execution_options(isolation_level="AUTOCOMMIT")
            yield conn

    @contextmanager
    def _writing(self, durable: bool = True, held: bool = False) -> Iterator[Connection]:
        """A write transaction, committed when the block ends.

        durable=False is for what the server records on its own (page views): on SQLite
        the commit then skips the fsync (WAL, synchronous=NORMAL), which is three quarters
        of a page call's time; a power cut may lose the last moments of them. Everything
        acknowledged to a client (event batches, imports) is durable.

        held=True is the group writer's (one thread): the transaction runs on a connection
        the writer keeps from one group to the next (_held_connection), not on one checked
        out of the pool and pinged first.

        The sales counters and trending scores the block adds to are written when it is done,
        each table once and in key order, whatever order its jobs came in: on PostgreSQL a
        group transaction then waits for rows another process's transaction shares only once
        it holds everything else it writes, and two of them cannot deadlock over those rows.
        """
        additions = _Additions()
        lock = self._write_lock
        with self._bounded():
            if lock is not None and not lock.acquire(timeout=self.busy_timeout_ms / 1000):
                raise StoreBusy(f"waited {self.busy_timeout_ms} ms for this process's other writers")
            try:
                with self._held_connection() if held else self.engine.connect() as conn:
                    conn.execution_options(**{ADDITIONS: additions})
                    with conn.begin():
                        if lock is not None:
                            _begin_immediate(conn, "FULL" if durable else "NORMAL")
                        yield conn
                        self._write_additions(conn, additions)
            finally:
                if lock is not None:
                    lock.release()

    def _group_writing(self, durable: bool) -> ContextManager[Connection]:
        return self._writing(durable, held=True)

    @contextmanager
    def _held_connection(self) -> Iterator[Connection]:
        """The group writer's own connection, opened on its first group and kept.

        Checking one out of the pool for every group cost two round trips on PostgreSQL (the
        pool's ping, the reset) of a group's dozen, each a wait for the GIL on a busy worker.
        After any error the connection is closed and the next group opens a new one (pinged
        by the pool): one the database dropped fails its group, whose jobs then run again one
        by one (server/store/group.py), the first of them on the new connection."""
        conn = self._writer_conn
        if conn is None or conn.closed:
            conn = self._writer_conn = self.engine.connect()
        try:
            yield conn
        except BaseException:
            self._writer_conn = None
            with contextlib.suppress(Exception):
                conn.close()
            raise

    def close(self) -> None:
        self._group.close()
        if self._writer_conn is not None:
            with contextlib.suppress(Exception):
                self._writer_conn.close()
            self._writer_conn = None
        self.engine.dispose()

    # -- schema ----------------------------------------------------------------------
    def migrate(self) -> str:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS))
        with self._bounded(), self.engine.begin() as conn:  # not _writing(): alembic manages it
            config.attributes["connection"] = conn
            command.upgrade(config, "head")
        return self.schema_version() or ""

    def schema_version(self) -> str | None:
        with self._reading() as conn:
            return MigrationContext.configure(conn).get_current_revision()

    # -- catalog ---------------------------------------------------------------------
    def upsert_items(self, shop: str, new_items: Sequence[CatalogItem]) -> int:
        now = utcnow()
        rows = [_item_row(shop, item, now) for item in new_items]
        if not rows:
            return 0
        stmt = self._insert(items)
        update = {c: stmt.excluded[c] for c in rows[0] if c not in ("shop", "item_id")}
        stmt = stmt.on_conflict_do_update(index_elements=["shop", "item_id"], set_=update)
        with self._writing() as conn:
            for start in range(0, len(rows), 500):
                conn.execute(stmt, rows[start : start + 500])
            bump = self._insert(shop_versions).values(shop=shop, catalog=1)
            conn.execute(bump.on_conflict_do_update(index_elements=["shop"], set_={"catalog": shop_versions.c.catalog + 1}))
        return len(rows)

    def catalog_version(self, shop: str) -> int:
        """A number that changes whenever the shop's catalog does (0: never imported)."""
        query = sa.select(shop_versions.c.catalog).where(shop_versions.c.shop == shop)
        with self._reading() as conn:
            return conn.execute(query).scalar() or 0

    def get_item(self, shop: str, item_id: str) -> CatalogItem | None:
        found = self.get_items(shop, [item_id])
        return found[0] if found else None

    def get_items(self, shop: str, item_ids: Sequence[str]) -> list[CatalogItem]:
        if not item_ids:
            return []
        query = sa.select(items).where(items.c.shop == shop, items.c.item_id.in_(list(item_ids)))
        with self._reading() as conn:
            by_id = {r.item_id: _row_item(r) for r in conn.execute(query)}
        return [by_id[i] for i in item_ids if i in by_id]

    def list_items(
        self, shop: str, *, category: str | None = None, text: str | None = None,
        limit: int = 20, offset: int = 0,
    ) -> list[CatalogItem]:
        query = sa.select(items).where(items.c.shop == shop)
        if category:
            query = query.where(items.c.category == category)
        for word in (text or "").split():
            pattern = f"%{word.lower()}%"
            query = query.where(sa.func.lower(items.c.title + " " + items.c.description).like(pattern))
        query = query.order_by(items.c.title).limit(limit).offset(offset)
        with self._reading() as conn:
            return [_row_item(r) for r in conn.execute(query)]

    def bestsellers(self, shop: str, limit: int = 10, category: str | None = None) -> list[CatalogItem]:
        """Items by number of order lines, most bought first (all time; counts kept per purchase)."""
        query = (
            sa.select(items)
            .join(item_sales, (item_sales.c.shop == items.c.shop) & (item_sales.c.item_id == items.c.item_id))
            .where(items.c.shop == shop, items.c.in_stock.is_(True))
            .order_by(item_sales.c.purchases.desc(), items.c.item_id)
            .limit(limit)
        )
        if category:
            query = query.where(items.c.category == category)
        with self._reading() as conn:
            return [_row_item(r) for r in conn.execute(query)]

    def count_items(self, shop: str) -> int:
        query = sa.select(sa.func.count()).select_from(items).where(items.c.shop == shop)
        with self._reading() as conn:
            return conn.execute(query).scalar_one()

    def categories(self, shop: str) -> list[tuple[str, int]]:
        query = (
            sa.select(items.c.category, sa.func.count())
            .where(items.c.shop == shop, items.c.category != "")
            .group_by(items.c.category)
            .order_by(sa.func.count().desc(), items.c.category)
        )
        with self._reading() as conn:
            return [(r[0], r[1]) for r in conn.execute(query)]

    # -- visitors --------------------------------------------------------------------
    def touch_visitor(
        self, shop: str, visitor_id: str, now: datetime, visit_timeout_s: int,
        country: str = "", device_class: str = "", page_view: bool = True, source: str = "",
        event: Event | None = None,
    ) -> VisitorProfile:
        """Count one page view now (see record_page_views) and return the visitor after it."""
        view = PageView(shop, visitor_id, now, visit_timeout_s, country, device_class, source, event, page_view)
        written = self.record_page_views([view], states=True)
        if not written:
            raise VisitorForgotten(shop, visitor_id)
        return written[0]

    def record_page_views(self, views: Sequence[PageView], states: bool = False,
                          searches: Tally | None = None) -> list[VisitorProfile]:
        """Count page views (server/visitors/page_views.py) in one transaction: the visitors'
        rows locked in key order, each view counted on its row by `count_view`, one update
        per visitor and one insert for the page_view events. Returns each view's visitor
        after it; their visitor state only where a view changed it, or with `states` for all.
        Views of a visitor deleted at their request are dropped (and have no profile in the list).
        `searches`: the searches served meanwhile, added to search_counts in the same transaction.
        Not durable (no fsync on SQLite): a page view was never acknowledged."""
        if not views and not searches:
            return []
        return self._group.run(lambda conn: self._count_views(conn, views, states, searches), durable=False)

    def _count_views(self, conn: Connection, views: Sequence[PageView], states: bool = False,
                     searches: Tally | None = None) -> list[VisitorProfile]:
        now = utcnow()
        if searches:
            self._add_searches(conn, searches)
        views, rows, stated = self._lock_view_rows(conn, views, states)
        after: list[VisitorProfile] = []
        events_rows, answers = [], []
        for view in views:
            key = (view.shop, view.visitor_id)
            before = rows[key]
            profile = rows[key] = count_view(before, view)
            if view.consent is not None and (before is None or before.consent != view.consent):
                answers.append(_consent_row(view))
            after.append(profile)
            if view.event is not None:
                events_rows.append(_event_row(view.shop, view.visitor_id, view.event, now))
            events_rows += [_event_row(view.shop, view.visitor_id, event, now) for event in view.events]
        with_state, without_state = [], []
        for key, profile in sorted(rows.items()):  # every row read has a view counted
            change = dict(
                key_shop=key[0], key_visitor=key[1], new_first_seen=profile.first_seen,
                new_last_seen=profile.last_seen, new_visits=profile.visits, new_page_views=profile.page_views,
                new_country=profile.country, new_device_class=profile.device_class, new_source=profile.source,
                new_gpc=profile.gpc, new_consent=profile.consent, **_visit_values(profile),
            )
            if key in stated:
                state = profile.state or EMPTY_STATE
                text = state.to_text()
                self.states.remember(key, text, state)
                with_state.append({**change, "new_state": text})
            else:
                without_state.append(change)
        if with_state:
            conn.execute(self._view_state_update, with_state)
        if without_state:
            conn.execute(_VIEW_UPDATE, without_state)
        if events_rows:
            self._insert_events(conn, events_rows)
        if answers:
            conn.execute(sa.insert(consent_history), answers)
        return after

    def _lock_view_rows(
        self, conn: Connection, views: Sequence[PageView], states: bool,
    ) -> tuple[list[PageView], dict[tuple[str, str], VisitorProfile | None], set[tuple[str, str]]]:
        """The rows of the views' visitors, made where missing and locked in key order, shop
        by shop: (the views to count, each visitor's profile before them (None: a row made
        here), the visitors whose state is read and written). Views of a visitor deleted at
        their request, queued before it, are dropped: written, they would make the visitor again."""
        by_shop: dict[str, set[str]] = {}
        for view in views:
            by_shop.setdefault(view.shop, set()).add(view.visitor_id)
        rows: dict[tuple[str, str], VisitorProfile | None] = {}
        stated: set[tuple[str, str]] = set()
        for shop, ids in sorted(by_shop.items()):
            first = self._first_views(views, shop)
            changing = self._changing(views, shop, ids, states)
            if self.dialect == "postgresql":  # one statement (_pg_lock_visitors)
                found = list(conn.execute(_PG_LOCK_FOR_VIEWS, {**_pg_lock_params(shop, first, 0), "stated": changing}))
            else:
                gone = self._forgotten(conn, shop, sorted(ids))
                ordered = sorted(ids - gone)
                changing = [v for v in changing if v not in gone]
                found = self._lock_rows_for_views(conn, shop, ordered, first, changing)
            stated |= {(shop, v) for v in changing}
            for row in found:
                profile = _row_profile(row._mapping, self.states.read((shop, row.visitor_id), row.state))
                rows[(shop, row.visitor_id)] = None if profile.visits == 0 else profile
        return [v for v in views if (v.shop, v.visitor_id) in rows], rows, stated

    def _lock_rows_for_views(
        self, conn: Connection, shop: str, ordered: list[str], first: dict[str, datetime], changing: list[str],
    ) -> list[Any]:
        """_lock_view_rows on SQLite (which holds the database's write lock already): the
        missing rows inserted, then every row read (the state only of `changing`)."""
        if not ordered:
            return []
        conn.execute(self._new_visitors, [
            dict(shop=shop, visitor_id=v, first_seen=first[v], last_seen=first[v], visits=0, page_views=0)
            for v in ordered
        ])
        found = []
        for start in range(0, len(ordered), 500):
            chunk = ordered[start : start + 500]
            state = (sa.case((visitors.c.visitor_id.in_(changing), _STATE_CAST)) if changing else sa.null()).label("state")
            query = (sa.select(*_NOT_STATE, state).where(visitors.c.shop == shop, visitors.c.visitor_id.in_(chunk))
                     .order_by(visitors.c.visitor_id).with_for_update())
            found += conn.execute(query).all()
        return found

    @staticmethod
    def _first_views(views: Sequence[PageView], shop: str) -> dict[str, datetime]:
        """Each visitor's first view of these in `shop`: a row made for a visitor seen for the
        first time is seen then, with visits=0 to mark it as made here (count_view counts)."""
        first: dict[str, datetime] = {}
        for view in views:
            if view.shop == shop:
                first.setdefault(view.visitor_id, view.at)
        return first

    @staticmethod
    def _changing(views: Sequence[PageView], shop: str, ids: set[str], states: bool) -> list[str]:
        """The visitors whose state (the largest column, JSON) is read and written: only those
        whose views change it (`states`: all of them). A page without an item (home,
        category, cart) leaves it as it is."""
        if states:
            return sorted(ids)
        return sorted({v.visitor_id for v in views if v.shop == shop and v.event and changes_state(v.event)})

    def get_visitor(self, shop: str, visitor_id: str) -> VisitorProfile | None:
        with self._reading() as conn:
            row = conn.execute(_VISITOR_BY_KEY, {"key_shop": shop, "key_visitor": visitor_id}).first()
        return _row_profile(row._mapping, self.states.read((shop, visitor_id), row.state)) if row else None

    # -- events ----------------------------------------------------------------------
    def record_events(self, shop: str, visitor_id: str, batch: Sequence[Event], country: str = "") -> tuple[int, int]:
        """Store a batch durably; returns (stored, duplicates). Batches that arrive together
        are written together: one transaction, one statement per table for all of them, one
        commit (_store_event_batches).

        `country` is where the request came from (its trending scores count there); empty,
        the visitor's stored country."""
        done = self.submit_events(shop, visitor_id, batch, country)
        try:
            return done.result(timeout=self._group.wait_s)
        except TimeoutError:
            raise StoreBusy(f"the write was not committed within {self._group.wait_s:.1f} s") from None

    @property
    def write_wait_s(self) -> float:
        """How long a write waits for its commit before it is answered StoreBusy."""
        return self._group.wait_s

    def submit_events(self, shop: str, visitor_id: str, batch: Sequence[Event], country: str = "") -> Future:
        """record_events without waiting: the future of (stored, duplicates), set once the
        batch is committed (or its error: VisitorForgotten, StoreBusy). The event endpoint
        awaits it on the event loop, so a batch waiting for its group commit holds no thread."""
        committed = self._group.submit_combined(
            self._store_event_batches, _EventBatch(shop, visitor_id, tuple(batch), country), durable=True)
        answer: Future = Future()

        def settle(done: Future) -> None:
            if not answer.set_running_or_notify_cancel():
                return  # nobody waits any more (the request went away); the batch is committed
            try:
                stored = done.result()
            except BaseException as exc:  # noqa: BLE001 - handed to whoever waits
                answer.set_exception(exc)
                return
            if stored == FORGOTTEN:
                answer.set_exception(VisitorForgotten(shop, visitor_id))
            else:
                answer.set_result((stored, len(batch) - stored))

        committed.add_done_callback(settle)
        return answer

    def _store_event_batches(self, conn: Connection, batches: Sequence[_EventBatch]) -> list[int]:
        """Insert the batches' new events and fold them into counters, aggregates and each
        visitor's state; returns how many events of each batch were new.

        The visitors' rows are locked first, all in key order (see _lock_visitors), then one
        insert takes every batch's events, one update per visitor writes the states, and the
        rows every writer shares (sales, trends) come last, once for all batches."""
        now = utcnow()
        if not any(b.events for b in batches):
            return [0] * len(batches)
        keys = sorted({(b.shop, b.visitor_id) for b in batches if b.events})
        found = self._lock_visitors(conn, keys, now)
        # A visitor deleted at their request whose batch was still on its way: nothing of it.
        gone = {k for k in keys if k not in found and k[1] != ANONYMOUS_VISITOR}
        rows = [_event_row(b.shop, b.visitor_id, event, now) for b in batches if (b.shop, b.visitor_id) not in gone
                for event in b.events]
        # One statement; RETURNING names the rows that went in (the others are an event_id
        # already stored, or an order this visitor already sent).
        inserted = {(r[0], r[1]) for r in self._insert_events(conn, rows)} if rows else set()
        counts: list[int] = []
        changed: dict[tuple[str, str], VisitorState] = {}
        for b in batches:
            key = (b.shop, b.visitor_id)
            if key in gone:
                counts.append(FORGOTTEN)
                continue
            stored: list[Event] = []
            sold: list[str] = []
            trends: list[tuple[str, str, datetime]] = []
            searched: Tally = {}
            for event in b.events:
                if (b.shop, event.event_id) not in inserted:
                    continue
                inserted.discard((b.shop, event.event_id))  # the same id twice is stored once
                stored.append(event)
                add_search_event(searched, b.shop, event)
                if event.type == "purchase":
                    if key in found:  # the shared measurement visitor has no orders to count
                        self._count_order(conn, b.shop, b.visitor_id, event, now)
                    sold += event.item_ids()
                if event.type in trending.WEIGHTS:
                    trends += [(item, event.type, event.ts) for item in event.item_ids()]
            counts.append(len(stored))
            self._add_sales(conn, b.shop, sold)
            if searched:
                self._add_searches(conn, searched)
            if key not in found:  # the shared measurement visitor: no row, no state
                if trends:
                    self._add_trends(conn, b.shop, [(i, t, ts, b.country) for i, t, ts in trends])
                continue
            state, stored_country = found[key]
            if trends:
                country = b.country or stored_country or ""
                self._add_trends(conn, b.shop, [(i, t, ts, country) for i, t, ts in trends])
            updated = state.add(stored)
            if updated is not state:
                found[key] = (updated, stored_country)
                changed[key] = updated
        if changed:
            updates = []
            for key, state in sorted(changed.items()):
                text = state.to_text()
                self.states.remember(key, text, state)
                updates.append(dict(key_shop=key[0], key_visitor=key[1], new_state=text, **_state_values(state)))
            conn.execute(self._state_update, updates)
        return counts

    def _lock_visitors(
        self, conn: Connection, keys: Sequence[tuple[str, str]], now: datetime,
    ) -> dict[tuple[str, str], tuple[VisitorState, str]]:
        """The visitors' states and countries, their rows locked until the transaction ends
        (made where missing: events from a visitor who made no page call), in key order.

        A writer of a visitor takes this lock before anything else it writes (page views do in
        _count_views): two writers of one visitor wait for each other here, and none waits for
        it while holding rows that others need (sales, trends), so on PostgreSQL writers in
        several processes take the rows they share in one order and do not deadlock. The
        shared visitor of measurement without a profile (ANONYMOUS_VISITOR) has no row: every
        such batch of every worker would queue on its lock."""
        keys = [k for k in keys if k[1] != ANONYMOUS_VISITOR]
        found: dict[tuple[str, str], tuple[VisitorState, str]] = {}
        for shop in sorted({k[0] for k in keys}):
            ids = [v for s, v in keys if s == shop]
            if self.dialect == "postgresql":  # one statement, not three (_pg_lock_visitors)
                # visits=1: made by an event batch, the visitor's first (and only) visit so far
                for row in conn.execute(_PG_LOCK_FOR_EVENTS, _pg_lock_params(shop, dict.fromkeys(ids, now), 1)):
                    key = (shop, row.visitor_id)
                    found[key] = (self.states.read(key, row.state), row.country or "")
                continue
            gone = self._forgotten(conn, shop, ids)  # one query for them all
            ids = [v for v in ids if v not in gone]
            if not ids:
                continue
            conn.execute(self._new_visitors, [
                dict(shop=shop, visitor_id=v, first_seen=now, last_seen=now, page_views=0) for v in ids
            ])
            for start in range(0, len(ids), 500):
                query = (sa.select(visitors.c.visitor_id, _STATE_TEXT, visitors.c.country)
                         .where(visitors.c.shop == shop, visitors.c.visitor_id.in_(ids[start : start + 500]))
                         .order_by(visitors.c.visitor_id).with_for_update())
                for row in conn.execute(query):
                    key = (shop, row.visitor_id)
                    found[key] = (self.states.read(key, row.state), row.country or "")
        return found

    def _add_sales(self, conn: Connection, shop: str, item_ids: Iterable[str]) -> None:
        """Count order lines in the sales counters, when the transaction's work is done."""
        additions, now = self._additions(conn)
        for item_id in item_ids:
            additions.sales[(shop, item_id)] = additions.sales.get((shop, item_id), 0) + 1
        if now:
            self._write_additions(conn, additions)

    def _add_trends(self, conn: Connection, shop: str, rows: Iterable[tuple[str, str, datetime, str]]) -> None:
        """Fold (item, event type, time, country) into the decayed scores, when the
        transaction's work is done."""
        additions, now = self._additions(conn)
        for item_id, type_, ts, country in rows:
            part = trending.contribution(trending.WEIGHTS[type_], ts, self.half_life_hours)
            for scope in trending.scopes(country):
                key = (shop, scope, item_id)
                additions.trends[key] = trending.log_add(additions.trends.get(key), part)
        if now:
            self._write_additions(conn, additions)

    def _add_searches(self, conn: Connection, tally: Tally) -> None:
        """Add searches and zero-result searches to search_counts, when the transaction's work is done."""
        additions, now = self._additions(conn)
        merge_searches(additions.searches, [tally])
        if now:
            self._write_additions(conn, additions)

    def _additions(self, conn: Connection) -> tuple[_Additions, bool]:
        """The additions of this connection's write transaction, and False; outside one
        (_writing), new ones and True: write them at once."""
        additions = conn.get_execution_options().get(ADDITIONS)
        return (additions, False) if additions is not None else (_Additions(), True)

    def _addition_upserts(self) -> tuple[Any, Any, Any]:
        """_write_additions' upserts (sales, trends, searches), built once: built for each
        group (and so their cache keys computed anew), a group of 8 event batches on
        PostgreSQL took 10.3 ms in the writer alone, 8.2 ms with these. On PostgreSQL each
        takes its rows as one JSON text (_pg_rows), not one statement per row."""
        def upsert(table: sa.Table, names: Sequence[str]) -> Any:
            insert = self._insert(table)
            if self.dialect == "postgresql":
                rows = _pg_rows(table, names)
                insert = insert.from_select(names, sa.select(*(rows.c[name] for name in names)))
            return insert

        sales = upsert(item_sales, ("shop", "item_id", "purchases"))
        sales = sales.on_conflict_do_update(
            index_elements=["shop", "item_id"], set_={"purchases": item_sales.c.purchases + sales.excluded.purchases}
        )
        trends = upsert(item_trends, ("shop", "scope", "item_id", "log_score"))
        summed = self._log_add(item_trends.c.log_score, trends.excluded.log_score)
        trends = trends.on_conflict_do_update(index_elements=["shop", "scope", "item_id"], set_={"log_score": summed})
        searched = upsert(search_counts, ("shop", "day", "term", "searches", "zero_results"))
        searched = searched.on_conflict_do_update(index_elements=["shop", "day", "term"], set_={
            "searches": search_counts.c.searches + searched.excluded.searches,
            "zero_results": search_counts.c.zero_results + searched.excluded.zero_results,
        })
        return sales, trends, searched

    def _write_additions(self, conn: Connection, additions: _Additions) -> None:
        """Add to the sales counters, trending scores and search counts, each table in key order.

        Each upsert adds to the stored value itself (an increment, a log-add computed by the
        database): writers in several processes never overwrite each other's additions."""
        if not additions.sales and not additions.trends and not additions.searches:
            return
        sales, trends, searched = self._upserts
        batches = [
            (sales, [dict(shop=s, item_id=i, purchases=n) for (s, i), n in sorted(additions.sales.items())]),
            (trends, [dict(shop=s, scope=c, item_id=i, log_score=v) for (s, c, i), v in sorted(additions.trends.items())]),
            (searched, [dict(shop=s, day=d, term=t, searches=n, zero_results=z)
                        for (s, d, t), (n, z) in sorted(additions.searches.items())]),
        ]
        for stmt, rows in batches:
            if rows and self.dialect == "postgresql":  # in the order given: the rows' locks in key order
                conn.execute(stmt, {"rows": _json_rows(rows)})
                continue
            for start in range(0, len(rows), 500):
                conn.execute(stmt, rows[start : start + 500])
        additions.sales.clear()
        additions.trends.clear()
        additions.searches.clear()

    def _log_add(self, a: Any, b: Any) -> Any:
        """log(exp(a) + exp(b)) in SQL: trending.log_add itself on SQLite (a function each
        connection registers), the same formula on PostgreSQL. PostgreSQL's EXP raises on
        underflow, so the difference is floored at -700: from about -37 on, the smaller term
        changes nothing in a double anyway."""
        if self.dialect == "sqlite":
            return sa.func.vitrine_log_add(a, b)
        high, low = sa.func.greatest(a, b), sa.func.least(a, b)
        return high + sa.func.ln(1.0 + sa.func.exp(sa.func.greatest(low - high, -700.0)))

    def trending(self, shop: str, scope: str = trending.GLOBAL, limit: int = 50) -> list[str]:
        """Item ids by decayed popularity in a scope ("" = the shop, "country:GB"), hottest first."""
        query = (
            sa.select(item_trends.c.item_id)
            .where(item_trends.c.shop == shop, item_trends.c.scope == scope)
            .order_by(item_trends.c.log_score.desc(), item_trends.c.item_id)
            .limit(limit)
        )
        with self._reading() as conn:
            return [r[0] for r in conn.execute(query)]

    def popular_searches(
        self, shop: str, since: datetime, limit: int = 10, min_visitors: int = 1,
    ) -> list[tuple[str, int]]:
        """Search terms (lowercased) searched since `since` by at least `min_visitors` distinct
        visitors, by how many visitors searched them. Simulated visitors (the demo's made-up
        month, ids sim-...) are left out: what real visitors are offered is what real ones searched."""
        from server.store.measure_sql import SIMULATED_PREFIX

        searched = (
            sa.select(sa.func.lower(sa.func.trim(events.c.props["search_term"].as_string())).label("term"),
                      events.c.visitor_id)
            .where(events.c.shop == shop, events.c.type == "search", events.c.ts >= since,
                   ~events.c.visitor_id.startswith(SIMULATED_PREFIX, autoescape=True))
            .subquery()
        )
        visitors_n = sa.func.count(sa.distinct(searched.c.visitor_id))
        query = (
            sa.select(searched.c.term, visitors_n)
            .where(searched.c.term != "")
            .group_by(searched.c.term)
            .having(visitors_n >= min_visitors)
            .order_by(visitors_n.desc(), searched.c.term)
            .limit(limit)
        )
        with self._reading() as conn:
            return [(r[0], r[1]) for r in conn.execute(query) if r[0]]

    # -- background jobs -------------------------------------------------------------
    def take_lease(self, name: str, holder: str, seconds: float) -> bool:
        """Take the lease `name` for `seconds` from now, or renew it: True when `holder` has it.

        One statement decides, atomically on both backends: insert the row, or on conflict
        update it only where this holder has it already or it has expired. A row comes back
        only when it was written, so of two workers trying at once exactly one gets it.
        Times are this machine's clock (naive UTC), so the workers' clocks must agree to
        well within the lease (NTP)."""
        now = utcnow()
        stmt = self._insert(worker_leases).values(name=name, holder=holder, expires_at=now + timedelta(seconds=seconds))
        stmt = stmt.on_conflict_do_update(
            index_elements=["name"],
            set_={"holder": stmt.excluded.holder, "expires_at": stmt.excluded.expires_at},
            where=(worker_leases.c.holder == holder) | (worker_leases.c.expires_at < now),
        ).returning(worker_leases.c.holder)
        with self._writing() as conn:
            return conn.execute(stmt).first() is not None

    def release_lease(self, name: str, holder: str) -> None:
        """Give the lease up (a worker stopping cleanly), so another can take it at once."""
        with self._writing() as conn:
            conn.execute(sa.delete(worker_leases).where(worker_leases.c.name == name, worker_leases.c.holder == holder))

    def save_popular_searches(self, shop: str, terms: Sequence[tuple[str, int]], computed_at: datetime) -> None:
        """Replace the shop's popular searches with these (term, visitors), most searched first."""
        table = popular_searches_table
        rows = [dict(shop=shop, rank=n, term=t, visitors=v, computed_at=computed_at) for n, (t, v) in enumerate(terms)]
        with self._writing() as conn:
            conn.execute(sa.delete(table).where(table.c.shop == shop))
            if rows:
                conn.execute(sa.insert(table), rows)

    def saved_popular_searches(self, shop: str, limit: int, computed_since: datetime) -> list[tuple[str, int]]:
        """The shop's popular searches as last saved, if saved since `computed_since`."""
        table = popular_searches_table
        query = (
            sa.select(table.c.term, table.c.visitors)
            .where(table.c.shop == shop, table.c.computed_at >= computed_since)
            .order_by(table.c.rank)
            .limit(limit)
        )
        with self._reading() as conn:
            return [(r[0], r[1]) for r in conn.execute(query)]

    def search_stats(self, shop: str, first: date, last: date, limit: int = 20) -> dict[str, Any]:
        """The shop's counted searches from day `first` to `last` (both included): the totals,
        the `limit` terms that most often found nothing and the `limit` most searched terms,
        each with its searches and zero-result searches."""
        c = search_counts.c
        where = (c.shop == shop, c.day >= first, c.day <= last)
        searches, zero = sa.func.sum(c.searches), sa.func.sum(c.zero_results)
        by_term = sa.select(c.term, searches.label("searches"), zero.label("zero_results")).where(*where).group_by(c.term)
        with self._reading() as conn:
            total, total_zero = conn.execute(sa.select(searches, zero).where(*where)).one()
            zero_terms = conn.execute(by_term.having(zero > 0).order_by(zero.desc(), searches.desc(), c.term).limit(limit))
            zero_rows = [dict(r._mapping) for r in zero_terms]
            top_rows = [dict(r._mapping) for r in conn.execute(by_term.order_by(searches.desc(), c.term).limit(limit))]
        return {"searches": int(total or 0), "zero_results": int(total_zero or 0),
                "zero_result_terms": zero_rows, "top_terms": top_rows}

    def purge_search_counts(self, before: date) -> int:
        """Delete the search counts of the days before `before` (every shop's); how many rows went."""
        with self._writing() as conn:
            return conn.execute(sa.delete(search_counts).where(search_counts.c.day < before)).rowcount or 0

    def count_events_received(self, shop: str, types: Sequence[str], since: datetime | None = None) -> int:
        """Events of these types received since `since` (all of them without it). Imported
        history counts when it was imported, whatever its own timestamps."""
        query = sa.select(sa.func.count()).select_from(events).where(events.c.shop == shop, events.c.type.in_(list(types)))
        if since is not None:
            query = query.where(events.c.received_at >= since)
        with self._reading() as conn:
            return conn.execute(query).scalar_one()

    def purge_events(
        self, shop: str, types: Sequence[str], before: datetime, chunk: int = 5000, visitor_id: str | None = None,
    ) -> int:
        """Delete the shop's events of these types older than `before` (only this visitor's,
        given one), `chunk` rows per transaction so that writers of the web workers get their
        turn in between. Returns how many were deleted."""
        doomed = (
            sa.select(events.c.id)
            .where(events.c.shop == shop, events.c.type.in_(list(types)), events.c.ts < before)
            .limit(chunk)
        )
        if visitor_id is not None:
            doomed = doomed.where(events.c.visitor_id == visitor_id)
        deleted = 0
        while True:
            with self._writing() as conn:
                count = conn.execute(sa.delete(events).where(events.c.id.in_(doomed))).rowcount or 0
            deleted += count
            if count < chunk:
                return deleted

    def _count_order(self, conn: Connection, shop: str, visitor_id: str, event: Event, now: datetime) -> None:
        key = (visitors.c.shop == shop) & (visitors.c.visitor_id == visitor_id)
        if conn.execute(sa.select(visitors.c.visitor_id).where(key)).first() is None:
            conn.execute(
                self._insert(visitors)
                .values(shop=shop, visitor_id=visitor_id, first_seen=now, last_seen=now)
                .on_conflict_do_nothing()
            )
        conn.execute(
            sa.update(visitors)
            .where(key)
            .values(
                orders=visitors.c.orders + 1,
                revenue=visitors.c.revenue + (event.value or 0.0),
                # The newest order's time, whatever order they arrive in (a queued beacon, history).
                last_order_at=sa.case((visitors.c.last_order_at > event.ts, visitors.c.last_order_at), else_=event.ts),
            )
        )

    def import_interactions(self, shop: str, interactions: Iterable[Interaction]) -> int:
        """Add imported history as events, all or nothing; importing a file twice adds nothing."""
        now = utcnow()
        rows, users, seen = [], {}, {}
        for it in interactions:
            vid = imported_visitor_id(it.user_id)
            ts = to_naive_utc(it.timestamp)
            # Identical rows are real (two lines of one order): the n-th copy gets its own
            # id, so re-importing a file adds nothing and no genuine line is dropped.
            base_id = _interaction_event_id(it)
            seen[base_id] = seen.get(base_id, 0) + 1
            event = Event(
                event_id=base_id if seen[base_id] == 1 else f"{base_id[:60]}.{seen[base_id]}", type=INTERACTION_EVENT_TYPES[it.event], ts=ts,
                item_id=it.item_id, value=it.value, props={"source": "import", "user_id": it.user_id},
            )
            rows.append(_event_row(shop, vid, event, now))
            if it.country:
                users[vid] = to_iso(it.country)
            else:
                users.setdefault(vid, "")
        insert = self._event_insert()
        stored = 0
        with self._writing() as conn:
            for start in range(0, len(rows), 1000):
                stored += len(conn.execute(insert, rows[start : start + 1000]).all())
            self._rebuild_imported_visitors(conn, shop, users)
            if stored:
                self._rebuild_aggregates(conn, shop)
        return stored

    def _rebuild_aggregates(self, conn: Connection, shop: str) -> None:
        """Recompute a shop's trending scores and sales counts from all its events (after an import)."""
        if self.dialect == "postgresql":
            # Event batches of other processes add to these tables meanwhile: one committed
            # after the events are read here would be deleted with the rows and not counted
            # again. The lock makes them wait (and their reads not); SQLite has one writer.
            conn.execute(sa.text("LOCK TABLE item_sales, item_trends IN SHARE ROW EXCLUSIVE MODE"))
        countries = dict(conn.execute(sa.select(visitors.c.visitor_id, visitors.c.country).where(visitors.c.shop == shop)).all())
        query = sa.select(events.c.visitor_id, events.c.item_id, events.c.type, events.c.ts, events.c.props).where(
            events.c.shop == shop, events.c.type.in_(list(trending.WEIGHTS))
        )
        rows, sold = [], []
        for vid, item_id, type_, ts, props in conn.execute(query):
            event = Event(event_id="", type=type_, ts=ts, item_id=item_id, props=props)
            rows += [(item, type_, ts, countries.get(vid, "")) for item in event.item_ids()]
            if type_ == "purchase":
                sold += event.item_ids()
        conn.execute(sa.delete(item_trends).where(item_trends.c.shop == shop))
        conn.execute(sa.delete(item_sales).where(item_sales.c.shop == shop))
        self._add_trends(conn, shop, rows)
        self._add_sales(conn, shop, sold)

    def _rebuild_imported_visitors(self, conn: Connection, shop: str, users: dict[str, str]) -> None:
        """Visitor counters of imported customers, recomputed from their events."""
        ids = list(users)
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            purchase = events.c.type == "purchase"
            query = (
                sa.select(
                    events.c.visitor_id,
                    sa.func.min(events.c.ts),
                    sa.func.max(events.c.ts),
                    # An order is one purchase event (imported orders) or the lines sharing a time
                    # (interactions, a line per item).
                    sa.func.count(sa.distinct(sa.case((purchase, sa.func.coalesce(
                        events.c.order_id, sa.cast(events.c.ts, sa.String)))))),
                    sa.func.coalesce(sa.func.sum(sa.case((purchase, events.c.value), else_=0.0)), 0.0),
                    sa.func.max(sa.case((purchase, events.c.ts))),
                )
                .where(events.c.shop == shop, events.c.visitor_id.in_(chunk))
                .group_by(events.c.visitor_id)
            )
            for vid, first, last, orders, revenue, last_order in conn.execute(query).all():
                values = dict(
                    first_seen=first, last_seen=last, visits=max(orders, 1), page_views=0,
                    orders=orders, revenue=float(revenue), last_order_at=last_order,
                )
                if users[vid]:  # an orders import names no country: the one known stays
                    values["country"] = users[vid]
                stmt = self._insert(visitors).values(shop=shop, visitor_id=vid, **values)
                conn.execute(stmt.on_conflict_do_update(index_elements=["shop", "visitor_id"], set_=values))
        rebuild_visitor_states(conn, shop, ids)
        self._customer_sign_ups(conn, shop, ids)

    def _customer_sign_ups(self, conn: Connection, shop: str, visitor_ids: Sequence[str]) -> None:
        """An imported customer's sign-up (customers.signed_up_at) on their visitor row (their
        events, all imported, have none): what audience sizes count as `signed_up`."""
        signed_up = (sa.select(customers.c.signed_up_at)
                     .where(customers.c.shop == visitors.c.shop, customers.c.visitor_id == visitors.c.visitor_id)
                     .scalar_subquery())
        for start in range(0, len(visitor_ids), 500):
            chunk = list(visitor_ids[start : start + 500])
            conn.execute(sa.update(visitors).where(visitors.c.shop == shop, visitors.c.visitor_id.in_(chunk))
                         .values(signed_up_at=sa.func.coalesce(signed_up, visitors.c.signed_up_at)))

    def import_customers(self, shop: str, found: Sequence[Customer]) -> tuple[int, int, int]:
        """Add or replace imported customers' details, all or nothing; (new, updated, forgotten).
        Each gets a visitor row under their imported id (imported_visitor_id), which their orders
        count on. A customer deleted at their request (forgotten_visitors) is left out."""
        now = utcnow()
        rows = [dict(
            shop=shop, visitor_id=imported_visitor_id(c.customer_id), customer_id=c.customer_id, email=c.email.lower(),
            email_sha256=c.email_sha256 or (hashlib.sha256(c.email.lower().encode()).hexdigest() if c.email else ""),
            first_name=c.first_name, signed_up_at=c.signed_up_at, birthday=c.birthday,
            customer_group=c.group, marketing_consent=c.marketing_consent, imported_at=now,
        ) for c in found]
        with self._writing() as conn:
            gone = self._forgotten(conn, shop, [r["visitor_id"] for r in rows])
            rows = [r for r in rows if r["visitor_id"] not in gone]
            ids = [r["visitor_id"] for r in rows]
            known = set()
            for start in range(0, len(ids), 500):
                known |= set(conn.execute(sa.select(customers.c.visitor_id).where(
                    customers.c.shop == shop, customers.c.visitor_id.in_(ids[start : start + 500]))).scalars())
            if rows:
                insert = self._insert(customers)
                upsert = insert.on_conflict_do_update(
                    index_elements=["shop", "visitor_id"],
                    set_={name: insert.excluded[name] for name in rows[0] if name not in ("shop", "visitor_id")})
                for start in range(0, len(rows), 1000):
                    conn.execute(upsert, rows[start : start + 1000])
                conn.execute(self._new_visitors, [
                    dict(shop=shop, visitor_id=r["visitor_id"], first_seen=r["signed_up_at"] or now,
                         last_seen=r["signed_up_at"] or now, visits=1, page_views=0)
                    for r in rows
                ])
            self._customer_sign_ups(conn, shop, ids)
        return len(rows) - len(known), len(known), len(gone)

    def import_orders(self, shop: str, found: Sequence[Order]) -> tuple[int, int]:
        """Add imported orders as purchases of their customers (imported_visitor_id), all or
        nothing; (new, of customers deleted at their request, left out). An order id already
        stored (this file imported before, or the same order under another customer) is not
        counted again."""
        now = utcnow()
        rows, users = [], {}
        for order in found:
            vid = imported_visitor_id(order.customer_id)
            lines = [{"item_id": item, "quantity": quantity} for item, quantity in order.lines]
            event = Event(
                event_id="ord:" + hashlib.sha256(order.order_id.encode()).hexdigest()[:48], type="purchase",
                ts=to_naive_utc(order.timestamp), item_id=order.lines[0][0] if len(order.lines) == 1 else None,
                value=order.value, currency=order.currency or None, order_id=order.order_id,
                props={"source": "import", "customer_id": order.customer_id, **({"items": lines} if lines else {})},
            )
            rows.append(_event_row(shop, vid, event, now))
            users.setdefault(vid, "")
        stored = 0
        with self._writing() as conn:
            gone = self._forgotten(conn, shop, list(users))
            kept = [r for r in rows if r["visitor_id"] not in gone]
            users = {v: c for v, c in users.items() if v not in gone}
            insert = self._event_insert()
            for start in range(0, len(kept), 1000):
                stored += len(conn.execute(insert, kept[start : start + 1000]).all())
            self._rebuild_imported_visitors(conn, shop, users)
            if stored:
                self._rebuild_aggregates(conn, shop)
        return stored, len(rows) - len(kept)

    def all_items(self, shop: str) -> list[CatalogItem]:
        query = sa.select(items).where(items.c.shop == shop).order_by(items.c.item_id)
        with self._reading() as conn:
            return [_row_item(r) for r in conn.execute(query)]

    def interactions(
        self, shop: str, types: Sequence[str] = ("view_item", "add_to_cart", "purchase", "rating"),
    ) -> list[Interacted]:
        """Every visitor-item interaction of these types, oldest first, line items expanded."""
        query = (
            sa.select(events.c.visitor_id, events.c.item_id, events.c.type, events.c.ts, events.c.value,
                      events.c.order_id, events.c.props)
            .where(events.c.shop == shop, events.c.type.in_(list(types)))
            .order_by(events.c.ts, events.c.id)
        )
        found: list[Interacted] = []
        with self._reading() as conn:
            for vid, item_id, type_, ts, value, order_id, props in conn.execute(query):
                basket = order_id or f"{vid}@{ts.isoformat()}"
                lines = (props or {}).get("items") or []
                if len(lines) > 1 or (lines and not item_id):
                    for line in lines:
                        price = line.get("price")
                        line_value = price * line.get("quantity", 1) if price is not None else None
                        found.append(Interacted(vid, str(line["item_id"]), type_, ts, line_value, basket))
                elif item_id:
                    found.append(Interacted(vid, item_id, type_, ts, value, basket))
        return found

    def visitor_attributes(self, shop: str) -> dict[str, VisitorProfile]:
        query = sa.select(visitors).where(visitors.c.shop == shop)
        with self._reading() as conn:
            return {r.visitor_id: _row_profile(r._mapping) for r in conn.execute(query)}

    def count_events(self, shop: str, type: str | None = None) -> int:
        query = sa.select(sa.func.count()).select_from(events).where(events.c.shop == shop)
        if type:
            query = query.where(events.c.type == type)
        with self._reading() as conn:
            return conn.execute(query).scalar_one()

    def visitor_events(self, shop: str, visitor_id: str, limit: int = 100) -> list[Event]:
        query = (
            sa.select(events)
            .where(events.c.shop == shop, events.c.visitor_id == visitor_id)
            .order_by(events.c.ts.desc(), events.c.id.desc())
            .limit(limit)
        )
        with self._reading() as conn:
            return [_row_event(r) for r in conn.execute(query)]

    # -- helpers ---------------------------------------------------------------------
    def _insert_events(self, conn: Connection, rows: list[dict[str, Any]]) -> Iterable[Any]:
        """Insert these events (rows of _event_row), skipping what _event_insert skips; the
        (shop, event_id) of those that went in.

        On PostgreSQL one statement of fixed text, the rows bound as one JSON text
        (json_to_recordset). A VALUES list has as many parameters as the group has events, so
        its text differed from group to group and psycopg parsed it anew each time (15% of an
        event batch's time there); a column bound as an array each (`unnest`) had psycopg
        write every element in Python (about a tenth of the group writer's samples)."""
        if self.dialect != "postgresql":
            return conn.execute(self._events_returning_ids, rows)
        return conn.execute(_PG_INSERT_EVENTS, {"rows": _json_rows(rows)})

    def _event_insert(self, *returning: Any) -> Any:
        """An insert of events that skips rows breaking either unique rule of the table: the
        (shop, event_id) of an event sent again, and the (shop, visitor, order) of a purchase
        sent again under a new event_id. With no conflict target, ON CONFLICT DO NOTHING covers
        both. Count the RETURNING rows, not rowcount: psycopg reports -1 for these inserts."""
        return self._insert(events).on_conflict_do_nothing().returning(*(returning or (events.c.id,)))

    def _insert(self, table: sa.Table) -> Any:
        # Both dialects spell upserts the same way; only the import differs.
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert
        else:
            from sqlalchemy.dialects.sqlite import insert
        return insert(table)

    # -- a visitor's own data (server/privacy/) ---------------------------------------
    # Every table with rows about one visitor, keyed by (shop, visitor_id): what an export
    # shows and an erasure deletes, in the order they are deleted (the visitor's row last).
    # A new table holding visitor rows goes here (tests/test_privacy.py checks the schema).
    VISITOR_TABLES: tuple[sa.Table, ...] = (
        events, leads, experiment_visitors, webhook_deliveries, audience_members, customers, consent_history,
        coupon_issues, coupon_redemptions, visitors)

    def visitor_records(self, shop: str, visitor_id: str) -> dict[str, list[dict[str, Any]]]:
        """Every row that names this visitor, by table name, each row with all its columns
        (oldest first where rows have a time); empty lists when nothing is stored."""
        found: dict[str, list[dict[str, Any]]] = {}
        with self._reading() as conn:
            for table in self.VISITOR_TABLES:
                order = ([table.c.ts] if "ts" in table.c else []) + list(table.primary_key.columns)
                query = sa.select(table).where(table.c.shop == shop, table.c.visitor_id == visitor_id).order_by(*order)
                found[table.name] = [dict(row._mapping) for row in conn.execute(query)]
        return found

    def delete_visitors(
        self, shop: str, visitor_ids: Sequence[str], inactive_before: datetime | None = None,
    ) -> dict[str, int]:
        """Delete every row about these visitors in one transaction; how many went, by table.

        The visitors' rows are locked first, as every writer of a visitor locks its row before
        anything else (_count_views, _lock_visitors): a page view or event batch of theirs being
        written commits first and is deleted with the rest; one that comes after finds no row
        and makes a fresh one. Nothing shared is touched (trending scores, sales counters are
        aggregates), so this waits for no other writer's rows while holding a visitor's.
        With `inactive_before`, only the visitors still last seen before it go (the retention
        purge): one who came back since they were picked keeps everything."""
        ids = sorted(set(visitor_ids))
        counts = {table.name: 0 for table in self.VISITOR_TABLES}
        if not ids:
            return counts
        with self._writing() as conn:
            lock = sa.select(visitors.c.visitor_id).where(visitors.c.shop == shop, visitors.c.visitor_id.in_(ids))
            if inactive_before is not None:
                lock = lock.where(visitors.c.last_seen < inactive_before)
            # FOR UPDATE on PostgreSQL (SQLite's BEGIN IMMEDIATE holds the database already);
            # a row another writer changed meanwhile is checked again against the condition.
            locked = [row[0] for row in conn.execute(lock.order_by(visitors.c.visitor_id).with_for_update())]
            # Without a condition, events of a visitor who has no row go too.
            doomed = ids if inactive_before is None else locked
            if doomed:
                for table in self.VISITOR_TABLES:
                    where = (table.c.shop == shop) & table.c.visitor_id.in_(doomed)
                    counts[table.name] = conn.execute(sa.delete(table).where(where)).rowcount or 0
            if inactive_before is None:  # at their request: what is on its way must not make them again
                now = utcnow()
                conn.execute(self._insert(forgotten_visitors).on_conflict_do_nothing(), [
                    dict(shop=shop, visitor_hash=forgotten_hash(v), forgotten_at=now) for v in ids
                ])
        return counts

    # -- leads (server/leads.py) ---------------------------------------------------------
    def add_lead(self, shop: str, visitor_id: str | None, lead: dict[str, Any]) -> None:
        """Store one sign-up (`visitor_id` None: unlinked). A visitor deleted at their request
        cannot sign up under their old token: VisitorForgotten."""
        with self._writing() as conn:
            if visitor_id is not None and self._forgotten(conn, shop, [visitor_id]):
                raise VisitorForgotten(shop, visitor_id)
            conn.execute(sa.insert(leads).values(shop=shop, visitor_id=visitor_id, ts=utcnow(), **lead))

    def shop_leads(self, shop: str, since: datetime | None = None) -> list[dict[str, Any]]:
        """The shop's leads, oldest first (what `vitrine leads` prints)."""
        query = sa.select(leads).where(leads.c.shop == shop).order_by(leads.c.ts, leads.c.id)
        if since is not None:
            query = query.where(leads.c.ts >= since)
        with self._reading() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def _forgotten(self, conn: Connection, shop: str, visitor_ids: Sequence[str]) -> set[str]:
        """Which of these visitors were deleted at their request (forgotten_visitors)."""
        hashes = {forgotten_hash(v): v for v in visitor_ids}
        found: set[str] = set()
        listed = sorted(hashes)
        for start in range(0, len(listed), 500):
            query = sa.select(forgotten_visitors.c.visitor_hash).where(
                forgotten_visitors.c.shop == shop, forgotten_visitors.c.visitor_hash.in_(listed[start : start + 500]))
            found |= {hashes[row[0]] for row in conn.execute(query)}
        return found

    def is_forgotten(self, shop: str, visitor_id: str) -> bool:
        """Whether this visitor was deleted at their request (their token names nobody now)."""
        with self._reading() as conn:
            return bool(self._forgotten(conn, shop, [visitor_id]))

    def purge_forgotten(self, before: datetime) -> int:
        """Forget the forgotten visitors deleted before `before` (no token of theirs is valid any more)."""
        with self._writing() as conn:
            return conn.execute(sa.delete(forgotten_visitors).where(forgotten_visitors.c.forgotten_at < before)).rowcount or 0

    # -- known customers (server/customers/) ---------------------------------------------
    def shop_key_version(self, shop: str) -> int:
        """The version of the shop's secret key (0 before its first rotation)."""
        with self._reading() as conn:
            version = conn.execute(sa.select(shop_keys.c.version).where(shop_keys.c.shop == shop)).scalar()
        return version or 0

    def rotate_shop_key(self, shop: str) -> int:
        """Bump the version of the shop's secret key; the new version."""
        now = utcnow()
        with self._writing() as conn:
            conn.execute(self._insert(shop_keys).values(shop=shop, version=1, rotated_at=now).on_conflict_do_update(
                index_elements=["shop"], set_={"version": shop_keys.c.version + 1, "rotated_at": now}))
            return conn.execute(sa.select(shop_keys.c.version).where(shop_keys.c.shop == shop)).scalar_one()

    def identified_visitors(self, shop: str, customer_id: str) -> list[str]:
        """The web visitors (browsers) identified as this customer."""
        query = sa.select(visitors.c.visitor_id).where(
            visitors.c.shop == shop, visitors.c.identified_as == imported_visitor_id(customer_id)).order_by(visitors.c.visitor_id)
        with self._reading() as conn:
            return list(conn.execute(query).scalars())

    def identify_visitor(self, shop: str, visitor_id: str, customer_id: str | None, now: datetime) -> VisitorProfile:
        """Link the visitor to the shop's customer `customer_id` (None: unlink them), making
        their row if it is not written yet; the visitor after it, with the customer's orders
        and details. Raises VisitorForgotten for a visitor deleted at their request."""
        linked = imported_visitor_id(customer_id) if customer_id is not None else None
        with self._writing() as conn:
            if self._forgotten(conn, shop, [visitor_id]):
                raise VisitorForgotten(shop, visitor_id)
            # A row made here counts as one visit without a page view: the page view being
            # written (server/visitors/page_views.py) is counted on it.
            conn.execute(self._insert(visitors).values(
                shop=shop, visitor_id=visitor_id, first_seen=now, last_seen=now, visits=1, page_views=0,
                identified_as=linked,
            ).on_conflict_do_update(index_elements=["shop", "visitor_id"], set_={"identified_as": linked}))
            row = conn.execute(_VISITOR_BY_KEY, {"key_shop": shop, "key_visitor": visitor_id}).one()
        return _row_profile(row._mapping, self.states.read((shop, visitor_id), row.state))

    # -- measurement (server/measure/, server/store/measure_sql.py) ----------------------
    def add_measurement_events(self, shop: str, rows: Sequence[tuple[str, Event]], chunk: int = 5000) -> int:
        """Store events as they are, with nothing derived from them (no visitor row, state,
        trend or sales counter) but the search counts of new `search` events that say how many
        results they had, as an event batch counts them: simulated traffic for the dashboard
        and the benchmarks (server/demo/simulate.py). Returns how many were new."""
        added = 0
        for start in range(0, len(rows), chunk):
            now = utcnow()
            given = rows[start : start + chunk]
            part = [_event_row(shop, visitor_id, event, now) for visitor_id, event in given]
            with self._writing() as conn:
                new = {row[0] for row in conn.execute(self._event_insert(events.c.event_id), part)}
                searched: Tally = {}
                for _, event in given:
                    if event.event_id in new:
                        add_search_event(searched, shop, event)
                if searched:
                    self._add_searches(conn, searched)
                added += len(new)
        return added


    def roll_up(self, windows: Any, now: datetime, batch: int = 10000, lag_s: float = 60.0, budget_s: float = 50.0,
                audiences: Any = None) -> Any:
        """Read the events stored since the last run into the rollups and the experiments'
        totals (server/store/measure_sql.py): a RollupRun saying what was read. `audiences(shop)`:
        the shop's AudienceBook, to count by audience (None: not)."""
        from server.store.measure_sql import roll_up

        return roll_up(self._writing, self._insert, windows, now, batch, timedelta(seconds=lag_s), budget_s,
                       audiences=audiences)

    def rollups(self, shop: str, period: str, since: datetime, until: datetime, dimension: str | None = None) -> list[dict[str, Any]]:
        """The shop's counters by `period` ("hour" or "day") from `since` to `until`."""
        from server.store.measure_sql import read_rollups

        with self._reading() as conn:
            return read_rollups(conn, shop, period, since, until, dimension)

    def rollup_sums(self, shop: str, period: str, since: datetime, until: datetime,
                    dimensions: Sequence[str]) -> list[dict[str, Any]]:
        """Each key of these dimensions with its counters summed from `since` to `until`."""
        from server.store.measure_sql import sum_rollups

        with self._reading() as conn:
            return sum_rollups(conn, shop, period, since, until, list(dimensions))

    def experiment_totals(self, shop: str, experiment: str | None = None) -> list[dict[str, Any]]:
        """Each variant's visitors, conversions, orders, revenue and revenue squared summed."""
        from server.store.measure_sql import read_experiment_totals

        with self._reading() as conn:
            return read_experiment_totals(conn, shop, experiment)

    # -- the dashboard's users (server/admin/, server/store/admin_sql.py) ----------------
    def save_admin_user(self, email: str, password_hash: str | None, shop: str, now: datetime) -> bool:
        """Let `email` see `shop` (a new user with `password_hash`); True when the user is new."""
        from server.store.admin_sql import save_user

        with self._writing() as conn:
            return save_user(conn, self._insert, email, password_hash, shop, now)

    def admin_user(self, email: str) -> dict[str, Any] | None:
        """{"email", "password_hash", "created_at", "shops"} of a dashboard user, or None."""
        from server.store.admin_sql import find_user

        with self._reading() as conn:
            return find_user(conn, email)

    def admin_users(self, shop: str) -> list[dict[str, Any]]:
        """The dashboard users who may see `shop`: {"email", "created_at", "added_at"}."""
        from server.store.admin_sql import shop_users

        with self._reading() as conn:
            return shop_users(conn, shop)

    def remove_admin_user(self, email: str, shop: str | None = None) -> int:
        """Take `shop` (None: every shop) from the user; how many they lost."""
        from server.store.admin_sql import remove_user

        with self._writing() as conn:
            return remove_user(conn, email, shop)

    def sign_in_failures(self, keys: Sequence[str], since: datetime) -> dict[str, int]:
        """The dashboard's failed sign-ins of each key since `since` (server/admin/auth.py)."""
        from server.store.admin_sql import count_failures

        with self._reading() as conn:
            return count_failures(conn, keys, since)

    def add_sign_in_failure(self, keys: Sequence[str], at: datetime, forget_before: datetime) -> None:
        """One failed sign-in for each key, in one transaction with the purge of those older
        than `forget_before`: rows of their own, so writers in several processes add up."""
        from server.store.admin_sql import add_failure

        with self._writing() as conn:
            add_failure(conn, keys, at, forget_before)

    def clear_sign_in_failures(self, key: str) -> int:
        from server.store.admin_sql import clear_failures

        with self._writing() as conn:
            return clear_failures(conn, key)

    # -- B2B price lists and reorders (server/b2b/, server/store/b2b_sql.py) ------------
    def import_price_list(self, shop: str, tiers: Sequence[tuple[str, str, int, float]],
                          restricted: Sequence[tuple[str, str]]) -> int:
        """Replace the shop's price list, all or nothing; its new version."""
        from server.store.b2b_sql import replace_price_list

        with self._writing() as conn:
            return replace_price_list(conn, self._insert, shop, tiers, restricted, utcnow())

    def price_list_version(self, shop: str) -> int:
        """A number that changes whenever the shop's price list does (0: never imported)."""
        from server.store.b2b_sql import price_list_version

        with self._reading() as conn:
            return price_list_version(conn, shop)

    def price_list(self, shop: str) -> tuple[list[tuple[str, str, int, float]], list[tuple[str, str]]]:
        from server.store.b2b_sql import price_list

        with self._reading() as conn:
            return price_list(conn, shop)

    def customer_purchases(self, shop: str, customer_id: str, visitor_ids: Sequence[str] = (),
                           limit: int = 200) -> list[tuple[datetime, str | None, str | None, Any]]:
        """(time, order id, item id, props) of the customer's newest purchases, newest first:
        their imported orders and those of these browsers identified as them."""
        from server.store.b2b_sql import purchases

        with self._reading() as conn:
            return purchases(conn, shop, [imported_visitor_id(customer_id), *visitor_ids], limit)

    # -- coupons (server/promotions/, server/store/coupon_sql.py) -------------------------
    def coupon_pool(self, shop: str, pool: str) -> dict[str, Any] | None:
        from server.store.coupon_sql import find_pool

        with self._reading() as conn:
            return find_pool(conn, shop, pool)

    def coupon_pools(self, shop: str) -> list[dict[str, Any]]:
        from server.store.coupon_sql import shop_pools

        with self._reading() as conn:
            return shop_pools(conn, shop)

    def create_coupon_pool(self, shop: str, pool: str, rules: dict[str, Any]) -> bool:
        """The pool with these rules (coupon_pools' columns) unless it exists; True when new."""
        from server.store.coupon_sql import create_pool

        with self._writing() as conn:
            return create_pool(conn, self._insert, shop, pool, rules, utcnow())

    def add_coupon_codes(self, shop: str, pool: str, codes: Sequence[tuple[str, str]], max_uses: int,
                         source: str) -> set[str]:
        """Add (normalized code, display) pairs to the pool; the codes added (not those the shop had)."""
        from server.store.coupon_sql import add_codes

        with self._writing() as conn:
            return add_codes(conn, self._insert, shop, pool, codes, max_uses, source, utcnow())

    def coupon_codes_taken(self, shop: str, codes: Sequence[str]) -> dict[str, str]:
        from server.store.coupon_sql import codes_taken

        with self._reading() as conn:
            return codes_taken(conn, shop, codes)

    def held_coupons(self, shop: str, visitor_ids: Sequence[str]) -> dict[str, str]:
        """The codes these visitors hold with uses left, by pool (an identified browser's and
        its customer's: an apology coupon the shop issued to the customer)."""
        from server.store.coupon_sql import held_codes

        with self._reading() as conn:
            return held_codes(conn, shop, visitor_ids)

    def issue_coupon(self, shop: str, pool: str, visitor_id: str, now: datetime, new: bool = True) -> str | None:
        """The code of the pool this visitor holds, issuing one when they hold none and `new`
        (None: none held, or no code left). VisitorForgotten for a visitor deleted at their request."""
        from server.store.coupon_sql import IssueRaced, issue

        for attempt in range(3):
            try:
                with self._writing() as conn:
                    if self._forgotten(conn, shop, [visitor_id]):
                        raise VisitorForgotten(shop, visitor_id)
                    return issue(conn, self._insert, shop, pool, visitor_id, now, new)
            except IssueRaced:
                if attempt == 2:
                    raise StoreConflict("the visitor was issued a code by another request meanwhile") from None
        return None

    def redeem_coupon(self, shop: str, attempt: dict[str, Any], decide: Callable[..., Any], now: datetime) -> dict[str, Any]:
        """Redeem a code for an order and log the attempt, in one transaction (coupon_sql.redeem)."""
        from server.store.coupon_sql import redeem

        with self._writing() as conn:
            return redeem(conn, shop, attempt, decide, now)

    def coupon_log(self, shop: str, limit: int | None = None) -> list[dict[str, Any]]:
        from server.store.coupon_sql import redemption_log

        with self._reading() as conn:
            return redemption_log(conn, shop, limit)

    def coupon_stats(self, shop: str) -> list[dict[str, Any]]:
        """Per pool: codes, issued, redeemed, redemption rate, revenue, failures by reason."""
        from server.store.coupon_sql import pool_stats

        with self._reading() as conn:
            return pool_stats(conn, shop)

    # -- audiences (server/audiences/) ---------------------------------------------------
    def save_audience_sizes(self, shop: str, day: date, sizes: dict[str, int], counted_at: datetime) -> None:
        """Today's (`day`'s) size of each audience, replacing what that day had."""
        from server.store.schema import audience_snapshots as snaps

        rows = [dict(shop=shop, day=day, audience=a[:64], visitors=n, counted_at=counted_at) for a, n in sizes.items()]
        with self._writing() as conn:
            conn.execute(sa.delete(snaps).where(snaps.c.shop == shop, snaps.c.day == day))
            if rows:
                conn.execute(sa.insert(snaps), rows)

    def audience_history(self, shop: str, since: date) -> list[dict[str, Any]]:
        """{"day", "audience", "visitors"} of every day from `since` that has a count."""
        from server.store.schema import audience_snapshots as snaps

        query = (sa.select(snaps.c.day, snaps.c.audience, snaps.c.visitors)
                 .where(snaps.c.shop == shop, snaps.c.day >= since).order_by(snaps.c.day, snaps.c.audience))
        with self._reading() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def audience_sizes(self, shop: str, book: Any, now: datetime, visit_timeout_s: int) -> Any:
        """How many of the shop's visitors each audience of `book` holds at `now`, in one pass
        over the visitors table (server/store/audience_sql.py): an AudienceSizes."""
        from server.store.audience_sql import count_audiences

        with self._reading() as conn:
            return count_audiences(conn, self.dialect, shop, book, now, visit_timeout_s)

    def audience_customers(self, shop: str, book: Any, audience: str, now: datetime, visit_timeout_s: int) -> list[
            tuple[str, str, str, VisitorProfile]]:
        """The shop's known customers in the audience now, as (customer id, e-mail, e-mail
        SHA-256, the visitor that holds it: their own row or a browser identified as them), one
        per customer, in one statement (server/store/audience_sql.py). Raises NotExportable
        for an audience no stored row can tell."""
        from server.store.audience_sql import audience_customers

        found: dict[str, tuple[str, str, str, VisitorProfile]] = {}
        with self._reading() as conn:
            for row in audience_customers(conn, self.dialect, shop, book, audience, now, visit_timeout_s):
                if row.customer_id not in found:
                    state = VisitorState.from_text(row.state)
                    found[row.customer_id] = (row.customer_id, row.email, row.email_sha256, _row_profile(row._mapping, state))
            # Deleted at their request and imported again since: still forgotten.
            gone = self._forgotten(conn, shop, [imported_visitor_id(c) for c in found])
        return [f for c, f in found.items() if imported_visitor_id(c) not in gone]

    # -- audience webhooks (server/customers/webhooks.py) ---------------------------------
    def hook_members(self, shop: str, hook: str) -> dict[str, str]:
        """The customers a webhook last sent as members: {visitor id: customer id}."""
        query = sa.select(audience_members.c.visitor_id, audience_members.c.customer_id).where(
            audience_members.c.shop == shop, audience_members.c.hook == hook)
        with self._reading() as conn:
            return dict(conn.execute(query).all())

    def record_hook_changes(
        self, shop: str, hook: str, joined: dict[str, str], left: Sequence[str], deliveries: Sequence[dict[str, Any]],
        now: datetime,
    ) -> None:
        """A webhook's new members and leavers, with their deliveries to send, in one transaction."""
        with self._writing() as conn:
            if left:
                for start in range(0, len(left), 500):
                    conn.execute(sa.delete(audience_members).where(
                        audience_members.c.shop == shop, audience_members.c.hook == hook,
                        audience_members.c.visitor_id.in_(list(left[start : start + 500]))))
            if joined:
                conn.execute(self._insert(audience_members).on_conflict_do_nothing(), [
                    dict(shop=shop, hook=hook, visitor_id=v, customer_id=c, joined_at=now) for v, c in joined.items()])
            if deliveries:
                conn.execute(sa.insert(webhook_deliveries), [
                    dict(shop=shop, hook=hook, status="pending", attempts=0, next_attempt_at=now, last_error="",
                         created_at=now, **d) for d in deliveries])

    def due_deliveries(self, now: datetime, limit: int = 500) -> list[dict[str, Any]]:
        """Pending deliveries, oldest first: the due ones and, for keeping each webhook's order,
        the ones waiting behind them."""
        query = (sa.select(webhook_deliveries).where(webhook_deliveries.c.status == "pending")
                 .order_by(webhook_deliveries.c.id).limit(limit))
        with self._reading() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def delivery_tried(
        self, delivery_id: int, status: str, attempts: int, next_attempt_at: datetime | None, error: str,
        delivered_at: datetime | None,
    ) -> None:
        with self._writing() as conn:
            conn.execute(sa.update(webhook_deliveries).where(webhook_deliveries.c.id == delivery_id).values(
                status=status, attempts=attempts, next_attempt_at=next_attempt_at, last_error=error[:500],
                delivered_at=delivered_at))

    def deliveries(self, shop: str, limit: int = 50) -> list[dict[str, Any]]:
        """The shop's newest webhook deliveries, newest first."""
        query = (sa.select(webhook_deliveries).where(webhook_deliveries.c.shop == shop)
                 .order_by(webhook_deliveries.c.id.desc()).limit(limit))
        with self._reading() as conn:
            return [dict(row._mapping) for row in conn.execute(query)]

    def purge_deliveries(self, before: datetime) -> int:
        """Forget deliveries done (delivered or failed) before `before`."""
        with self._writing() as conn:
            return conn.execute(sa.delete(webhook_deliveries).where(
                webhook_deliveries.c.status != "pending", webhook_deliveries.c.created_at < before)).rowcount or 0

    def inactive_visitors(self, shop: str, before: datetime, limit: int) -> list[str]:
        """Up to `limit` of the shop's web visitors last seen before `before`. Imported
        customers (`u:` ids, imported_visitor_id) are not among them: their last_seen is the
        newest order of the shop's own history, which the shop keeps or erases itself. Nor
        is ANONYMOUS_VISITOR, whose events are everyone's measurement (a row made for it
        before it had none would take them all): those go by their age alone."""
        query = (
            sa.select(visitors.c.visitor_id)
            .where(visitors.c.shop == shop, visitors.c.last_seen < before,
                   ~visitors.c.visitor_id.startswith("u:", autoescape=True),
                   visitors.c.visitor_id != ANONYMOUS_VISITOR)
            .limit(limit)
        )
        with self._reading() as conn:
            return [row[0] for row in conn.execute(query)]


# PostgreSQL's deadlock_detected and serialization_failure: the transaction was chosen to
# give way, and running it again is the documented answer.
CONFLICT_STATES = frozenset({"40P01", "40001"})


def _describe(error: sa.exc.DBAPIError) -> str:
    """An error of the database as class, SQLSTATE and statement: no value, no DETAIL."""
    orig = error.orig
    state = getattr(orig, "sqlstate", None) or getattr(orig, "sqlite_errorname", None) or ""
    statement = " ".join((error.statement or "").split())[:300]
    return f"{type(orig).__name__}{f' ({state})' if state else ''} in: {statement}"


# What a combined event writer answers for the batch of a visitor deleted at their request.
FORGOTTEN = -1


def forgotten_hash(visitor_id: str) -> str:
    return hashlib.sha256(visitor_id.encode()).hexdigest()


def imported_visitor_id(user_id: str) -> str:
    """Imported customers live beside web visitors under a prefix that random ids never have."""
    vid = f"u:{user_id}"
    return vid if len(vid) <= 64 else "u:" + hashlib.sha256(user_id.encode()).hexdigest()[:40]


def _interaction_event_id(it: Interaction) -> str:
    key = f"{it.user_id}\x1f{it.item_id}\x1f{it.event}\x1f{it.timestamp.isoformat()}\x1f{it.value}"
    return "imp:" + hashlib.sha256(key.encode()).hexdigest()[:48]


def _item_row(shop: str, item: CatalogItem, now: datetime) -> dict[str, Any]:
    return dict(
        shop=shop, item_id=item.item_id, title=item.title, description=item.description,
        category=item.category, brand=item.brand, price=item.price, currency=item.currency,
        url=item.url, image_url=item.image_url, tags="|".join(item.tags), in_stock=item.in_stock,
        updated_at=now,
    )


def _row_item(row: Any) -> CatalogItem:
    # Imports refuse links that are not web URLs; rows stored before they did may have one.
    return CatalogItem(
        item_id=row.item_id, title=row.title, description=row.description, category=row.category,
        brand=row.brand, price=row.price, currency=row.currency, url=web_url(row.url),
        image_url=web_url(row.image_url),
        tags=tuple(t for t in row.tags.split("|") if t), in_stock=bool(row.in_stock),
    )


def _pg_rows(table: sa.Table, names: Sequence[str]) -> Any:
    """On PostgreSQL, the rows of one JSON text bound as `rows` (a list of objects, _json_rows)
    as a table of these columns of `table`, each of its type there (json_to_recordset): one
    statement of fixed text for any number of rows, and one parameter, which psycopg writes
    at once where a VALUES list or a column bound as an array each it writes value by value."""
    rows = sa.cast(sa.bindparam("rows", type_=sa.Text), sa.JSON)
    return sa.func.json_to_recordset(rows).table_valued(
        *(sa.column(name, table.c[name].type) for name in names)).render_derived(name="r", with_types=True)


_EVENT_COLUMNS = ("shop", "event_id", "visitor_id", "type", "ts", "item_id", "value", "currency", "order_id",
                  "campaign", "props", "received_at")  # what _event_row writes
_EVENT_ROWS = _pg_rows(events, _EVENT_COLUMNS)
# _insert_events on PostgreSQL: what _event_insert does, the rows of one JSON text. Properties
# absent are JSON null, as SQLAlchemy's JSON type writes None.
_PG_INSERT_EVENTS = (
    pg_insert(events)
    .from_select(_EVENT_COLUMNS, sa.select(*(
        sa.func.coalesce(_EVENT_ROWS.c.props, sa.cast(sa.literal("null"), sa.JSON)).label("props") if name == "props"
        else _EVENT_ROWS.c[name] for name in _EVENT_COLUMNS)))
    .on_conflict_do_nothing()
    .returning(events.c.shop, events.c.event_id)
)


def _json_rows(rows: list[dict[str, Any]]) -> str:
    """Rows as one JSON text for json_to_recordset: times as ISO 8601 (which PostgreSQL
    reads), whatever orjson does not write (an integer past 64 bits) through json."""
    try:
        return orjson.dumps(rows, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(rows, default=lambda value: value.isoformat())


def _event_row(shop: str, visitor_id: str, event: Event, now: datetime) -> dict[str, Any]:
    _refuse_non_finite(event)
    return dict(
        shop=shop, event_id=event.event_id, visitor_id=visitor_id, type=event.type, ts=event.ts,
        item_id=event.item_id, value=event.value, currency=event.currency, order_id=event.order_id,
        campaign=event.campaign, props=event.props, received_at=now,
    )


def _refuse_non_finite(event: Event) -> None:
    """Infinity and NaN are no amounts, PostgreSQL's JSON refuses them and SQLite's would be
    unreadable JSON elsewhere: nothing non-finite is written, on either backend. (The paths
    that name where are built only for an event that has one.)"""
    if _finite(event.value) and _finite(event.props):
        return
    pending: list[tuple[str, Any]] = [("value", event.value), ("props", event.props)]
    while pending:
        where, value = pending.pop()
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"event {event.event_id!r}: {where} is {value}, not a finite number")
        if isinstance(value, dict):
            pending += [(f"{where}.{key}", inner) for key, inner in value.items()]
        elif isinstance(value, (list, tuple)):
            pending += [(f"{where}[{n}]", inner) for n, inner in enumerate(value)]


def _finite(value: Any) -> bool:
    """No float in it is infinite or NaN (iterative: nesting of any depth)."""
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, float):
            if not math.isfinite(value):
                return False
        elif isinstance(value, dict):
            pending.extend(value.values())
        elif isinstance(value, (list, tuple)):
            pending.extend(value)
    return True


def _row_event(row: Any) -> Event:
    return Event(
        event_id=row.event_id, type=row.type, ts=row.ts, item_id=row.item_id, value=row.value,
        currency=row.currency, order_id=row.order_id, campaign=row.campaign, props=row.props,
    )


@dataclasses.dataclass(frozen=True)
class _EventBatch:
    shop: str
    visitor_id: str
    events: tuple[Event, ...]
    country: str = ""  # where the request came from; empty: the visitor's stored country


def _by_key(statement: Any) -> Any:
    """`statement` for the visitor named by the parameters key_shop and key_visitor."""
    return statement.where(visitors.c.shop == sa.bindparam("key_shop"), visitors.c.visitor_id == sa.bindparam("key_visitor"))


def _pg_lock_visitors(returning: str) -> Any:
    """On PostgreSQL, in one statement: the rows of these visitors (`ids`, in key order),
    made where missing (first and last seen `seen`, `visits`) and locked until the
    transaction ends, but none for a visitor deleted at their request (forgotten_visitors,
    by the ids' `hashes`); `returning` of each. ON CONFLICT DO UPDATE locks a row that exists
    as SELECT ... FOR UPDATE does, waiting for another writer of it and then returning the
    row as that writer committed it; the update sets nothing that changes. It replaces a
    query for the forgotten, an insert and a SELECT ... FOR UPDATE: three round trips, each
    of which costs a busy worker a wait for the GIL."""
    return sa.text(
        "INSERT INTO visitors (shop, visitor_id, first_seen, last_seen, visits, page_views) "
        "SELECT CAST(:shop AS VARCHAR), u.visitor_id, u.seen, u.seen, CAST(:visits AS INTEGER), 0 "
        "FROM unnest(CAST(:ids AS VARCHAR[]), CAST(:hashes AS VARCHAR[]), CAST(:seen AS TIMESTAMP[])) "
        "AS u(visitor_id, visitor_hash, seen) "
        "WHERE NOT EXISTS (SELECT 1 FROM forgotten_visitors AS f "
        "WHERE f.shop = CAST(:shop AS VARCHAR) AND f.visitor_hash = u.visitor_hash) "
        "ORDER BY u.visitor_id "
        f"ON CONFLICT (shop, visitor_id) DO UPDATE SET shop = EXCLUDED.shop RETURNING {returning}"
    )


def _pg_lock_params(shop: str, seen: dict[str, datetime], visits: int) -> dict[str, Any]:
    ids = sorted(seen)
    return {"shop": shop, "ids": ids, "hashes": [forgotten_hash(v) for v in ids], "seen": [seen[v] for v in ids],
            "visits": visits}


# The visitor state as its stored JSON text (parsed by StateCache, once per text).
_STATE_CAST = sa.cast(visitors.c.state, sa.Text)
_STATE_TEXT = _STATE_CAST.label("state")
_NOT_STATE = [c for c in visitors.c if c.name != "state"]
# The visitors' rows an event batch locks (_lock_visitors): their states and countries.
_PG_LOCK_FOR_EVENTS = _pg_lock_visitors(
    "visitors.visitor_id, CAST(visitors.state AS TEXT) AS state, visitors.country")
# The rows page views lock (_count_views): every column, the state only of the `stated` ids.
_PG_LOCK_FOR_VIEWS = _pg_lock_visitors(
    ", ".join(f"visitors.{c.name}" for c in _NOT_STATE)
    + ", CASE WHEN visitors.visitor_id = ANY(CAST(:stated AS VARCHAR[])) THEN CAST(visitors.state AS TEXT) END AS state")
# The row of the customer a visitor identified as (visitors.identified_as), with their details.
_CUSTOMER_ROW = visitors.alias("customer_row")
_CUSTOMER_COLUMNS = (
    _CUSTOMER_ROW.c.orders.label("customer_orders"), _CUSTOMER_ROW.c.revenue.label("customer_revenue"),
    _CUSTOMER_ROW.c.last_order_at.label("customer_last_order_at"),
    _CUSTOMER_ROW.c.signed_up_at.label("customer_signed_up_at"),
    customers.c.customer_id.label("customer_id"), customers.c.first_name.label("customer_first_name"),
    customers.c.birthday.label("customer_birthday"), customers.c.customer_group.label("customer_group"),
)
_WITH_CUSTOMER = visitors.outerjoin(
    _CUSTOMER_ROW, (_CUSTOMER_ROW.c.shop == visitors.c.shop) & (_CUSTOMER_ROW.c.visitor_id == visitors.c.identified_as),
).outerjoin(customers, (customers.c.shop == visitors.c.shop) & (customers.c.visitor_id == visitors.c.identified_as))
# A visitor's row, the one read of a page call: built once, so that each call neither makes
# the statement nor works out its cache key again. An identified visitor's customer comes
# with it (primary-key joins, nothing for an anonymous visitor's NULL).
_VISITOR_BY_KEY = _by_key(sa.select(*_NOT_STATE, _STATE_TEXT, *_CUSTOMER_COLUMNS).select_from(_WITH_CUSTOMER))


def _state_values(state: VisitorState) -> dict[str, Any]:
    """The columns copied from the state (state_columns), as the state's update binds them."""
    return {f"new_{name}": value for name, value in state_columns(state).items()}


# What the page-view writer sets on a visitor's row (and the state, where its views change it).
_VIEW_UPDATE = _by_key(sa.update(visitors)).values(
    first_seen=sa.bindparam("new_first_seen"), last_seen=sa.bindparam("new_last_seen"),
    visits=sa.bindparam("new_visits"), page_views=sa.bindparam("new_page_views"),
    country=sa.bindparam("new_country"), device_class=sa.bindparam("new_device_class"),
    source=sa.bindparam("new_source"), gpc=sa.bindparam("new_gpc"), consent=sa.bindparam("new_consent"),
    **{name: sa.bindparam(f"new_{name}") for name in ("visit_page_views", "previous_seen", "landing_page",
                                                     "referrer_domain", "source_name", "utm_campaign")},
)


def _visit_values(profile: VisitorProfile) -> dict[str, Any]:
    """The latest visit's columns of a visitor's row, as _VIEW_UPDATE binds them."""
    return dict(
        new_visit_page_views=profile.visit_page_views, new_previous_seen=profile.previous_seen,
        new_landing_page=profile.landing_page[:512], new_referrer_domain=profile.referrer_domain[:255],
        new_source_name=profile.source_name[:128], new_utm_campaign=profile.utm_campaign[:128],
    )


def _consent_row(view: PageView) -> dict[str, Any]:
    """The consent_history row of a page view whose answer changed the visitor's."""
    answer = parse_answer_key(view.consent) or {}
    return dict(
        shop=view.shop, visitor_id=view.visitor_id, ts=view.at, source=view.consent_source[:64],
        personalization=answer.get("personalization"), analytics=answer.get("analytics"), gpc=view.gpc,
    )


def _row_profile(row: Any, state: VisitorState | None = None) -> VisitorProfile:
    """The visitor of a row; its state as given (read through StateCache), else from the row's parsed JSON."""
    values = dict(
        visitor_id=row["visitor_id"], first_seen=row["first_seen"], last_seen=row["last_seen"],
        visits=row["visits"], page_views=row["page_views"], orders=row.get("orders", 0),
        revenue=row.get("revenue", 0.0), last_order_at=row.get("last_order_at"),
        country=row.get("country", ""), device_class=row.get("device_class", ""),
        source=row.get("source", ""), new_visit=False,
        state=state if state is not None else VisitorState.from_json(row.get("state")),
        gpc=bool(row.get("gpc", False)), consent=row.get("consent"), visit_page_views=row.get("visit_page_views") or 0,
        previous_seen=row.get("previous_seen"), landing_page=row.get("landing_page") or "",
        referrer_domain=row.get("referrer_domain") or "", source_name=row.get("source_name") or "",
        utm_campaign=row.get("utm_campaign") or "",
    )
    return VisitorProfile(**{**values, **_customer_values(row)})


def _customer_values(row: Any) -> dict[str, Any]:
    """An identified visitor's customer, from the joined columns (_VISITOR_BY_KEY): the
    customer's imported orders where they are more than this browser's own."""
    linked = row.get("identified_as")
    if not linked:
        return {}
    values: dict[str, Any] = {
        "customer_id": row.get("customer_id") or linked.removeprefix("u:"),
        "first_name": row.get("customer_first_name") or "",
        "customer_signed_up_at": row.get("customer_signed_up_at"),
        "birthday": row["customer_birthday"].isoformat() if row.get("customer_birthday") else "",
        "customer_group": row.get("customer_group") or "",
    }
    orders = row.get("customer_orders")
    if orders is not None and orders > (row.get("orders") or 0):
        values.update(orders=orders, revenue=float(row.get("customer_revenue") or 0.0))
    last = row.get("customer_last_order_at")
    if last is not None and (row.get("last_order_at") is None or last > row["last_order_at"]):
        values["last_order_at"] = last
    return values


def rebuild_visitor_states(
    conn: Connection, shop: str | None = None, visitor_ids: Sequence[str] | None = None, columns: bool = True,
) -> int:
    """The visitor state of these visitors (or every visitor), rebuilt from their events: for
    a migration and after an import, never on a request. Returns how many were written.
    `columns`: write the columns copied from the state too (state_columns; False for the
    migrations that come before them)."""
    query = sa.select(events).where(events.c.type.in_(sorted(STATE_TYPES)))
    if shop is not None:
        query = query.where(events.c.shop == shop)
    chunks = [list(visitor_ids[i : i + 500]) for i in range(0, len(visitor_ids), 500)] if visitor_ids is not None else [None]
    written = 0
    for chunk in chunks:
        selected = query.where(events.c.visitor_id.in_(chunk)) if chunk is not None else query
        by_visitor: dict[tuple[str, str], list[Event]] = {}
        ordered = selected.order_by(events.c.shop, events.c.visitor_id, events.c.ts.desc(), events.c.id.desc())
        for row in conn.execute(ordered):
            kept = by_visitor.setdefault((row.shop, row.visitor_id), [])
            if len(kept) < 4 * HISTORY_STATE_EVENTS:  # enough to fill the state after filtering
                kept.append(_row_event(row))
        for (shop_id, vid), newest_first in by_visitor.items():
            state = VisitorState.from_events(newest_first)
            key = (visitors.c.shop == shop_id) & (visitors.c.visitor_id == vid)
            values = {"state": state.to_json(), **(state_columns(state) if columns else {})}
            written += conn.execute(sa.update(visitors).where(key).values(**values)).rowcount or 0
    return written
