"""Page views written behind the answer (server/visitors/page_views.py), on a real store.

A page call's answer counts every view of its visitor, written or not; every view is
written once; and a page call never waits for the write."""

from __future__ import annotations

import sqlite3
import threading
import time
from datetime import timedelta

import pytest

from server.models import Event, utcnow
from server.store import open_store
from server.visitors.page_views import PageView, PageViewWriter, count_view

from conftest import new_postgres_database

TIMEOUT_S = 1800


def view(visitor: str, n: int, at=None, **kw) -> PageView:
    at = at or utcnow()
    event = Event(event_id=f"pv:{visitor}-{n}", type="page_view", ts=at, item_id=f"item-{n % 5}",
                  props={"page_type": "product"})
    return PageView("shop", visitor, at, TIMEOUT_S, event=event, **kw)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path):
    if request.param == "sqlite":
        s = open_store(f"sqlite:///{tmp_path / 'v.db'}")
        s.migrate()
        yield s
        s.close()
        return
    with new_postgres_database("pageviews") as url:
        s = open_store(url)
        s.migrate()
        yield s
        s.close()


def test_count_view_starts_visits_and_keeps_the_visit_source() -> None:
    t0 = utcnow()
    first = count_view(None, view("v", 0, t0, source="social", country="GB"))
    assert (first.visits, first.page_views, first.new_visit, first.source, first.country) == (1, 1, True, "social", "GB")
    inside = count_view(first, view("v", 1, t0 + timedelta(minutes=5), source="internal"))
    assert (inside.visits, inside.page_views, inside.new_visit, inside.source, inside.country) == (1, 2, False, "social", "GB")
    later = count_view(inside, view("v", 2, t0 + timedelta(hours=2), source="email"))
    assert (later.visits, later.page_views, later.new_visit, later.source) == (2, 3, True, "email")
    assert [e.items for e in later.state.events()] == [("item-2",), ("item-1",), ("item-0",)]


def test_an_answer_counts_the_views_not_written_yet_and_each_is_written_once(store) -> None:
    writer = PageViewWriter(store, flush_interval_s=0.2)
    try:
        profiles = [writer.record(view("v1", n), known=n > 0) for n in range(3)]
        assert [p.page_views for p in profiles] == [1, 2, 3]
        assert store.get_visitor("shop", "v1") is None  # nothing written yet: the answers did not wait
        assert writer.flush()
        stored = store.get_visitor("shop", "v1")
        assert (stored.visits, stored.page_views) == (1, 3)
        assert store.count_events("shop", "page_view") == 3
        assert [e.items for e in stored.state.events()] == [("item-2",), ("item-1",), ("item-0",)]
        # Read back from the store once written.
        assert writer.record(view("v1", 3)).page_views == 4
    finally:
        writer.close()
    assert store.get_visitor("shop", "v1").page_views == 4  # close() wrote the last one


