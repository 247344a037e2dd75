"""Several processes writing for the same shop at once lose nothing and count nothing twice.

Four processes (multiprocessing, spawn) each open their own store and, released together,
write from four threads each (so each process's writer groups them into shared transactions) the same shop's page views of one visitor, event batches viewing and carting the same
items, the same orders of one visitor and one order number used by several visitors. The
totals are then exact: page views, orders, revenue, sales counters, the visitor state, and
the trending scores equal the sum of the stored events' contributions (server/trending.py).
On PostgreSQL (a database of this module's own) and on SQLite (one file).
"""

from __future__ import annotations

import multiprocessing
import queue
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa

from conftest import new_postgres_database
from server import trending
from server.models import Event
from server.store import open_store
from server.store.schema import events as events_table
from server.store.schema import item_sales, item_trends
from server.visitors.state import HISTORY_EVENTS, VisitorState

SHOP = "demo"
PROCESSES = 4
THREADS = 4  # writing threads in each process
T0 = datetime(2024, 3, 1, 12, 0, 0)
VISIT_TIMEOUT_S = 30 * 60
HALF_LIFE_H = 72.0
# Generous: the processes share two cores with the rest of the machine; this test is about
# what is written, tests/test_store.py about how long a writer may wait.
BUSY_MS = 15_000
ITEMS = [f"i{n}" for n in range(6)]
SHARED = "v-shared"  # the visitor every process writes for
COUNTRIES = {SHARED: "GB", **{f"buyer-{w}": "US" for w in range(PROCESSES)},
             **{f"browser-{w}": ("FR", "DE", "")[w % 3] for w in range(PROCESSES)}}

PAGE_VIEWS = 12  # page views of the shared visitor per process
SHARED_BATCHES = 2  # batches of 10 views and carts by the shared visitor per process
ORDERS = 4  # orders of the shared visitor, each sent by every process under its own event id
BROWSER_BATCHES = 8  # batches of 10 views and carts of the same items, per process


@dataclass(frozen=True)
class Write:
    visitor: str
    events: tuple[Event, ...]
    page_view: bool = False  # touch_visitor with its page view, else record_events


def workload(w: int) -> list[Write]:
    """What process `w` sends, interleaved so that every kind of write meets the others."""
    def at(seconds: float) -> datetime:
        return T0 + timedelta(seconds=seconds)

    def browsing(prefix: str, n: int, start: float) -> tuple[Event, ...]:
        return tuple(
            Event(f"{prefix}-{k}", ("view_item", "add_to_cart")[k % 2], at(start + k), item_id=ITEMS[(k + n) % len(ITEMS)])
            for k in range(10)
        )

    kinds: list[list[Write]] = [
        [Write(SHARED, (Event(f"pv-{w}-{k}", "page_view", at(w * 60 + k), item_id=ITEMS[k % len(ITEMS)]),), True)
         for k in range(PAGE_VIEWS)],
        [Write(SHARED, browsing(f"vs-{w}-{b}", b, w * 60 + b * 10)) for b in range(SHARED_BATCHES)],
        [Write(SHARED, (_order(f"po-{w}-{k}", k),)) for k in range(ORDERS)],
        # The same batch (the same event ids) from every process: stored once.
        [Write(SHARED, browsing("dup", 0, 300))],
        # One order number, a different visitor in each process: an order for each.
        [Write(f"buyer-{w}", (Event(f"pc-{w}", "purchase", at(400 + w), item_id="i0", value=7.5, currency="GBP",
                                    order_id="O-common"),))],
        [Write(f"browser-{w}", browsing(f"br-{w}-{b}", b, 500 + w * 100 + b * 10)) for b in range(BROWSER_BATCHES)],
    ]
    writes: list[Write] = []
    while any(kinds):
        for kind in kinds:
            if kind:
                writes.append(kind.pop(0))
    return writes


