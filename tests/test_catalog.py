"""The catalog in memory: one load per version, fresh within the check interval, aggregates per second."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from server.catalog import Catalog
from server.models import CatalogItem, Event, utcnow

ITEMS = [CatalogItem("a", "Zebra mug", category="Kitchen"), CatalogItem("b", "Apron", category="Kitchen"),
         CatalogItem("c", "Bag", category="Bags", in_stock=False), CatalogItem("d", "Card")]


def counting(engine) -> list[str]:
    seen: list[str] = []
    sa.event.listen(engine, "before_cursor_execute", lambda c, cur, statement, *a: seen.append(statement))
    return seen


def test_items_are_read_once_and_again_only_when_the_catalog_changed(services) -> None:
    store = services.store
    store.upsert_items("shop", ITEMS)
    catalog = Catalog(store, check_interval_s=0)
    first = catalog.shop("shop")
    assert [i.item_id for i in first.get(["d", "x", "a"])] == ["d", "a"]
    assert first.facts(["c"]) == {"c": ("Bags", False)}
    assert [i.title for i in first.in_category("Kitchen")] == ["Apron", "Zebra mug"]
    assert first.categories == [("Kitchen", 2), ("Bags", 1)]
    seen = counting(store.engine)
    assert catalog.shop("shop") is first  # the version did not move: only the version was read
    assert not any("FROM items" in s for s in seen) and any("shop_versions" in s for s in seen)
    store.upsert_items("shop", [CatalogItem("a", "Zebra mug XL", category="Kitchen")])
    assert catalog.shop("shop").get(["a"])[0].title == "Zebra mug XL"


def test_within_the_check_interval_no_query_at_all(services) -> None:
    services.store.upsert_items("shop", ITEMS)
    catalog = Catalog(services.store, check_interval_s=60)
    catalog.shop("shop")
    seen = counting(services.store.engine)
    for _ in range(100):
        catalog.shop("shop").get(["a"])
    assert seen == []


def test_trending_is_read_once_per_interval(services) -> None:
    store = services.store
    store.upsert_items("shop", ITEMS)
    store.record_events("shop", "v1", [Event("t-1", "view_item", utcnow(), item_id="b")])
    catalog = Catalog(store, aggregate_ttl_s=60)
    assert catalog.trending("shop", "", 5) == ["b"]
    store.record_events("shop", "v1", [Event(f"t-{n}", "add_to_cart", utcnow(), item_id="a") for n in range(2, 5)])
    assert catalog.trending("shop", "", 5) == ["b"]  # kept for the interval
    catalog.aggregate_ttl_s = 0
    assert catalog.trending("shop", "", 5) == ["a", "b"]


def test_a_request_never_waits_for_a_list_or_a_version_to_be_read_again(services) -> None:
    # Past their interval, what is held is served at once and the refresh thread reads again.
    store = services.store
    store.upsert_items("shop", ITEMS)
    store.record_events("shop", "v1", [Event("r-1", "view_item", utcnow(), item_id="b")])
    catalog = Catalog(store, check_interval_s=0.05, aggregate_ttl_s=0.05)
    first = catalog.shop("shop")
    assert catalog.trending("shop", "", 5) == ["b"]  # never read yet: read by the request
    store.record_events("shop", "v1", [Event(f"r-{n}", "add_to_cart", utcnow(), item_id="a") for n in range(2, 5)])
    store.upsert_items("shop", [CatalogItem("a", "Zebra mug XL", category="Kitchen")])
    time.sleep(0.1)
    read_by: list[tuple[str, str]] = []
    sa.event.listen(store.engine, "before_cursor_execute",
                    lambda c, cur, statement, *a: read_by.append((threading.current_thread().name, statement)))
    assert catalog.trending("shop", "", 5) == ["b"]  # what is held, at once
    assert catalog.shop("shop") is first
    assert catalog.wait_for_refreshes()
    assert not [s for name, s in read_by if name == threading.current_thread().name]  # no query on the request's time
    assert any("item_trends" in s for _, s in read_by) and any("shop_versions" in s for _, s in read_by)
    assert catalog.trending("shop", "", 5) == ["a", "b"]  # read again meanwhile
    assert catalog.shop("shop").get(["a"])[0].title == "Zebra mug XL"