def test_concurrent_page_calls_of_one_visitor_count_each_view_once_while_batches_are_written(store) -> None:
    # Four request threads, one visitor, a flush every millisecond: reads race the commits.
    writer = PageViewWriter(store, flush_interval_s=0.001)
    seen: list[int] = []
    lock = threading.Lock()
    per_thread = 60

    def browse(t: int) -> None:
        for n in range(per_thread):
            profile = writer.record(view("busy", t * 1000 + n))
            with lock:
                seen.append(profile.page_views)

    writer.record(view("busy", 99999), known=False)
    threads = [threading.Thread(target=browse, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert writer.flush()
        total = 4 * per_thread + 1
        # Every answer saw every view before it, and no view twice: the counts are 2..total, each once.
        assert sorted(seen) == list(range(2, total + 1))
        assert store.get_visitor("shop", "busy").page_views == total
        assert store.count_events("shop", "page_view") == total
        assert writer.written == total and writer.dropped == 0
    finally:
        writer.close()


def test_a_page_call_does_not_wait_for_its_visitors_batch_being_written(tmp_path) -> None:
    # The visitor's second view is being written, held up by another connection's write lock:
    # their next page call is answered at once, with it counted, and nothing is counted twice.
    store = open_store(f"sqlite:///{tmp_path / 'v.db'}", busy_timeout_ms=5000)
    store.migrate()
    writer = PageViewWriter(store, flush_interval_s=0.01)
    try:
        writer.record(view("v", 0), known=False)
        assert writer.flush()
        other = sqlite3.connect(tmp_path / "v.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        try:
            assert writer.record(view("v", 1)).page_views == 2
            deadline = time.monotonic() + 5
            while not writer._entries[("shop", "v")].in_flight and time.monotonic() < deadline:
                time.sleep(0.005)
            assert writer._entries[("shop", "v")].in_flight == 1  # taken by a flush, not committed
            started = time.perf_counter()
            third = writer.record(view("v", 2))
            assert time.perf_counter() - started < 0.5  # not the 5 s the commit waits
            assert (third.page_views, [e.items for e in third.state.events()][:2]) == (3, [("item-2",), ("item-1",)])
        finally:
            other.rollback()
            other.close()
        assert writer.flush()
        # Read back with the batch written: each view once.
        assert writer.record(view("v", 3)).page_views == 4
        assert writer.flush()
        assert store.get_visitor("shop", "v").page_views == 4
        assert store.count_events("shop", "page_view") == 4
    finally:
        writer.close()
        store.close()


def test_views_of_one_visitor_get_later_times_in_the_order_they_are_counted(store) -> None:
    # Two request threads may stamp views the other way round from the order they are counted in.
    writer = PageViewWriter(store, flush_interval_s=10)
    try:
        t0 = utcnow()
        writer.record(view("v", 0, t0 + timedelta(seconds=1)), known=False)
        second = writer.record(view("v", 1, t0))
        assert second.page_views == 2 and second.last_seen > t0 + timedelta(seconds=1)
        assert writer.flush()
        assert store.get_visitor("shop", "v").last_seen == second.last_seen
    finally:
        writer.close()


def test_views_wait_while_the_store_refuses_them_and_are_written_after(tmp_path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'v.db'}", busy_timeout_ms=100)
    store.migrate()
    writer = PageViewWriter(store, flush_interval_s=0.01)

    other = sqlite3.connect(tmp_path / "v.db", isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.perf_counter()
        profiles = [writer.record(view("v", n), known=n > 0) for n in range(5)]
        assert time.perf_counter() - started < 0.5
        assert [p.page_views for p in profiles] == [1, 2, 3, 4, 5]
        time.sleep(0.4)  # the writer tried, and kept them
        assert writer.written == 0
    finally:
        other.rollback()
        other.close()
    assert writer.flush()
    assert store.get_visitor("shop", "v").page_views == 5 and writer.dropped == 0
    writer.close()
    store.close()


def test_two_writers_of_one_visitor_lose_no_view(store) -> None:
    # Two workers (one writer each) counting the same visitor at once: every view is counted.
    writers = [PageViewWriter(store, flush_interval_s=0.002) for _ in range(2)]
    writers[0].record(view("both", 0), known=False)
    assert writers[0].flush()

    def browse(w: int) -> None:
        for n in range(50):
            writers[w].record(view("both", (w + 1) * 1000 + n))

    threads = [threading.Thread(target=browse, args=(w,)) for w in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(w.flush() for w in writers)
    assert store.get_visitor("shop", "both").page_views == 101
    for w in writers:
        w.close()


def test_count_view_keeps_the_visits_page_views_landing_page_referrer_source_and_campaign() -> None:
    t0 = utcnow()
    landing = dict(source="organic", path="/tv/oled", referrer_domain="google.com", source_name="google", campaign="")
    first = count_view(None, view("v", 0, t0, **landing))
    assert (first.visit_page_views, first.landing_page, first.referrer_domain, first.source_name,
            first.previous_seen) == (1, "/tv/oled", "google.com", "google", None)
    inside = count_view(first, view("v", 1, t0 + timedelta(minutes=5), source="internal", path="/basket",
                                    referrer_domain="shop.example"))
    assert (inside.visit_page_views, inside.landing_page, inside.referrer_domain, inside.source_name) == (
        2, "/tv/oled", "google.com", "google")
    # Another arrival inside the same visit does not start it again.
    again = count_view(inside, view("v", 2, t0 + timedelta(minutes=6), source="social", path="/x",
                                    referrer_domain="facebook.com", source_name="facebook"))
    assert (again.visit_page_views, again.landing_page, again.source, again.source_name) == (3, "/tv/oled", "organic",
                                                                                            "google")
    later = count_view(again, view("v", 3, t0 + timedelta(hours=3), source="email", path="/spring",
                                   source_name="newsletter", campaign="spring"))
    assert (later.visits, later.visit_page_views, later.landing_page, later.referrer_domain, later.source_name,
            later.utm_campaign, later.previous_seen) == (2, 1, "/spring", "", "newsletter", "spring",
                                                         t0 + timedelta(minutes=6))


def test_the_visit_is_stored_with_the_visitor_and_read_back(store) -> None:
    t0 = utcnow()
    store.record_page_views([view("v", 0, t0 - timedelta(days=3))])
    store.record_page_views([view("v", 1, t0, source="email", path="/spring", referrer_domain="mail.example",
                                  source_name="newsletter", campaign="spring")])
    store.record_page_views([view("v", 2, t0 + timedelta(minutes=1), source="internal", path="/next")])
    back = store.get_visitor("shop", "v")
    assert (back.visits, back.visit_page_views, back.landing_page, back.referrer_domain, back.source_name,
            back.utm_campaign) == (2, 2, "/spring", "mail.example", "newsletter", "spring")
    assert abs((back.previous_seen - (t0 - timedelta(days=3))).total_seconds()) < 0.01


def test_a_read_that_is_no_page_view_counts_the_views_not_written_yet(store) -> None:
    # A fragment URL fetched a moment after page calls shows what they counted.
    writer = PageViewWriter(store, flush_interval_s=10)
    try:
        assert writer.read("shop", "v") is None
        writer.record(view("v", 0), known=False)
        writer.record(view("v", 1))
        seen = writer.read("shop", "v")
        assert (seen.page_views, seen.visit_page_views) == (2, 2)
        assert store.get_visitor("shop", "v") is None  # not written yet
        assert writer.flush()
        assert writer.read("shop", "v").page_views == 2  # written: counted once
    finally:
        writer.close()
