"""The SQL store, run against both backends: SQLite (a temporary file) and PostgreSQL.

PostgreSQL is part of every test environment (127.0.0.1:5432, database `test`, or
VITRINE_TEST_POSTGRES_URL): when it cannot be reached these tests fail rather than skip.
Each PostgreSQL test gets a fresh schema of its own, dropped afterwards.
"""

from __future__ import annotations

import re
import sqlite3
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config

from conftest import HEAD
from server.models import ANONYMOUS_VISITOR, CatalogItem, Event, Interaction
from server.store import Store, StoreBusy, StoreError, open_store
from server.store.schema import events as events_table
from server.store.schema import items as items_table
from server.store.schema import visitors as visitors_table
from server.store.sql import MIGRATIONS, imported_visitor_id
from server.visitors.page_views import PageView

T0 = datetime(2024, 3, 1, 12, 0, 0)
TIMEOUT_S = 30 * 60


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty database on each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'store.db'}"
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def fresh_store(store_url: str) -> Store:
    """An empty database, not migrated yet."""
    store = open_store(store_url)
    yield store
    store.close()


@pytest.fixture
def store(fresh_store: Store) -> Store:
    fresh_store.migrate()
    return fresh_store


def item(item_id: str, title: str, **kw) -> CatalogItem:
    return CatalogItem(item_id, title, **kw)


def purchase(event_id: str, item_id: str | None = None, value: float | None = None, ts: datetime = T0) -> Event:
    return Event(event_id, "purchase", ts, item_id=item_id, value=value, currency="GBP")


# -- schema ---------------------------------------------------------------------------


def test_postgres_fixture_isolates_each_test_in_its_own_schema(postgres_url: str) -> None:
    store = open_store(postgres_url)
    try:
        assert store.schema_version() is None
        store.migrate()
        with store.engine.connect() as conn:
            schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
            tables = sa.inspect(conn).get_table_names()
        assert schema.startswith("vitrine_test_")
        assert {"items", "visitors", "events", "alembic_version"} <= set(tables)
    finally:
        store.close()


def test_migrate_reaches_the_newest_version_and_is_idempotent(fresh_store: Store) -> None:
    assert fresh_store.schema_version() is None
    assert fresh_store.migrate() == HEAD
    fresh_store.upsert_items("shop", [item("a", "Kept across migrations")])
    assert fresh_store.migrate() == HEAD
    assert fresh_store.schema_version() == HEAD
    assert fresh_store.count_items("shop") == 1


def test_no_column_can_hold_an_ip_address(store: Store) -> None:
    inspector = sa.inspect(store.engine)
    tables = [t for t in inspector.get_table_names() if t != "alembic_version"]
    assert {"items", "visitors", "events"} <= set(tables)
    for table in tables:
        for column in inspector.get_columns(table):
            name = column["name"].lower()
            # Whole words only: "description" contains the letters but is not an address.
            words = set(re.split(r"[^a-z0-9]+", name))
            assert not words & {"ip", "ips", "ipv4", "ipv6", "ipaddr", "ipaddress", "addr", "address"}, (
                f"{table}.{name} looks like an IP address column"
            )
            assert not re.search(r"(^|_)ip", name), f"{table}.{name} looks like an IP address column"
            assert type(column["type"]).__name__.upper() not in ("INET", "CIDR"), f"{table}.{name}"


# -- catalog --------------------------------------------------------------------------


def test_upsert_items_inserts_then_updates(store: Store) -> None:
    assert store.upsert_items("shop", []) == 0
    first = [
        item("a", "Lantern", price=3.5, currency="GBP", tags=("white", "metal")),
        item("b", "Mug", in_stock=False),
    ]
    assert store.upsert_items("shop", first) == 2
    assert store.count_items("shop") == 2
    assert store.get_item("shop", "a") == first[0]
    assert store.get_item("shop", "b").in_stock is False

    assert store.upsert_items("shop", [item("a", "Lantern, white", price=4.0, currency="GBP")]) == 1
    assert store.count_items("shop") == 2
    updated = store.get_item("shop", "a")
    assert updated.title == "Lantern, white"
    assert updated.price == 4.0
    assert updated.tags == ()  # every field is replaced, not merged
    assert store.get_item("shop", "b").title == "Mug"


def test_upsert_items_in_more_than_one_chunk(store: Store) -> None:
    many = [item(f"sku-{n:04d}", f"Item {n}") for n in range(1203)]
    assert store.upsert_items("shop", many) == 1203
    assert store.count_items("shop") == 1203
    assert store.get_item("shop", "sku-1202").title == "Item 1202"


def test_items_belong_to_their_shop(store: Store) -> None:
    store.upsert_items("one", [item("a", "One's lantern")])
    store.upsert_items("two", [item("a", "Two's lantern")])
    assert store.get_item("one", "a").title == "One's lantern"
    assert store.get_item("two", "a").title == "Two's lantern"
    assert store.get_item("three", "a") is None
    assert store.count_items("one") == 1


def test_get_items_keeps_the_requested_order(store: Store) -> None:
    store.upsert_items("shop", [item(i, f"Item {i}") for i in "abcde"])
    found = store.get_items("shop", ["d", "missing", "a", "c"])
    assert [i.item_id for i in found] == ["d", "a", "c"]
    assert store.get_items("shop", []) == []
    assert store.get_item("shop", "missing") is None
    assert store.get_item("shop", "e").title == "Item e"


def test_list_items_filters_by_category_and_text_and_paginates(store: Store) -> None:
    store.upsert_items(
        "shop",
        [
            item("1", "White Metal Lantern", category="Lights"),
            item("2", "Red Lantern", category="Lights", description="Glass and METAL"),
            item("3", "Candle Holder", category="Lights"),
            item("4", "Metal Sign", category="Decor"),
            item("5", "Tea Towel", category="Kitchen"),
        ],
    )
    store.upsert_items("other", [item("9", "Metal Lantern", category="Lights")])

    assert [i.item_id for i in store.list_items("shop")] == ["3", "4", "2", "5", "1"]  # by title
    assert [i.item_id for i in store.list_items("shop", category="Lights")] == ["3", "2", "1"]
    # Every word must match, in the title or the description, whatever the case.
    assert [i.item_id for i in store.list_items("shop", text="metal")] == ["4", "2", "1"]
    assert [i.item_id for i in store.list_items("shop", text="LANTERN metal")] == ["2", "1"]
    assert [i.item_id for i in store.list_items("shop", text="metal", category="Decor")] == ["4"]
    assert store.list_items("shop", text="nothing-like-this") == []

    pages = [store.list_items("shop", limit=2, offset=n) for n in (0, 2, 4, 6)]
    assert [[i.item_id for i in page] for page in pages] == [["3", "4"], ["2", "5"], ["1"], []]


def test_categories_counts_most_items_first(store: Store) -> None:
    store.upsert_items(
        "shop",
        [
            item("1", "A", category="Lights"),
            item("2", "B", category="Lights"),
            item("3", "C", category="Kitchen"),
            item("4", "D", category="Decor"),
            item("5", "E", category="Decor"),
            item("6", "F", category="Lights"),
            item("7", "G"),  # no category: not listed
        ],
    )
    store.upsert_items("other", [item("1", "A", category="Kitchen")])
    assert store.categories("shop") == [("Lights", 3), ("Decor", 2), ("Kitchen", 1)]
    assert store.categories("nobody") == []


