"""B2B through the real app: customer groups, price lists with quantity tiers in every item
card, items a group may not buy, the reorder widget and its links, the price list import."""

from __future__ import annotations

import html
import re
from datetime import timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from starlette.testclient import TestClient

from server.cli import main
from server.customers.keys import sign
from server.imports import ImportFailed, read_price_list
from server.models import CatalogItem, Customer, Order, utcnow
from server.shops import ShopConfigError, parse_shop_config

PRICES = """group,item_id,min_quantity,price,allowed
trade,85123A,1,2.20,
trade,85123A,10,2.00,
trade,85123A,50,1.80,
trade,22632,12,1.50,
trade,71053,,,false
"""


def ago(days: float):
    return (utcnow() - timedelta(days=days)).replace(tzinfo=timezone.utc)


@pytest.fixture
def trade(services, tmp_path: Path) -> None:
    """A trade customer with three orders, a shopper without a group, and the price list."""
    services.store.upsert_items("demo", [CatalogItem("A&B/1", "Crate of Jars", category="Kitchen", price=9.0, currency="GBP")])
    services.store.import_customers("demo", [Customer("t1", first_name="Tess", group="trade"), Customer("s1", first_name="Sam")])
    services.store.import_orders("demo", [
        Order("o1", "t1", ago(30), 40.0, "GBP", (("85123A", 12.0), ("22632", 6.0))),
        Order("o2", "t1", ago(10), 60.0, "GBP", (("85123A", 24.0), ("A&B/1", 2.0))),
        Order("o3", "t1", ago(5), 20.0, "GBP", (("22112", 3.0), ("71053", 4.0))),
        Order("o4", "s1", ago(3), 5.0, "GBP", (("22632", 1.0),)),
    ])
    prices = tmp_path / "prices.csv"
    prices.write_text(PRICES)
    found = read_price_list(prices)
    services.store.import_price_list("demo", found.tiers, found.restricted)
    services.search.rebuild("demo")


def browser(app) -> TestClient:
    """A browser of its own (its own cookies)."""
    return TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))


def logged_in(app, services, customer_id: str | None) -> TestClient:
    client = browser(app)
    body: dict = {"shop": "demo", "slots": []}
    if customer_id:
        body["identify"] = {"id": customer_id, "signature": sign(services.shop_keys.key("demo"), customer_id)}
    r = client.post("/v1/page?shop=demo", json=body)
    assert r.status_code == 200, r.text
    if customer_id:
        assert r.json()["identify"]["identified"] is True
    return client


def fragment(client: TestClient, kind: str, **params: str) -> str:
    r = client.get(f"/v1/fragments/{kind}", params={"shop": "demo", **params})
    assert r.status_code == 200, r.text
    return r.text


def card(page: str, item_id: str) -> str:
    found = re.search(rf'<li data-item-id="{re.escape(html.escape(item_id))}">.*?</li>', page, re.S)
    assert found, f"no card of {item_id} in {page}"
    return found.group(0)


def shown_ids(page: str) -> list[str]:
    return [html.unescape(i) for i in re.findall(r'data-item-id="([^"]+)"', page)]


# -- groups and prices -----------------------------------------------------------------


def test_the_groups_prices_and_tiers_are_in_every_item_card_of_its_visitors_only(app, services, trade) -> None:
    tess, sam = logged_in(app, services, "t1"), logged_in(app, services, "s1")
    assert fragment(tess, "banner", placement="top", _context="1") and tess.get(
        "/v1/fragments/banner", params={"shop": "demo", "placement": "top", "_context": "1"}).json()["visitor"]["customer"] == {
        "id": "t1", "first_name": "Tess", "group": "trade"}
    for kind, params in (("recommendations", {"strategy": "trending", "count": "6"}),
                         ("search", {"q": "hanging heart"}),
                         ("category", {"category": "Candles and lights"})):
        mine = card(fragment(tess, kind, **params), "85123A")
        assert re.search(r"data-vitrine-group-price>£2\.20 <s[^>]*>£2\.55</s>", mine), (kind, mine)
        assert "from 10: £2.00 · from 50: £1.80" in mine, (kind, mine)
        theirs = card(fragment(sam, kind, **params), "85123A")
        assert "£2.55" in theirs and "group-price" not in theirs and "from 10" not in theirs, (kind, theirs)
    # A first tier from 12 pieces: the catalog's price stands below it, the tier is listed.
    towel = card(fragment(tess, "recommendations", strategy="trending", count="6"), "22632")
    assert "£1.85" in towel and "group-price" not in towel and "from 12: £1.50" in towel
    # An anonymous visitor sees the catalog's prices.
    assert "from 10" not in fragment(browser(app), "recommendations", strategy="trending", count="6")