def _order(event_id: str, k: int) -> Event:
    """Order O-k of the shared visitor: the same in every process but for the event id."""
    lines = [{"item_id": ITEMS[k], "quantity": 1, "price": 4.0}, {"item_id": ITEMS[k + 1], "quantity": 2, "price": 3.0 + k}]
    return Event(event_id, "purchase", T0 + timedelta(minutes=k), value=10.0 + k, currency="GBP", order_id=f"O-{k}",
                 props={"items": lines})


def any_copy(event_id: str) -> str:
    """The id of the shared visitor's order whatever process sent it: po-<w>-<k> -> po-*-<k>."""
    return re.sub(r"^po-\d+-", "po-*-", event_id)


def _write(url: str, w: int, start, results) -> None:
    """One process: its own store, released with the others, then its workload from THREADS
    threads, whose writes the store's writer thread groups into shared transactions."""
    store = open_store(url, HALF_LIFE_H, busy_timeout_ms=BUSY_MS)
    accepted, errors = [], []

    def send(writes: list[Write]) -> None:
        for write in writes:
            try:
                if write.page_view:
                    store.touch_visitor(SHOP, write.visitor, write.events[0].ts, VISIT_TIMEOUT_S, event=write.events[0])
                else:
                    accepted.append(store.record_events(SHOP, write.visitor, write.events)[0])
            except Exception as exc:  # noqa: BLE001 - reported to the test, which fails on any
                errors.append(f"{type(exc).__name__}: {exc}")

    try:
        store.get_visitor(SHOP, SHARED)  # connected before the start
        writes = workload(w)
        threads = [threading.Thread(target=send, args=(writes[n::THREADS],)) for n in range(THREADS)]
        start.wait(60)
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        store.close()
        results.put((w, sum(accepted), errors))


# -- what one writer would have stored ----------------------------------------------------


@dataclass
class Expected:
    events: dict[str, tuple[str, Event]]  # event id -> (visitor, event): what must be stored once
    page_views: int  # of the shared visitor
    accepted: int  # events record_events reported as new, over all processes

    @property
    def purchases(self) -> list[tuple[str, Event]]:
        return [(v, e) for v, e in self.events.values() if e.type == "purchase"]

    def orders(self, visitor: str) -> tuple[int, float]:
        mine = [e for v, e in self.purchases if v == visitor]
        return len(mine), sum(e.value or 0.0 for e in mine)

    def sales(self) -> dict[str, int]:
        return dict(Counter(item for _, e in self.purchases for item in e.item_ids()))

    def trends(self) -> dict[tuple[str, str], float]:
        scores: dict[tuple[str, str], float] = {}
        for visitor, event in sorted(self.events.values(), key=lambda ve: ve[1].event_id):
            if event.type not in trending.WEIGHTS:
                continue
            part = trending.contribution(trending.WEIGHTS[event.type], event.ts, HALF_LIFE_H)
            for item in event.item_ids():
                for scope in trending.scopes(COUNTRIES[visitor]):
                    scores[(scope, item)] = trending.log_add(scores.get((scope, item)), part)
        return scores

    def state_of(self, visitor: str) -> list[tuple[str, float, tuple[str, ...]]]:
        state = VisitorState().add(e for v, e in self.events.values() if v == visitor)
        return sorted(entry[:3] for entry in state.recent)


def expected() -> Expected:
    setup = Event("pv-setup", "page_view", T0 - timedelta(seconds=1), item_id=ITEMS[0])
    stored: dict[str, tuple[str, Event]] = {setup.event_id: (SHARED, setup)}
    orders_seen: set[tuple[str, str]] = set()
    for w in range(PROCESSES):
        for write in workload(w):
            for event in write.events:
                if event.order_id and (write.visitor, event.order_id) in orders_seen:
                    continue  # the same order of the same visitor, under another event id
                if event.order_id:
                    orders_seen.add((write.visitor, event.order_id))
                stored.setdefault(event.event_id, (write.visitor, event))
    return Expected(stored, page_views=1 + PROCESSES * PAGE_VIEWS, accepted=sum(
        1 for _, e in stored.values() if e.type != "page_view"))