def test_bestsellers_orders_by_purchases_and_leaves_out_what_is_out_of_stock(store: Store) -> None:
    store.upsert_items(
        "shop",
        [
            item("once", "Bought once", category="Gifts"),
            item("thrice", "Bought three times", category="Gifts"),
            item("twice", "Bought twice", category="Decor"),
            item("gone", "Bought most, sold out", in_stock=False),
            item("viewed", "Only viewed"),
        ],
    )
    events = [purchase("p1", "once")]
    events += [purchase(f"t{n}", "thrice") for n in range(3)]
    events += [purchase(f"w{n}", "twice") for n in range(2)]
    events += [purchase(f"g{n}", "gone") for n in range(5)]
    events += [Event(f"v{n}", "view_item", T0, item_id="viewed") for n in range(9)]
    store.record_events("shop", "v1", events)
    # Purchases in another shop do not count here.
    store.record_events("other", "v1", [purchase(f"o{n}", "once") for n in range(7)])

    assert [i.item_id for i in store.bestsellers("shop")] == ["thrice", "twice", "once"]
    assert [i.item_id for i in store.bestsellers("shop", limit=2)] == ["thrice", "twice"]
    assert [i.item_id for i in store.bestsellers("shop", category="Gifts")] == ["thrice", "once"]
    assert store.bestsellers("other") == []  # "once" is not in that shop's catalog


def test_links_stored_before_imports_checked_them_are_not_handed_out(store: Store) -> None:
    store.upsert_items(
        "shop",
        [
            item("bad", "Stored long ago", category="Gifts", url="javascript:alert(1)", image_url="//evil.example/i.png"),
            item("good", "Fine", category="Gifts", url="/p/good", image_url="https://cdn.example/i/good.jpg"),
        ],
    )
    store.record_events("shop", "v1", [purchase("p1", "bad"), purchase("p2", "good")])
    reads = [
        store.get_items("shop", ["bad", "good"]),
        store.list_items("shop"),
        store.all_items("shop"),
        store.bestsellers("shop"),
    ]
    for found in reads:
        links = {i.item_id: (i.url, i.image_url) for i in found}
        assert links == {"bad": ("", ""), "good": ("/p/good", "https://cdn.example/i/good.jpg")}


# -- visitors -------------------------------------------------------------------------


def test_touch_visitor_creates_counts_and_starts_new_visits(store: Store) -> None:
    assert store.get_visitor("shop", "v1") is None
    first = store.touch_visitor("shop", "v1", T0, TIMEOUT_S, country="GB", device_class="mobile")
    assert (first.visits, first.page_views, first.new_visit) == (1, 1, True)
    assert (first.first_seen, first.last_seen) == (T0, T0)
    assert (first.country, first.device_class) == ("GB", "mobile")

    later = T0 + timedelta(minutes=29)
    second = store.touch_visitor("shop", "v1", later, TIMEOUT_S)
    assert (second.visits, second.page_views, second.new_visit) == (1, 2, False)
    assert second.country == "GB"  # not lost when this request had no country

    not_a_view = store.touch_visitor("shop", "v1", later, TIMEOUT_S, page_view=False)
    assert not_a_view.page_views == 2

    next_visit = later + timedelta(minutes=31)
    third = store.touch_visitor("shop", "v1", next_visit, TIMEOUT_S, country="FR")
    assert (third.visits, third.page_views, third.new_visit) == (2, 3, True)
    assert third.is_returning and not third.is_customer

    stored = store.get_visitor("shop", "v1")
    assert (stored.visits, stored.page_views, stored.country) == (2, 3, "FR")
    assert stored.first_seen == T0 and stored.last_seen == next_visit
    assert store.get_visitor("other", "v1") is None


def test_touch_visitor_keeps_the_visit_source_for_internal_navigation(store: Store) -> None:
    start = store.touch_visitor("shop", "v1", T0, TIMEOUT_S, source="social")
    assert start.source == "social"
    inside = store.touch_visitor("shop", "v1", T0 + timedelta(minutes=5), TIMEOUT_S, source="internal")
    assert inside.source == "social"
    # Within a visit a new referrer does not replace the source the visit started with.
    again = store.touch_visitor("shop", "v1", T0 + timedelta(minutes=6), TIMEOUT_S, source="email")
    assert again.source == "social"
    new_visit = store.touch_visitor("shop", "v1", T0 + timedelta(hours=2), TIMEOUT_S, source="email")
    assert new_visit.new_visit and new_visit.source == "email"
    assert store.get_visitor("shop", "v1").source == "email"


def test_touch_visitor_stores_the_page_view_event_with_it(store: Store) -> None:
    view = Event("pv-1", "page_view", T0, props={"url": "https://shop.example/"})
    profile = store.touch_visitor("shop", "v1", T0, TIMEOUT_S, event=view)
    assert profile.page_views == 1
    assert store.visitor_events("shop", "v1") == [view]
    # The same page view again is not stored twice.
    store.touch_visitor("shop", "v1", T0 + timedelta(seconds=5), TIMEOUT_S, event=view)
    assert store.count_events("shop", type="page_view") == 1


# -- events ---------------------------------------------------------------------------


def test_record_events_is_idempotent_by_event_id(store: Store) -> None:
    batch = [
        Event("e1", "page_view", T0),
        Event("e2", "view_item", T0 + timedelta(seconds=1), item_id="a", props={"slot": "home", "n": 2}),
        Event("e3", "add_to_cart", T0 + timedelta(seconds=2), item_id="a", value=3.5, currency="GBP"),
    ]
    assert store.record_events("shop", "v1", batch) == (3, 0)
    assert store.record_events("shop", "v1", batch) == (0, 3)
    resent = [batch[0], Event("e4", "view_item", T0 + timedelta(seconds=3), item_id="b")]
    assert store.record_events("shop", "v1", resent) == (1, 1)
    # The same id twice in one batch is stored once.
    twice = [Event("e5", "page_view", T0), Event("e5", "page_view", T0)]
    assert store.record_events("shop", "v1", twice) == (1, 1)
    assert store.record_events("shop", "v1", []) == (0, 0)
    assert store.count_events("shop") == 5
    assert store.count_events("shop", type="view_item") == 2


def test_a_purchase_counts_as_an_order_once(store: Store) -> None:
    store.touch_visitor("shop", "v1", T0, TIMEOUT_S)
    order_time = T0 + timedelta(minutes=3)
    order = purchase("order-1", "a", value=25.5, ts=order_time)
    assert store.record_events("shop", "v1", [order]) == (1, 0)
    assert store.record_events("shop", "v1", [order]) == (0, 1)
    visitor = store.get_visitor("shop", "v1")
    assert (visitor.orders, visitor.revenue, visitor.last_order_at) == (1, 25.5, order_time)
    assert visitor.is_customer

    store.record_events("shop", "v1", [purchase("order-2", "b", value=4.5), purchase("order-3", "c")])
    visitor = store.get_visitor("shop", "v1")
    assert (visitor.orders, visitor.revenue) == (3, 30.0)