def test_the_customer_group_is_an_audience_fact(app, services, trade) -> None:
    from server.audiences.facts import FACTS

    assert FACTS["customer_group"].not_sized
    tess = logged_in(app, services, "t1")
    context = tess.get("/v1/fragments/popup", params={"shop": "demo", "_context": "1"}).json()
    assert context["visitor"]["customer"]["group"] == "trade"
    assert "business_first_visit" not in context["visitor"]["audiences"]  # the demo's is "wholesale"
    services.store.import_customers("demo", [Customer("w1", first_name="Will", group="wholesale")])
    will = logged_in(app, services, "w1")
    context = will.get("/v1/fragments/popup", params={"shop": "demo", "_context": "1"}).json()
    assert "business_first_visit" in context["visitor"]["audiences"]
    assert "Welcome, trade buyer!" in fragment(will, "popup")


def test_a_b2b_landing_source_gets_the_business_welcome(app) -> None:
    client = browser(app)
    landing = "http://127.0.0.1:8000/demo/?utm_source=partner&utm_medium=email&utm_campaign=spring-b2b"
    r = client.post("/v1/page?shop=demo", json={"shop": "demo", "page": {"url": landing}, "slots": []})
    assert r.status_code == 200, r.text
    popups = [p["campaign"] for p in r.json()["popups"]]
    assert popups[0] == "trade-welcome", popups  # first: over the shoppers' welcome
    other = browser(app)
    r = other.post("/v1/page?shop=demo", json={"shop": "demo", "page": {"url": "http://127.0.0.1:8000/demo/"}, "slots": []})
    assert "trade-welcome" not in [p["campaign"] for p in r.json()["popups"]]


def test_the_price_list_is_held_in_memory_and_reloaded_when_its_version_moves(app, services, trade) -> None:
    lists = services.catalog.prices
    held = lists.shop("demo")
    assert lists.shop("demo") is held  # the same version: nothing read again
    assert held.prices["trade"]["85123A"].at(24, 2.55) == 2.00
    services.store.import_price_list("demo", [("trade", "85123A", 1, 1.99)], [])
    tess = logged_in(app, services, "t1")
    mine = card(fragment(tess, "recommendations", strategy="trending", count="6"), "85123A")
    assert "£1.99" in mine and "from 10" not in mine
    assert "71053" in shown_ids(fragment(tess, "recommendations", strategy="trending", count="6"))
    assert lists.shop("demo") is not held


# -- restrictions ----------------------------------------------------------------------


def test_items_a_group_may_not_buy_are_never_recommended_nor_found_for_it(app, services, trade) -> None:
    tess, sam = logged_in(app, services, "t1"), logged_in(app, services, "s1")
    for strategy in ("trending", "trending_near_you", "bestsellers", "top_picks", "similar", "buy_again"):
        params = {"strategy": strategy, "count": "6", "item": "85123A"}
        assert "71053" not in shown_ids(fragment(tess, "recommendations", **params)), strategy
    assert "71053" in shown_ids(fragment(sam, "recommendations", strategy="trending", count="6"))
    assert "71053" in shown_ids(fragment(sam, "search", q="lantern"))
    assert "71053" not in shown_ids(fragment(tess, "search", q="lantern"))
    assert "71053" not in shown_ids(fragment(tess, "search", q="lantern", suggest="1"))
    assert "71053" in shown_ids(fragment(sam, "category", category="Candles and lights"))
    assert "71053" not in shown_ids(fragment(tess, "category", category="Candles and lights"))
    assert "71053" not in shown_ids(fragment(tess, "reorder"))  # ordered before, not to be ordered again