# -- the stores -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def postgres_database() -> Iterator[str]:
    """A database of this module's own, dropped at the end."""
    with new_postgres_database("vitrine_concurrency") as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_database")


def run_processes(url: str) -> list[tuple[int, int, list[str]]]:
    """The workloads of PROCESSES processes, started together; each one's (w, accepted, errors)."""
    ctx = multiprocessing.get_context("spawn")
    start, results = ctx.Barrier(PROCESSES), ctx.Queue()
    processes = [ctx.Process(target=_write, args=(url, w, start, results)) for w in range(PROCESSES)]
    for process in processes:
        process.start()
    reports = []
    deadline = time.monotonic() + 120
    try:
        while len(reports) < PROCESSES:
            try:
                reports.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                pytest.fail(f"only {len(reports)} of {PROCESSES} writer processes finished: {reports}")
    finally:
        for process in processes:
            process.join(10)
            if process.is_alive():
                process.kill()
    assert [p.exitcode for p in processes] == [0] * PROCESSES
    return sorted(reports)


def test_processes_writing_at_once_lose_nothing_and_count_nothing_twice(store_url: str) -> None:
    store = open_store(store_url, HALF_LIFE_H)
    try:
        store.migrate()
        for visitor, country in COUNTRIES.items():  # the visitors exist, with their countries
            store.touch_visitor(SHOP, visitor, T0 - timedelta(seconds=1), VISIT_TIMEOUT_S, country=country,
                                page_view=False)
        setup = Event("pv-setup", "page_view", T0 - timedelta(seconds=1), item_id=ITEMS[0])
        store.touch_visitor(SHOP, SHARED, setup.ts, VISIT_TIMEOUT_S, event=setup)

        reports = run_processes(store_url)
        assert [errors for _, _, errors in reports] == [[]] * PROCESSES
        want = expected()
        # Each new event was acknowledged as new by exactly one process.
        assert sum(accepted for _, accepted, _ in reports) == want.accepted

        with store.engine.connect() as conn:
            stored = Counter(r[0] for r in conn.execute(sa.select(events_table.c.event_id)
                                                         .where(events_table.c.shop == SHOP)))
            sales = dict(conn.execute(sa.select(item_sales.c.item_id, item_sales.c.purchases)
                                      .where(item_sales.c.shop == SHOP)).all())
            scores = {(r[0], r[1]): r[2] for r in conn.execute(
                sa.select(item_trends.c.scope, item_trends.c.item_id, item_trends.c.log_score)
                .where(item_trends.c.shop == SHOP))}
        # Every event once and nothing else; of an order sent by every process, one copy.
        assert Counter(map(any_copy, stored.elements())) == Counter(map(any_copy, want.events))

        shared = store.get_visitor(SHOP, SHARED)
        assert shared.page_views == want.page_views
        assert shared.visits == 1
        orders, revenue = want.orders(SHARED)
        assert orders == ORDERS and (shared.orders, shared.revenue) == (ORDERS, pytest.approx(revenue))
        for w in range(PROCESSES):
            buyer = store.get_visitor(SHOP, f"buyer-{w}")
            assert (buyer.orders, buyer.revenue) == (1, pytest.approx(7.5))

        assert sales == want.sales()
        assert set(scores) == set(want.trends())
        for key, score in want.trends().items():
            assert scores[key] == pytest.approx(score, abs=1e-9), key

        # The visitor state holds every event of the shared visitor (fewer than it keeps).
        entries = sorted(entry[:3] for entry in shared.state.recent)
        assert len(want.state_of(SHARED)) < HISTORY_EVENTS
        assert entries == want.state_of(SHARED)
    finally:
        store.close()