def test_an_order_sent_again_under_a_new_event_id_counts_once(store: Store) -> None:
    # A reloaded thank-you page sends the same transaction with a fresh event id.
    first = Event("p1", "purchase", T0, value=12.0, currency="GBP", order_id="T-1001")
    reload = Event("p2", "purchase", T0 + timedelta(minutes=1), value=12.0, currency="GBP", order_id="T-1001")
    assert store.record_events("shop", "v1", [first]) == (1, 0)
    assert store.record_events("shop", "v1", [reload]) == (0, 1)
    assert store.count_events("shop", type="purchase") == 1
    assert (store.get_visitor("shop", "v1").orders, store.get_visitor("shop", "v1").revenue) == (1, 12.0)
    # Another shop's order with the same number is its own.
    assert store.record_events("other", "v1", [reload]) == (1, 0)


def test_the_same_order_number_from_two_visitors_counts_for_both(store: Store) -> None:
    store.upsert_items("shop", [item("y", "Bought once"), item("z", "Bought in order 1001 twice")])
    # Order numbers are often predictable: visitor A sending B's next number first must not
    # make B's real order a duplicate.
    assert store.record_events("shop", "A", [Event("a-1", "purchase", T0, item_id="z", value=5.0, order_id="1001")]) == (1, 0)
    assert store.record_events("shop", "B", [Event("b-1", "purchase", T0, item_id="z", value=7.0, order_id="1001")]) == (1, 0)
    store.record_events("shop", "C", [Event("c-1", "purchase", T0, item_id="y", value=1.0, order_id="2001")])
    assert (store.get_visitor("shop", "B").orders, store.get_visitor("shop", "B").revenue) == (1, 7.0)
    assert (store.get_visitor("shop", "A").orders, store.get_visitor("shop", "A").revenue) == (1, 5.0)
    assert [i.item_id for i in store.bestsellers("shop")] == ["z", "y"]  # z counted twice, y once
    # A sending its own order again, under a new event id, is still a duplicate.
    resent = Event("a-2", "purchase", T0 + timedelta(minutes=1), item_id="z", value=5.0, order_id="1001")
    assert store.record_events("shop", "A", [resent]) == (0, 1)
    # So is the same order twice in one batch.
    twice = [Event(f"d-{n}", "purchase", T0, item_id="y", value=1.0, order_id="3001") for n in (1, 2)]
    assert store.record_events("shop", "D", twice) == (1, 1)
    assert store.count_events("shop", type="purchase") == 4
    assert store.get_visitor("shop", "A").orders == 1
    assert [i.item_id for i in store.bestsellers("shop")] == ["y", "z"]  # y: C and D; z: A and B


def test_migrating_existing_events_keeps_the_oldest_purchase_of_each_order_per_visitor(fresh_store: Store) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with fresh_store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0003")  # the schema before orders were unique per visitor

    def row(event_id: str, visitor_id: str, type_: str = "purchase", order_id: str | None = "1001") -> dict:
        return dict(shop="shop", event_id=event_id, visitor_id=visitor_id, type=type_, ts=T0,
                    order_id=order_id, value=1.0, received_at=T0)

    rows = [
        row("a-first", "A"), row("a-again", "A"), row("a-third", "A"),  # one order stored three times
        row("b-own", "B"),  # another visitor's order with the same number
        row("a-view", "A", type_="view_item"), row("a-other", "A", order_id="1002"),
        row("a-none-1", "A", order_id=None), row("a-none-2", "A", order_id=None),
        row("elsewhere", "A"),
    ]
    rows[-1]["shop"] = "other"
    with fresh_store.engine.begin() as conn:
        conn.execute(sa.insert(events_table), rows)

    assert fresh_store.migrate() == HEAD
    with fresh_store.engine.connect() as conn:
        kept = set(conn.execute(sa.select(events_table.c.event_id)).scalars())
    assert kept == {"a-first", "b-own", "a-view", "a-other", "a-none-1", "a-none-2", "elsewhere"}
    again = Event("a-fourth", "purchase", T0, value=1.0, order_id="1001")
    assert fresh_store.record_events("shop", "A", [again]) == (0, 1)
    assert fresh_store.record_events("shop", "C", [again]) == (1, 0)


def test_migrating_builds_the_state_of_visitors_who_have_events(fresh_store: Store) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with fresh_store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0004")  # before the visitor state
        conn.execute(sa.insert(visitors_table), [
            dict(shop="shop", visitor_id=v, first_seen=T0, last_seen=T0) for v in ("A", "B")])
        conn.execute(sa.insert(events_table), [
            dict(shop="shop", event_id=f"a-{n}", visitor_id="A", type="view_item", item_id=f"i{n}",
                 ts=T0 + timedelta(minutes=n), received_at=T0) for n in range(3)
        ])
        conn.execute(sa.insert(events_table), [dict(shop="shop", event_id="a-close", visitor_id="A",
                                                    type="close_promotion", campaign="welcome", ts=T0, received_at=T0)])
    assert fresh_store.migrate() == HEAD
    a, b = fresh_store.get_visitor("shop", "A"), fresh_store.get_visitor("shop", "B")
    assert [e.item_id for e in a.state.events()] == ["i2", "i1", "i0"] and a.state.closed == {"welcome"}
    assert b.state.events() == [] and not b.state.closed


def test_migrating_fills_the_cart_and_sign_up_of_visitors_from_their_events(fresh_store: Store) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with fresh_store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0009")  # before the columns copied from the state
        conn.execute(sa.insert(visitors_table), [
            dict(shop="shop", visitor_id=v, first_seen=T0, last_seen=T0) for v in ("A", "B")])
        conn.execute(sa.insert(events_table), [
            dict(shop="shop", event_id=f"a-{n}", visitor_id="A", type=kind, item_id=item, ts=T0 + timedelta(minutes=n),
                 received_at=T0) for n, (kind, item) in enumerate(
                [("sign_up", None), ("add_to_cart", "x"), ("add_to_cart", "y"), ("remove_from_cart", "y")])
        ])
    assert fresh_store.migrate() == HEAD
    a, b = fresh_store.get_visitor("shop", "A"), fresh_store.get_visitor("shop", "B")
    assert [line[0] for line in a.state.cart] == ["x"] and a.state.signed_up_at == T0
    assert b.state.cart == () and b.state.signed_up is None
    with fresh_store.engine.connect() as conn:
        rows = dict(conn.execute(sa.select(visitors_table.c.visitor_id, visitors_table.c.cart_at)).all())
        signed = dict(conn.execute(sa.select(visitors_table.c.visitor_id, visitors_table.c.signed_up_at)).all())
    assert rows == {"A": T0 + timedelta(minutes=1), "B": None} and signed == {"A": T0, "B": None}


def test_the_newest_order_stays_the_last_order_whatever_order_they_arrive_in(store: Store) -> None:
    store.record_events("shop", "v", [purchase("p2", "a", value=1.0, ts=T0)])
    store.record_events("shop", "v", [purchase("p1", "a", value=1.0, ts=T0 - timedelta(days=30))])
    visitor = store.get_visitor("shop", "v")
    assert (visitor.orders, visitor.last_order_at) == (2, T0)


def test_event_batches_keep_the_cart_and_sign_up_columns_in_step_with_the_state(store: Store) -> None:
    store.record_events("shop", "v", [Event("c1", "add_to_cart", T0, item_id="x"), Event("s1", "login", T0)])
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(visitors_table.c.cart_at, visitors_table.c.signed_up_at)).one()
    assert tuple(row) == (T0, T0)
    store.record_events("shop", "v", [purchase("o1", "x", value=1.0, ts=T0 + timedelta(minutes=1))])
    with store.engine.connect() as conn:
        row = conn.execute(sa.select(visitors_table.c.cart_at, visitors_table.c.signed_up_at)).one()
    assert tuple(row) == (None, T0)