# -- the reorder widget ----------------------------------------------------------------


def test_the_reorder_widget_lists_the_usual_items_with_the_last_quantity_and_cart_links(app, services, trade) -> None:
    tess = logged_in(app, services, "t1")
    page = fragment(tess, "reorder")
    assert 'data-vitrine-widget="reorder"' in page and "Order again" in page
    # Most often ordered first (85123A, in two orders), then the most recently ordered.
    assert shown_ids(page) == ["85123A", "22112", "A&B/1", "22632"]
    links = [html.unescape(h) for h in re.findall(r'data-vitrine-reorder href="([^"]+)"', page)]
    assert links == [
        "http://127.0.0.1:8000/demo/cart?add=85123A&qty=24",  # the demo's reorder_url, on its site
        "http://127.0.0.1:8000/demo/cart?add=22112&qty=3",
        "http://127.0.0.1:8000/demo/cart?add=A%26B%2F1&qty=2",  # the item id URL-encoded
        "http://127.0.0.1:8000/demo/cart?add=22632&qty=6",
    ]
    heart = card(page, "85123A")
    assert "Last time: 24 × £2.00" in heart and "ordered 2 times" in heart  # the trade tier at 24
    assert "Last time: 6 × £1.85" in card(page, "22632")  # below the first tier of 12: the catalog's
    assert fragment(tess, "reorder", count="2").count("data-vitrine-reorder") == 2


def test_the_reorder_widget_is_empty_for_anyone_else(app, services, trade) -> None:
    services.store.import_customers("demo", [Customer("n1", first_name="Nia", group="trade")])
    for client in (browser(app), logged_in(app, services, "n1")):  # anonymous; a customer without orders
        r = client.get("/v1/fragments/reorder", params={"shop": "demo"})
        assert r.status_code == 200 and "data-vitrine-reorder" not in r.text
        assert r.text.startswith("<!-- vitrine: no reorder for this visitor")
    r = browser(app).post("/v1/page?shop=demo", json={
        "shop": "demo", "slots": [{"id": "again", "widget": "reorder", "attrs": {}}]})
    assert r.status_code == 200 and r.json()["errors"] == {}
    assert not r.json()["fragments"].get("again", {}).get("html")


def test_reorder_url_is_checked_as_a_web_link_when_the_config_loads(tmp_path: Path) -> None:
    config = tmp_path / "shop.toml"
    for pattern, problem in (
        ("javascript:alert({item_id})", "is not a web link"),
        ("//evil.example/{item_id}", "is not a web link"),
        ("https://shop.example/cart?sku={sku}", "unknown placeholder {sku}"),
        ("https://shop.example/cart", "has no {item_id}"),
        ("https://shop.example/cart?sku={item_id", "is not a URL pattern"),
    ):
        config.write_text(f'name = "S"\norigins = []\nreorder_url = "{pattern}"\n')
        with pytest.raises(ShopConfigError) as raised:
            parse_shop_config("s", config)
        assert f"{config}:3: reorder_url:" in str(raised.value) and problem in str(raised.value), str(raised.value)
    config.write_text('name = "S"\norigins = []\nreorder_url = "https://shop.example/cart/add?sku={item_id}&qty={quantity}"\n')
    assert parse_shop_config("s", config).reorder_url.endswith("{quantity}")


# -- the import ------------------------------------------------------------------------


def vitrine(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], env={"VITRINE_SECRET_KEYS": "test-key-1"})