def test_a_purchase_from_an_unseen_visitor_creates_the_visitor(store: Store) -> None:
    store.record_events("shop", "ghost", [purchase("p1", "a", value=10.0)])
    visitor = store.get_visitor("shop", "ghost")
    assert visitor is not None
    assert (visitor.orders, visitor.revenue) == (1, 10.0)


def test_the_anonymous_measurement_is_stored_without_a_visitor_row(store: Store) -> None:
    # Analytics-only batches of visitors without a profile share one id: none of them makes,
    # locks or changes a visitors row, so they never queue behind one another.
    batch = [Event("anon-imp", "view_promotion", T0, campaign="welcome"),
             Event("anon-close", "close_promotion", T0, campaign="welcome"),
             Event("anon-click", "select_item", T0, item_id="a")]
    assert store.record_events("shop", ANONYMOUS_VISITOR, batch) == (3, 0)
    assert store.record_events("shop", ANONYMOUS_VISITOR, batch[:1]) == (0, 1)  # still one event per id
    assert store.get_visitor("shop", ANONYMOUS_VISITOR) is None
    assert [e.event_id for e in store.visitor_events("shop", ANONYMOUS_VISITOR)] == [
        "anon-click", "anon-close", "anon-imp"]
    own = Event("own-close", "close_promotion", T0, campaign="welcome")
    assert store.record_events("shop", "v1", [own]) == (1, 0)  # a visitor's own close: on their row
    assert store.get_visitor("shop", "v1").state.closed == {"welcome"}


def test_migrating_drops_the_row_earlier_versions_made_for_the_anonymous_measurement(fresh_store: Store) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with fresh_store.engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, "0008")
        conn.execute(sa.insert(visitors_table), [
            dict(shop="shop", visitor_id=v, first_seen=T0, last_seen=T0) for v in (ANONYMOUS_VISITOR, "A")])
        conn.execute(sa.insert(events_table), [dict(shop="shop", event_id="imp", visitor_id=ANONYMOUS_VISITOR,
                                                    type="view_promotion", campaign="welcome", ts=T0, received_at=T0)])
    assert fresh_store.migrate() == HEAD
    assert fresh_store.get_visitor("shop", ANONYMOUS_VISITOR) is None
    assert fresh_store.get_visitor("shop", "A") is not None
    assert [e.event_id for e in fresh_store.visitor_events("shop", ANONYMOUS_VISITOR)] == ["imp"]


def test_the_same_event_id_in_two_shops_is_stored_twice(store: Store) -> None:
    assert store.record_events("one", "v1", [purchase("shared-id", "a", value=1.0)]) == (1, 0)
    assert store.record_events("two", "v1", [purchase("shared-id", "a", value=2.0)]) == (1, 0)
    assert store.count_events("one") == 1 and store.count_events("two") == 1
    assert store.get_visitor("one", "v1").revenue == 1.0
    assert store.get_visitor("two", "v1").revenue == 2.0


@pytest.mark.parametrize(
    ("event", "where"),
    [
        (Event("inf-value", "purchase", T0, value=float("inf"), order_id="O-1"), "value is inf"),
        (Event("nan-value", "add_to_cart", T0, item_id="a", value=float("nan")), "value is nan"),
        (Event("inf-price", "purchase", T0, value=3.0, order_id="O-2",
               props={"items": [{"item_id": "a", "price": 1.5}, {"item_id": "b", "price": float("inf")}]}),
         "props.items[1].price is inf"),
        (Event("nan-deep", "view_item", T0, item_id="a", props={"slot": {"scores": [1.0, float("-inf")]}}),
         "props.slot.scores[1] is -inf"),
    ],
    ids=["value-inf", "value-nan", "line-item-price", "nested"],
)
def test_events_with_infinity_or_nan_are_refused_and_nothing_is_written(store: Store, event: Event, where: str) -> None:
    fine = Event("fine-1", "page_view", T0)
    with pytest.raises(ValueError, match=re.escape(f"event {event.event_id!r}: {where}, not a finite number")):
        store.record_events("shop", "v1", [fine, event])
    with pytest.raises(ValueError, match="not a finite number"):
        store.touch_visitor("shop", "v1", T0, TIMEOUT_S, event=event)
    assert store.count_events("shop") == 0  # the whole batch is refused, not half of it
    assert store.get_visitor("shop", "v1") is None
    assert store.record_events("shop", "v1", [fine]) == (1, 0)


def test_visitor_events_come_newest_first_and_round_trip(store: Store) -> None:
    when = T0.replace(microsecond=123456)
    store.record_events(
        "shop",
        "v1",
        [
            Event("old", "page_view", when - timedelta(hours=1)),
            Event("new", "view_item", when, item_id="a", value=2.5, currency="GBP", campaign="c1",
                  order_id=None, props={"slot": "home", "rank": 1, "tags": ["x"]}),
            Event("middle", "add_to_cart", when - timedelta(minutes=1), item_id="a"),
        ],
    )
    # Same timestamp as "new", sent later: ties go to the one stored last.
    store.record_events("shop", "v1", [Event("tie", "page_view", when)])
    store.record_events("shop", "v2", [Event("someone-else", "page_view", when + timedelta(hours=1))])
    store.record_events("other", "v1", [Event("other-shop", "page_view", when + timedelta(hours=1))])

    found = store.visitor_events("shop", "v1")
    assert [e.event_id for e in found] == ["tie", "new", "middle", "old"]
    assert [e.event_id for e in store.visitor_events("shop", "v1", limit=2)] == ["tie", "new"]
    assert found[1] == Event(
        "new", "view_item", when, item_id="a", value=2.5, currency="GBP", campaign="c1",
        props={"slot": "home", "rank": 1, "tags": ["x"]},
    )
    assert found[0].props is None and found[0].ts.tzinfo is None


def test_closed_campaigns(store: Store) -> None:
    store.record_events(
        "shop",
        "v1",
        [
            Event("c1", "close_promotion", T0, campaign="welcome"),
            Event("c2", "close_promotion", T0, campaign="welcome"),
            Event("c3", "close_promotion", T0, campaign="uk-delivery"),
            Event("c4", "close_promotion", T0),  # no campaign
            Event("c5", "view_promotion", T0, campaign="summer"),  # seen, not closed
        ],
    )
    store.record_events("shop", "v2", [Event("d1", "close_promotion", T0, campaign="other-visitor")])
    store.record_events("other", "v1", [Event("d2", "close_promotion", T0, campaign="other-shop")])
    assert store.get_visitor("shop", "v1").state.closed == {"welcome", "uk-delivery"}
    assert store.get_visitor("shop", "v2").state.closed == {"other-visitor"}
    assert store.get_visitor("other", "v1").state.closed == {"other-shop"}
    assert store.get_visitor("shop", "nobody") is None


# -- the visitor state ----------------------------------------------------------------
def test_the_visitor_state_follows_the_events_written(store: Store) -> None:
    base = T0 - timedelta(days=1)
    batch = [Event(f"s-{n:03d}", "view_item", base + timedelta(minutes=n), item_id=f"i{n}") for n in range(250)]
    batch += [
        Event("s-search", "search", base + timedelta(hours=10), props={"search_term": "red bag"}),
        Event("s-seen", "view_promotion", base + timedelta(hours=11), campaign="summer"),  # not history
        Event("s-buy", "purchase", base + timedelta(hours=12), value=3.0, order_id="o-1",
              props={"items": [{"item_id": "i1", "quantity": 1}, {"item_id": "i2", "quantity": 2}]}),
    ]
    store.record_events("shop", "v1", batch)
    history = store.get_visitor("shop", "v1").state.events()
    assert len(history) == 200  # the newest 200 of the kept kinds
    assert [e.type for e in history[:2]] == ["purchase", "search"]
    assert history[0].item_ids() == ["i1", "i2"] and history[0].ts == base + timedelta(hours=12)
    assert history[1].props == {"search_term": "red bag"}
    assert history[2].item_id == "i249" and history[-1].item_id == "i52"
    # An event sent again changes nothing; an older one arriving late takes its place by time.
    store.record_events("shop", "v1", [batch[0], Event("s-late", "add_to_cart", base + timedelta(hours=11, minutes=30), item_id="i7")])
    history = store.get_visitor("shop", "v1").state.events()
    assert [e.type for e in history[:3]] == ["purchase", "add_to_cart", "search"] and len(history) == 200


def test_a_page_view_comes_back_in_the_state_of_the_same_call(store: Store) -> None:
    view = Event("pv-1", "page_view", T0, item_id="22632", props={"page_type": "product"})
    profile = store.touch_visitor("shop", "v1", T0, 1800, event=view)
    assert profile.visits == 1 and profile.new_visit
    assert [e.item_id for e in profile.state.events()] == ["22632"]
    home = Event("pv-2", "page_view", T0 + timedelta(seconds=5), props={"page_type": "home"})  # no item: not history
    profile = store.touch_visitor("shop", "v1", T0 + timedelta(seconds=5), 1800, event=home)
    assert profile.page_views == 2 and [e.item_id for e in profile.state.events()] == ["22632"]
    assert store.get_visitor("shop", "v1").state == profile.state


def test_page_views_without_an_item_leave_the_stored_state_as_it_is(store: Store) -> None:
    """The writer reads and writes the state only for views that change it; a home page view
    in between, or in the same batch as an item's, must keep the history."""
    item = Event("pv-1", "page_view", T0, item_id="22632", props={"page_type": "product"})
    store.record_page_views([PageView("shop", "v1", T0, 1800, event=item)])
    home = [Event(f"pv-h{n}", "page_view", T0 + timedelta(seconds=n), props={"page_type": "home"}) for n in (1, 2)]
    profiles = store.record_page_views([PageView("shop", "v1", e.ts, 1800, event=e) for e in home])
    assert profiles[-1].page_views == 3
    stored = store.get_visitor("shop", "v1")
    assert stored.page_views == 3 and [e.item_id for e in stored.state.events()] == ["22632"]
    later = Event("pv-2", "page_view", T0 + timedelta(seconds=9), item_id="84029E", props={"page_type": "product"})
    again = Event("pv-h3", "page_view", T0 + timedelta(seconds=8), props={"page_type": "home"})
    store.record_page_views([PageView("shop", "v1", e.ts, 1800, event=e) for e in (again, later)])
    assert [e.item_id for e in store.get_visitor("shop", "v1").state.events()] == ["84029E", "22632"]
    assert store.get_visitor("shop", "v1").page_views == 5


def test_imported_customers_get_their_state(store: Store) -> None:
    store.import_interactions("shop", IMPORTED)
    customer = store.get_visitor("shop", imported_visitor_id("17850"))
    assert customer.state is not None and customer.state.events()
    assert {i for e in customer.state.events() for i in e.item_ids()} >= {"71053", "22632"}


def test_sql_errors_do_not_show_the_values_bound_to_the_statement(store: Store) -> None:
    secret = "visitor-secret-search-term"
    row = dict(shop="shop", event_id="e-1", visitor_id="v-secret-visitor", type="search", ts=T0,
               props={"search_term": secret}, received_at=T0)
    with store.engine.begin() as conn:
        conn.execute(sa.insert(events_table), row)
    with pytest.raises(sa.exc.IntegrityError) as duplicate:
        with store.engine.begin() as conn:
            conn.execute(sa.insert(events_table), row)  # the same (shop, event_id) again
    with pytest.raises(sa.exc.DBAPIError) as unknown_column:  # OperationalError, ProgrammingError
        with store.engine.connect() as conn:
            conn.execute(sa.text("SELECT id FROM events WHERE no_such_column = :term"), {"term": secret})
    for error in (duplicate.value, unknown_column.value):
        message = str(error)
        assert "events" in message  # the statement is still shown, for debugging
        assert secret not in message and "v-secret-visitor" not in message, message


# -- imports --------------------------------------------------------------------------


def at(hour: int, minute: int = 0) -> datetime:
    return datetime(2010, 12, 1, hour, minute, tzinfo=timezone.utc)


IMPORTED = [
    Interaction("17850", "71053", "purchase", at(8, 26), 20.34, "United Kingdom"),
    Interaction("17850", "84029E", "purchase", at(8, 26), 20.34, "United Kingdom"),
    # Two identical lines (the same product twice in one order) are two events.
    Interaction("17850", "22632", "purchase", at(8, 28), 11.10, "United Kingdom"),
    Interaction("17850", "22632", "purchase", at(8, 28), 11.10, "United Kingdom"),
    Interaction("17850", "22633", "view", at(9, 0)),
    Interaction("13047", "22622", "cart", at(10, 0), None, "France"),
    Interaction("13047", "22622", "rating", at(10, 5), 4.0, "France"),
]


def test_import_interactions_keeps_identical_rows_and_adds_nothing_twice(store: Store) -> None:
    assert store.import_interactions("shop", IMPORTED) == 7
    assert store.count_events("shop") == 7
    assert store.count_events("shop", type="purchase") == 4
    assert store.count_events("shop", type="view_item") == 1
    assert store.count_events("shop", type="add_to_cart") == 1
    assert store.count_events("shop", type="rating") == 1

    assert store.import_interactions("shop", IMPORTED) == 0
    assert store.import_interactions("shop", iter(IMPORTED)) == 0
    assert store.count_events("shop") == 7
    # A file with one more line adds just that line.
    assert store.import_interactions("shop", IMPORTED + [IMPORTED[0]]) == 1
    # The same history in another shop is that shop's own.
    assert store.import_interactions("other", IMPORTED) == 7


def test_import_interactions_sets_the_visitor_counters(store: Store) -> None:
    store.import_interactions("shop", IMPORTED)
    customer = store.get_visitor("shop", imported_visitor_id("17850"))
    # Orders are distinct purchase times: 08:26 (two lines) and 08:28 (two lines).
    assert customer.orders == 2
    assert customer.revenue == pytest.approx(20.34 * 2 + 11.10 * 2)
    assert customer.country == "GB"  # names become ISO codes, as live visitors have
    assert customer.last_order_at == at(8, 28).replace(tzinfo=None)
    assert customer.first_seen == at(8, 26).replace(tzinfo=None)
    assert customer.last_seen == at(9, 0).replace(tzinfo=None)
    assert customer.is_customer

    browser = store.get_visitor("shop", imported_visitor_id("13047"))
    assert (browser.orders, browser.revenue, browser.country) == (0, 0.0, "FR")
    assert browser.last_order_at is None and not browser.is_customer

    # Re-importing recomputes from the events, so the counters do not double.
    store.import_interactions("shop", IMPORTED)
    again = store.get_visitor("shop", imported_visitor_id("17850"))
    assert (again.orders, again.revenue) == (2, customer.revenue)