def test_import_prices_lists_every_broken_row_by_line_and_imports_nothing(tmp_path: Path) -> None:
    data = tmp_path / "state"
    assert vitrine(data, "shops", "create", "myshop", "--origin", "https://www.myshop.example").exit_code == 0
    broken = tmp_path / "prices.csv"
    broken.write_text(
        "group,item_id,min_quantity,price,allowed\n"
        "trade,A1,1,2.00,\n"
        "trade,A1,ten,1.90,\n"
        "trade,A1,1,1.80,\n"
        ",A2,1,1.00,\n"
        "trade,A3,1,-1,\n"
        "trade,A4,,,maybe\n"
        "trade,A5,1,1.00,false\n"
        "trade,A1,,,false\n"
        "trade,A6,5,,\n"
    )
    result = vitrine(data, "import", "prices", str(broken), "--shop", "myshop")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"Error: {broken}:3: bad min_quantity 'ten' (expected a whole number from 1 to 1,000,000)",
        f"{broken}:4: duplicate tier: group 'trade', item_id 'A1', min_quantity 1 (first on line 2)",
        f"{broken}:5: empty group",
        f"{broken}:6: bad price '-1': must not be negative",
        f"{broken}:7: bad allowed 'maybe' (expected true/false, yes/no or 1/0)",
        f"{broken}:8: a row with allowed=false has no price or min_quantity (the group may not buy the item at all)",
        f"{broken}:9: item 'A1' has a price for group 'trade' (line 2) and allowed=false",
        f"{broken}:10: empty price (or write allowed=false for an item the group may not buy)",
        "Nothing was imported.",
    ]
    missing = tmp_path / "missing.csv"
    missing.write_text("item_id,price\nA1,2\n")
    result = vitrine(data, "import", "prices", str(missing), "--shop", "myshop")
    assert result.exit_code == 2 and f"{missing}:1: missing required column group (found: item_id, price)" in result.stderr
    good = tmp_path / "good.csv"
    good.write_text(PRICES)
    result = vitrine(data, "import", "prices", str(good), "--shop", "myshop")
    assert result.exit_code == 0, result.output
    assert "4 price tiers and 1 items not allowed, for 1 customer groups" in result.stdout
    assert vitrine(data, "import", "prices", str(good), "--shop", "nope").exit_code == 2


def test_read_price_list_needs_a_file_and_a_header(tmp_path: Path) -> None:
    with pytest.raises(ImportFailed, match="no such file"):
        read_price_list(tmp_path / "none.csv")
    empty = tmp_path / "empty.csv"
    empty.write_text("")
    with pytest.raises(ImportFailed, match="empty"):
        read_price_list(empty)


# -- the store, on both backends -------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    from server.store import open_store

    store = open_store(f"sqlite:///{tmp_path / 'v.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url"))
    store.migrate()
    yield store
    store.close()


def test_a_price_list_replaces_the_one_before_and_moves_the_version(any_store) -> None:
    assert any_store.price_list_version("s") == 0 and any_store.price_list("s") == ([], [])
    assert any_store.import_price_list("s", [("trade", "A", 1, 2.0), ("trade", "A", 10, 1.5)], [("trade", "B")]) == 1
    any_store.import_price_list("other", [("trade", "A", 1, 9.0)], [])
    assert any_store.price_list("s") == ([("trade", "A", 1, 2.0), ("trade", "A", 10, 1.5)], [("trade", "B")])
    assert any_store.import_price_list("s", [("vip", "C", 5, 3.0)], []) == 2
    assert any_store.price_list("s") == ([("vip", "C", 5, 3.0)], [])
    assert any_store.price_list("other") == ([("trade", "A", 1, 9.0)], [])


def test_a_customers_purchases_for_reordering(any_store) -> None:
    any_store.import_orders("s", [Order("1", "t", ago(9), 5.0, lines=(("A", 6.0), ("B", 1.0))),
                                  Order("2", "t", ago(2), 5.0, lines=(("A", 12.0),)),
                                  Order("3", "x", ago(1), 5.0, lines=(("C", 1.0),))])
    found = any_store.customer_purchases("s", "t")
    assert [order for _, order, _, _ in found] == ["2", "1"]
    from server.b2b.reorder import usual_items

    assert [(u.item_id, u.orders, u.quantity) for u in usual_items(found)] == [("A", 2, 12.0), ("B", 1, 1.0)]