def test_imported_customers_do_not_collide_with_web_visitors(store: Store) -> None:
    store.touch_visitor("shop", "17850", T0, TIMEOUT_S)
    store.import_interactions("shop", IMPORTED[:1])
    assert store.get_visitor("shop", "17850").orders == 0
    assert store.get_visitor("shop", imported_visitor_id("17850")).orders == 1
    assert len(imported_visitor_id("x" * 200)) <= 64


def test_import_interactions_is_all_or_nothing(store: Store) -> None:
    good = [
        Interaction(f"user-{n % 50}", f"item-{n}", "view", at(8) + timedelta(seconds=n)) for n in range(1500)
    ]
    # The driver cannot bind an arbitrary object: the statement for the second chunk of
    # rows fails after the first chunk went in, inside the same transaction.
    unbindable = Interaction("user-x", object(), "view", at(9))  # type: ignore[arg-type]
    with pytest.raises(StoreError):
        store.import_interactions("shop", good + [unbindable])
    assert store.count_events("shop") == 0
    assert store.get_visitor("shop", imported_visitor_id("user-1")) is None
    # The same file without the bad row imports completely.
    assert store.import_interactions("shop", good) == 1500
    assert store.count_events("shop") == 1500


def test_trending_follows_events_as_they_arrive_and_decays_old_ones(store: Store) -> None:
    store.upsert_items("demo", [CatalogItem(i, i) for i in ("old", "new", "gb")])
    store.touch_visitor("demo", "v-gb", datetime(2024, 1, 1), 1800, country="GB")
    old = datetime(2024, 1, 1)
    # Ten purchases long ago lose to two views now: weights halve every 72 hours.
    store.record_events("demo", "v-x", [Event(f"old-{i}", "purchase", old, item_id="old", value=1.0, order_id=f"o{i}") for i in range(10)])
    store.record_events("demo", "v-x", [Event(f"new-{i}", "view_item", old + timedelta(days=30), item_id="new") for i in range(2)])
    assert store.trending("demo")[:2] == ["new", "old"]
    # A visitor from GB makes the item trend in GB, and in the whole shop.
    store.record_events("demo", "v-gb", [Event(f"gb-{i}", "add_to_cart", old + timedelta(days=30), item_id="gb") for i in range(3)])
    assert store.trending("demo", "country:GB") == ["gb"]
    assert store.trending("demo")[0] == "gb"
    assert store.trending("demo", "country:FR") == []


def test_importing_rebuilds_trending_without_counting_twice(store: Store) -> None:
    store.upsert_items("demo", [CatalogItem("71053", "Lantern"), CatalogItem("84029E", "Hottie")])
    rows = [
        Interaction("1", "71053", "purchase", datetime(2011, 1, 1, tzinfo=timezone.utc), 3.0, "United Kingdom"),
        Interaction("2", "71053", "purchase", datetime(2011, 1, 2, tzinfo=timezone.utc), 3.0, "France"),
        Interaction("2", "84029E", "view", datetime(2011, 1, 2, tzinfo=timezone.utc), None, "France"),
    ]
    store.import_interactions("demo", rows)
    first = store.trending("demo")
    assert first == ["71053", "84029E"]
    assert store.trending("demo", "country:FR") == ["71053", "84029E"]
    assert store.trending("demo", "country:GB") == ["71053"]
    store.import_interactions("demo", rows)
    assert store.trending("demo") == first


def test_popular_searches(store: Store) -> None:

    def search(event_id: str, term: str, ts: datetime = T0) -> Event:
        return Event(event_id, "search", ts, props={"search_term": term})

    store.record_events("s", "v1", [search("e1", "Bag"), search("e2", "bag "), search("e3", "tree")])
    store.record_events("s", "v2", [search("e4", "BAG"), search("e5", "lamp", T0 - timedelta(days=40))])
    store.record_events("other", "v3", [search("e6", "tree"), search("e7", "tree")])
    # Lowercased and trimmed, by number of visitors; older than `since` and other shops left out.
    assert store.popular_searches("s", T0 - timedelta(days=30)) == [("bag", 2), ("tree", 1)]
    assert store.popular_searches("s", T0 - timedelta(days=30), limit=1) == [("bag", 2)]


def test_bestsellers_count_every_line_of_multi_item_orders(store: Store) -> None:
    store.upsert_items("demo", [CatalogItem(i, i) for i in ("x", "y", "z")])
    now = datetime(2024, 5, 1)
    order = Event("order-1", "purchase", now, value=9.0, order_id="O1",
                  props={"items": [{"item_id": "y", "quantity": 2, "price": 1.5}, {"item_id": "z", "quantity": 1, "price": 6.0}]})
    store.record_events("demo", "v1", [order, Event("order-2", "purchase", now, item_id="y", value=1.5, order_id="O2")])
    assert [i.item_id for i in store.bestsellers("demo", 3)] == ["y", "z"]
    store.record_events("demo", "v1", [order])  # the same event again changes nothing
    assert [i.item_id for i in store.bestsellers("demo", 3)] == ["y", "z"]


# -- bounded waits --------------------------------------------------------------------

BUSY_MS = 200  # the store's bounded wait in these tests (the server's default is 2000)


@pytest.fixture
def busy_store(store_url: str) -> Store:
    """A migrated store that waits at most BUSY_MS for a lock or a connection."""
    store = open_store(store_url, busy_timeout_ms=BUSY_MS)
    store.migrate()
    yield store
    store.close()


def raises_busy_quickly(call) -> None:
    started = time.perf_counter()
    with pytest.raises(StoreBusy):
        call()
    assert time.perf_counter() - started < 2  # about BUSY_MS; before, 10 s and then an error


def test_sqlite_locked_by_another_connection_makes_writes_busy_quickly(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = open_store(f"sqlite:///{path}", busy_timeout_ms=BUSY_MS)
    store.migrate()
    other = sqlite3.connect(path, isolation_level=None)  # another process, say `vitrine import`
    other.execute("BEGIN EXCLUSIVE")
    try:
        raises_busy_quickly(lambda: store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]))
        raises_busy_quickly(lambda: store.touch_visitor("shop", "v1", T0, TIMEOUT_S))
        raises_busy_quickly(lambda: store.upsert_items("shop", [item("a", "Lantern")]))
        raises_busy_quickly(lambda: store.import_interactions("shop", IMPORTED))
        # Readers do not wait for a writer (WAL).
        assert store.count_events("shop") == 0
    finally:
        other.rollback()
        other.close()
    assert (store.count_events("shop"), store.count_items("shop"), store.get_visitor("shop", "v1")) == (0, 0, None)
    assert store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]) == (1, 0)
    store.close()


def test_a_thread_holding_the_write_lock_makes_other_writers_busy_quickly(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}", busy_timeout_ms=BUSY_MS)
    store.migrate()
    held, release = threading.Event(), threading.Event()

    def long_write() -> None:
        with store._write_lock:  # what another thread's long write transaction holds
            held.set()
            release.wait(10)

    writer = threading.Thread(target=long_write)
    writer.start()
    try:
        assert held.wait(5)
        raises_busy_quickly(lambda: store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]))
        raises_busy_quickly(lambda: store.touch_visitor("shop", "v1", T0, TIMEOUT_S))
    finally:
        release.set()
        writer.join()
    assert store.count_events("shop") == 0 and store.get_visitor("shop", "v1") is None
    assert store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]) == (1, 0)
    store.close()


def test_postgres_anonymous_batches_wait_for_no_row_lock(postgres_url: str) -> None:
    store = open_store(postgres_url, busy_timeout_ms=BUSY_MS)
    store.migrate()
    with store.engine.begin() as conn:  # a row as earlier versions made it, which every batch locked
        conn.execute(sa.insert(visitors_table).values(shop="shop", visitor_id=ANONYMOUS_VISITOR, first_seen=T0,
                                                      last_seen=T0))
    holder = sa.create_engine(postgres_url)
    try:
        with holder.connect() as other:
            other.execute(sa.text("SELECT 1 FROM visitors WHERE visitor_id = :v FOR UPDATE"), {"v": ANONYMOUS_VISITOR})
            started = time.perf_counter()
            for n in range(3):
                batch = [Event(f"imp-{n}", "view_promotion", T0, campaign="welcome")]
                assert store.record_events("shop", ANONYMOUS_VISITOR, batch) == (1, 0)
            assert time.perf_counter() - started < BUSY_MS / 1000  # none waited for the row
            other.rollback()
    finally:
        holder.dispose()
        store.close()


def test_postgres_locks_held_elsewhere_make_calls_busy_instead_of_hanging(postgres_url: str) -> None:
    store = open_store(postgres_url, busy_timeout_ms=BUSY_MS)
    store.migrate()
    store.touch_visitor("shop", "v1", T0, TIMEOUT_S)
    holder = sa.create_engine(postgres_url)
    try:
        with holder.connect() as other:
            other.execute(sa.text("SELECT 1 FROM visitors WHERE visitor_id = 'v1' FOR UPDATE"))
            raises_busy_quickly(lambda: store.touch_visitor("shop", "v1", T0 + timedelta(minutes=1), TIMEOUT_S))
            assert store.touch_visitor("shop", "v2", T0, TIMEOUT_S).page_views == 1  # other rows are free
            other.execute(sa.text("LOCK TABLE events IN ACCESS EXCLUSIVE MODE"))
            raises_busy_quickly(lambda: store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]))
            raises_busy_quickly(lambda: store.count_events("shop"))  # this lock stops readers too
            other.rollback()
    finally:
        holder.dispose()
    assert store.get_visitor("shop", "v1").page_views == 1
    assert store.count_events("shop") == 0
    assert store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]) == (1, 0)
    store.close()


def test_a_call_finding_no_free_connection_is_busy_quickly(busy_store: Store) -> None:
    held = []
    try:
        with pytest.raises(sa.exc.TimeoutError):  # take every connection the pool has
            while len(held) < 100:
                held.append(busy_store.engine.connect())
        raises_busy_quickly(lambda: busy_store.count_events("shop"))
        raises_busy_quickly(lambda: busy_store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]))
    finally:
        for conn in held:
            conn.close()
    assert busy_store.count_events("shop") == 0
    assert busy_store.record_events("shop", "v1", [purchase("p1", "a", value=3.0)]) == (1, 0)


def test_database_errors_reach_callers_without_values(store: Store) -> None:
    secret = "visitor-secret-order-42"
    statement = sa.text("INSERT INTO events (shop, event_id, visitor_id, type, ts, received_at, order_id) "
                        "VALUES ('shop', :event_id, 'v-1', 'purchase', :ts, :ts, :secret)")
    values = {"event_id": "dup-000001", "ts": T0, "secret": secret}
    with store._writing() as conn:
        conn.execute(statement, values)
    with pytest.raises(StoreError) as refused:  # the same (shop, event_id) again, through the store boundary
        with store._writing() as conn:
            conn.execute(statement, values)
    message = str(refused.value)
    assert "IntegrityError" in message or "UniqueViolation" in message, message
    assert "INSERT INTO events" in message and secret not in message and "dup-000001" not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__  # no chained DETAIL in a traceback


# -- group commit -----------------------------------------------------------------------
def _batches_behind_a_held_writer(store: Store, batches: dict[str, list[Event]]) -> dict[str, object]:
    """Send the batches from threads while the writer is busy with a job that waits: they
    queue up, and all reach the writer together once it is let go."""
    import threading
    import time

    release = threading.Event()
    holder = threading.Thread(target=lambda: store._group.run(lambda conn: release.wait(10), durable=False))
    holder.start()
    time.sleep(0.1)
    results: dict[str, object] = {}

    def send(visitor: str, batch: list[Event]) -> None:
        try:
            results[visitor] = store.record_events("shop", visitor, batch)
        except ValueError as exc:
            results[visitor] = exc

    threads = [threading.Thread(target=send, args=item) for item in batches.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 5
    while store._group._queue.qsize() < len(batches) and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for t in [holder, *threads]:
        t.join(30)
    return results


def test_concurrent_batches_share_one_commit(store: Store) -> None:
    batches = {f"v{n}": [Event(f"g-{n}-{k}", "view_item", T0, item_id=f"i{k}") for k in range(10)] for n in range(15)}
    before = store._group.groups
    results = _batches_behind_a_held_writer(store, batches)
    assert all(r == (10, 0) for r in results.values()), results
    assert store.count_events("shop") == 150
    assert store._group.groups - before == 2  # the held job's commit, then one for all fifteen batches


def test_a_bad_batch_in_a_group_fails_alone(store: Store) -> None:
    batches = {f"v{n}": [Event(f"b-{n}-{k}", "view_item", T0, item_id=f"i{k}") for k in range(10)] for n in range(6)}
    batches["v3"][5] = Event("b-3-5", "purchase", T0, item_id="i5", value=float("inf"), order_id="o-3")
    results = _batches_behind_a_held_writer(store, batches)
    assert isinstance(results["v3"], ValueError) and "not a finite number" in str(results["v3"])
    assert all(results[v] == (10, 0) for v in batches if v != "v3"), results
    assert store.count_events("shop") == 50 and store.get_visitor("shop", "v3") is None


def test_batches_of_one_group_are_written_by_one_statement_per_table(store: Store) -> None:
    """Fifteen batches together: one insert of events and one update of visitor states for
    all of them; each batch still gets its own count, duplicates across batches count once,
    and the shared measurement visitor gets no row of its own. On PostgreSQL, where each
    statement is a round trip, the group is four: the visitors' rows made and locked, the
    events, the states, the trending scores."""
    from server.models import ANONYMOUS_VISITOR

    batches = {f"v{n}": [Event(f"c-{n}-{k}", "view_item", T0 + timedelta(seconds=k), item_id=f"i{k}") for k in range(4)]
               for n in range(13)}
    batches["v12"][0] = Event("c-0-0", "view_item", T0, item_id="i0")  # v0's event id, sent again by v12
    batches[ANONYMOUS_VISITOR] = [Event("c-anon-0", "view_item", T0, item_id="i9")]
    batches["v0-again"] = []  # an empty batch
    statements: list[str] = []

    def seen(conn, cursor, statement, *args) -> None:
        statements.append(" ".join(statement.split())[:40])

    sa.event.listen(store.engine, "before_cursor_execute", seen)
    try:
        results = _batches_behind_a_held_writer(store, batches)
    finally:
        sa.event.remove(store.engine, "before_cursor_execute", seen)
    assert results["v0"] == (4, 0) and results["v12"] == (3, 1), results
    assert all(results[f"v{n}"] == (4, 0) for n in range(1, 12)) and results[ANONYMOUS_VISITOR] == (1, 0)
    assert results["v0-again"] == (0, 0)
    assert sum(s.startswith("INSERT INTO events") for s in statements) == 1, statements
    assert sum(s.startswith("UPDATE visitors SET state") for s in statements) == 1, statements
    if store.dialect == "postgresql":
        assert [s.split(" (")[0].split(" SET ")[0] for s in statements] == [
            "INSERT INTO visitors", "INSERT INTO events", "UPDATE visitors", "INSERT INTO item_trends"], statements
    assert store.count_events("shop") == 13 * 4 - 1 + 1
    assert [e.item_id for e in store.get_visitor("shop", "v5").state.events()] == ["i3", "i2", "i1", "i0"]
    assert [e.item_id for e in store.get_visitor("shop", "v12").state.events()] == ["i3", "i2", "i1"]
    assert store.get_visitor("shop", ANONYMOUS_VISITOR) is None
    assert set(store.trending("shop")) == {"i0", "i1", "i2", "i3", "i9"}  # the anonymous batch counts for trending too


def test_the_group_writer_keeps_its_connection_and_one_the_database_dropped_loses_no_batch(postgres_url: str) -> None:
    """The writer's transactions run on one connection kept from group to group (no pool
    checkout, no ping each time). When the database ends it (a restart, an administrator),
    the next batch is still written, on a new connection, and acknowledged once."""
    store = open_store(postgres_url)
    store.migrate()
    backend = sa.text("SELECT pg_backend_pid()")
    try:
        first = store._group.run(lambda conn: conn.execute(backend).scalar_one(), durable=False)
        assert store.record_events("shop", "v1", [Event("drop-1", "view_item", T0, item_id="i1")]) == (1, 0)
        assert store._group.run(lambda conn: conn.execute(backend).scalar_one(), durable=False) == first
        admin = sa.create_engine(postgres_url)
        with admin.connect() as conn:
            assert conn.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": first}).scalar_one()
        admin.dispose()
        assert store.record_events("shop", "v1", [Event("drop-2", "add_to_cart", T0, item_id="i2")]) == (1, 0)
        assert store.count_events("shop") == 2
        assert [e.item_id for e in store.get_visitor("shop", "v1").state.events()] == ["i2", "i1"]
        assert store._group.run(lambda conn: conn.execute(backend).scalar_one(), durable=False) != first
    finally:
        store.close()


def test_postgres_reads_run_in_autocommit_and_writes_in_one_transaction_on_the_same_pool(postgres_url: str) -> None:
    """Reads skip BEGIN and ROLLBACK (two round trips of three); a connection back in the
    pool is transactional again, so a write that fails halfway leaves nothing."""
    store = open_store(postgres_url)
    store.migrate()
    try:
        with store._reading() as conn:
            assert conn.connection.dbapi_connection.autocommit
        assert store.engine.pool.size() >= 1
        with pytest.raises(StoreError):
            with store._writing() as conn:
                assert not conn.connection.dbapi_connection.autocommit
                conn.execute(sa.insert(items_table), [dict(shop="shop", item_id="half", title="Half")])
                conn.execute(sa.text("SELECT 1/0"))
        assert store.get_item("shop", "half") is None
    finally:
        store.close()


def test_two_batches_of_one_visitor_in_one_transaction_keep_both_in_the_state(store: Store) -> None:
    from server.store.sql import _EventBatch

    first = _EventBatch("shop", "v1", (Event("s-1", "view_item", T0, item_id="i1"),))
    second = _EventBatch("shop", "v1", (Event("s-2", "add_to_cart", T0 + timedelta(seconds=1), item_id="i2"),
                                        Event("s-1", "view_item", T0, item_id="i1")))
    with store._writing() as conn:
        assert store._store_event_batches(conn, [first, second]) == [1, 1]
    assert [e.item_id for e in store.get_visitor("shop", "v1").state.events()] == ["i2", "i1"]


def test_while_the_store_is_busy_one_write_waits_and_the_others_are_refused_at_once(store: Store) -> None:
    import threading
    import time

    store._group.run(lambda conn: None, durable=False)  # the writer is up
    # The store is found busy: a job of the group raises StoreBusy (as a held lock does).
    def busy(conn):
        raise StoreBusy("held")

    with pytest.raises(StoreBusy):
        store._group.run(busy, durable=False)
    release = threading.Event()
    probe_result: list = []
    probe = threading.Thread(target=lambda: probe_result.append(
        store._group.run(lambda conn: release.wait(5) and "probe through", durable=False)))
    probe.start()
    time.sleep(0.1)
    started = time.perf_counter()
    with pytest.raises(StoreBusy, match="finding out"):
        store.record_events("shop", "v1", [Event("busy-001", "view_item", T0, item_id="i")])
    assert time.perf_counter() - started < 0.1  # refused at once, not after the timeout
    release.set()
    probe.join(5)
    assert probe_result == ["probe through"]
    assert store.record_events("shop", "v1", [Event("busy-001", "view_item", T0, item_id="i")]) == (1, 0)


def test_a_deadlock_victim_is_written_again(store: Store) -> None:
    from server.store import StoreConflict

    tries: list[int] = []

    def chosen_as_victim_once(conn):
        tries.append(1)
        if len(tries) == 1:
            raise StoreConflict("DeadlockDetected (40P01) in: UPDATE visitors ...")
        return "written"

    assert store._group.run(chosen_as_victim_once, durable=False) == "written"
    assert len(tries) == 2


def test_a_visitor_state_cached_by_one_worker_shows_another_workers_writes(store_url: str) -> None:
    """Each store (one per worker) keeps states parsed by their stored text: a write by the
    other one changes the text, so the next read parses the new state."""
    first, second = open_store(store_url), open_store(store_url)
    try:
        first.migrate()
        first.record_events("shop", "v1", [Event("w-1", "view_item", T0, item_id="i1")])
        assert [e.item_id for e in first.get_visitor("shop", "v1").state.events()] == ["i1"]
        assert [e.item_id for e in second.get_visitor("shop", "v1").state.events()] == ["i1"]
        second.record_events("shop", "v1", [Event("w-2", "view_item", T0 + timedelta(seconds=1), item_id="i2")])
        assert [e.item_id for e in first.get_visitor("shop", "v1").state.events()] == ["i2", "i1"]
        later = T0 + timedelta(seconds=2)
        second.record_page_views([PageView("shop", "v1", later, 1800, event=Event("w-3", "page_view", later, item_id="i3"))])
        assert [e.item_id for e in first.get_visitor("shop", "v1").state.events()] == ["i3", "i2", "i1"]
        first.record_events("shop", "v1", [Event("w-4", "add_to_cart", T0 + timedelta(seconds=3), item_id="i4")])
        assert [e.item_id for e in second.get_visitor("shop", "v1").state.events()] == ["i4", "i3", "i2", "i1"]
    finally:
        first.close()
        second.close()
