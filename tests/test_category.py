"""Category pages: the `category` fragment URL (HTML and order-only JSON), each sort, pages,
sub-categories, out-of-stock items and the slot on a shop page."""

from __future__ import annotations

import numpy as np
import pytest

from server.models import CatalogItem
from server.recommend.artifact import save_artifact

SHOP = "demo"
KITCHEN = [f"k{n:02d}" for n in range(30)]
CATALOG = [CatalogItem(i, f"Kitchen thing {i}", category="Kitchen", price=2.0, currency="GBP",
                       url=f"/demo/product/{i}") for i in KITCHEN]
CATALOG += [CatalogItem(f"g{n}", f"Garden thing {n}", category="Home > Garden") for n in range(3)]
CATALOG += [CatalogItem(f"d{n}", f"Decor thing {n}", category="Home > Decor") for n in range(2)]


@pytest.fixture
def shop(services):
    services.store.upsert_items(SHOP, CATALOG)
    return services


def send(client, services, visitor_id: str, *events: dict) -> None:
    body = {"shop": SHOP, "token": services.signer.sign(SHOP, visitor_id), "events": list(events)}
    assert client.post(f"/v1/events?shop={SHOP}", json=body).status_code == 202


def buy(item: str, n: int) -> dict:
    return {"event_id": f"buy-{item}-{n:04d}", "type": "purchase", "item_id": item, "value": 2.0,
            "transaction_id": f"T-{item}-{n}"}


def view(item: str, n: int) -> dict:
    return {"event_id": f"view-{item}-{n:04d}", "type": "view_item", "item_id": item}


def order(client, visitor_token: str | None = None, **params) -> dict:
    client.cookies.clear()
    headers = {"X-Visitor-Token": visitor_token} if visitor_token else {}
    r = client.get("/v1/fragments/category", params={"shop": SHOP, "format": "json", **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r.json()


@pytest.fixture
def sales(shop, client):
    """k05 bought 3 times, k07 twice, k01 once; k09 viewed 20 times (trending, never bought)."""
    send(client, shop, "buyer", *[buy(i, n) for i, times in (("k05", 3), ("k07", 2), ("k01", 1)) for n in range(times)])
    send(client, shop, "looker", *[view("k09", n) for n in range(20)])
    return shop


# -- sorts -------------------------------------------------------------------------------
def test_bestsellers_by_purchases_then_the_catalogs_order(sales, client):
    got = order(client, category="Kitchen", sort="bestsellers", per_page=6)
    assert got["items"] == ["k05", "k07", "k01", "k00", "k02", "k03"]
    assert (got["category"], got["sort"], got["page"], got["total"]) == ("kitchen", "bestsellers", 1, 30)


def test_trending_by_decayed_popularity(sales, client):
    # Trending weighs a purchase 5 and a view 1: k09 (20) > k05 (15) > k07 (10) > k01 (5).
    got = order(client, category="kitchen", sort="trending", per_page=5)
    assert got["items"] == ["k09", "k05", "k07", "k01", "k00"]


def publish(settings, user_vector: list[float], visitor_id: str) -> np.ndarray:
    """A model with one known visitor; returns the item scores it gives them."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(len(KITCHEN), 4)).astype(np.float32)
    biases = rng.normal(scale=0.1, size=len(KITCHEN)).astype(np.float32)
    save_artifact(
        settings.resolved_data_dir / "models", SHOP, item_ids=KITCHEN, item_vectors=vectors, item_biases=biases,
        user_ids=[visitor_id], user_vectors=np.array([user_vector], dtype=np.float32),
        user_feature_names=["segment:new"], user_feature_vectors=np.zeros((1, 4), dtype=np.float32),
        bought_together={}, popularity=KITCHEN, meta={"test": True},
    )
    return vectors @ np.array(user_vector, dtype=np.float32) + biases


def test_personal_is_the_model_order_for_this_visitor(sales, settings, client):
    scores = publish(settings, [1.0, -0.5, 0.2, 0.0], "u:someone")
    expected = [KITCHEN[i] for i in np.argsort(-scores)]
    got = order(client, sales.signer.sign(SHOP, "u:someone"), category="Kitchen", sort="personal", per_page=30)
    assert got["sort"] == "personal" and got["items"] == expected
    # Another visitor (known to nobody: the model places them by their features) sees another order.
    other = order(client, sales.signer.sign(SHOP, "u:someone-else"), category="Kitchen", per_page=30)
    assert other["sort"] == "personal" and other["items"] != expected


def test_personal_without_a_model_falls_back_to_bestsellers(sales, client):
    got = order(client, category="Kitchen", sort="personal", per_page=3)
    assert (got["sort"], got["items"]) == ("bestsellers", ["k05", "k07", "k01"])
    client.cookies.clear()
    r = client.get("/v1/fragments/category", params={"shop": SHOP, "category": "Kitchen"})
    assert r.headers["x-vitrine-strategy"] == "bestsellers"


def test_context_shows_the_sort_served_and_each_items_score(sales, client):
    client.cookies.clear()
    r = client.get("/v1/fragments/category", params={"shop": SHOP, "category": "Kitchen", "per_page": 4, "_context": 1})
    info = r.json()["category"]
    assert (info["requested"], info["sort"]) == ("personal", "bestsellers")
    assert list(info["scores"]) == info["items"] == ["k05", "k07", "k01", "k00"]
    assert info["scores"]["k05"] > info["scores"]["k07"] > info["scores"]["k01"] > info["scores"]["k00"] == 0


# -- pages -------------------------------------------------------------------------------
def test_pages_split_the_whole_order(sales, client):
    everything = order(client, category="Kitchen", sort="bestsellers", per_page=30)["items"]
    pages = [order(client, category="Kitchen", sort="bestsellers", per_page=12, page=n) for n in (1, 2, 3)]
    assert [p["items"] for p in pages] == [everything[:12], everything[12:24], everything[24:]]
    assert pages[2]["pages"] == 3 and pages[2]["total"] == 30
    assert order(client, category="Kitchen", per_page=12, page=9)["items"] == []


def test_html_grid_with_items_sort_control_and_page_links(sales, client):
    client.cookies.clear()
    r = client.get("/v1/fragments/category", params={"shop": SHOP, "category": "kitchen", "sort": "trending",
                                                     "per_page": 12, "page": 2})
    assert r.status_code == 200 and r.headers["x-vitrine-template"] == "category.html"
    ids = [part.split('"')[0] for part in r.text.split('data-item-id="')[1:]]
    assert ids == order(client, category="kitchen", sort="trending", per_page=12, page=2)["items"]
    assert 'href="?shop=demo&amp;category=kitchen&amp;sort=trending&amp;per_page=12&amp;page=1" rel="prev"' in r.text
    assert 'href="?shop=demo&amp;category=kitchen&amp;sort=trending&amp;per_page=12&amp;page=3" rel="next"' in r.text
    assert 'data-vitrine-sort="bestsellers"' in r.text and "Page 2 of 3" in r.text
    client.cookies.clear()
    last = client.get("/v1/fragments/category", params={"shop": SHOP, "category": "kitchen", "per_page": 12, "page": 3})
    assert 'rel="prev"' in last.text and 'rel="next"' not in last.text


# -- what belongs to a category ---------------------------------------------------------
def test_a_parent_category_has_the_items_of_the_categories_below_it(shop, client):
    got = order(client, category="home", sort="bestsellers", per_page=24)
    assert sorted(got["items"]) == ["d0", "d1", "g0", "g1", "g2"] and got["name"] == "Home"
    assert order(client, category="home-garden", sort="bestsellers")["items"] == ["g0", "g1", "g2"]


def test_out_of_stock_items_come_last_in_every_sort(sales, settings, client):
    sales.store.upsert_items(SHOP, [CatalogItem("k05", "Kitchen thing k05", category="Kitchen", in_stock=False)])
    for sort in ("bestsellers", "trending"):
        assert order(client, category="Kitchen", sort=sort, per_page=30)["items"][-1] == "k05"
    publish(settings, [1.0, 0.0, 0.0, 0.0], "u:someone")
    assert order(client, sales.signer.sign(SHOP, "u:someone"), category="Kitchen", per_page=30)["items"][-1] == "k05"


def test_unknown_category_or_sort_is_a_clear_error(shop, client):
    for params, word in (({"category": "Nope"}, "Nope"), ({"category": "Kitchen", "sort": "cheapest"}, "cheapest"),
                         ({}, "missing category")):
        for fmt in ("json", "html"):
            client.cookies.clear()
            r = client.get("/v1/fragments/category", params={"shop": SHOP, "format": fmt, **params})
            assert r.status_code == 422 and word in r.json()["error"]


def test_format_json_is_only_for_kinds_that_have_it(shop, client):
    r = client.get("/v1/fragments/banner", params={"shop": SHOP, "format": "json"})
    assert r.status_code == 400 and "format=json" in r.json()["error"]


# -- a slot on the shop's category page --------------------------------------------------
def test_slot_takes_category_sort_and_page_from_the_shop_page(sales, client):
    client.cookies.clear()
    body = {"shop": SHOP, "page": {"type": "category", "category": "kitchen",
                                   "url": "http://127.0.0.1:8000/demo/category/kitchen?sort=trending&page=2&ref=x"},
            "slots": [{"id": "grid", "widget": "category", "attrs": {"perPage": "5"}}]}
    r = client.post(f"/v1/page?shop={SHOP}", json=body)
    assert r.status_code == 200, r.text
    fragment = r.json()["fragments"]["grid"]
    ids = [part.split('"')[0] for part in fragment["html"].split('data-item-id="')[1:]]
    assert ids == order(client, category="kitchen", sort="trending", per_page=5, page=2)["items"]
    assert fragment["strategy"] == "trending" and fragment["shadow"] is True
    # Links keep the page's own parameters and change only the page or the sort.
    assert 'href="?sort=trending&amp;page=3&amp;ref=x" rel="next"' in fragment["html"]
    assert 'href="?sort=bestsellers&amp;page=1&amp;ref=x"' in fragment["html"]


def test_controls_choose_the_sort_links_and_page_links(sales, client):
    def html(controls: str) -> str:
        client.cookies.clear()
        params = {"shop": SHOP, "category": "kitchen", "controls": controls, "per_page": 10}
        return client.get("/v1/fragments/category", params=params).text

    assert "data-vitrine-sort=" in html("sort,pages") and 'rel="next"' in html("sort,pages")
    assert "data-vitrine-sort=" not in html("pages") and 'rel="next"' in html("pages")
    assert "data-vitrine-sort=" not in html("") and 'rel="next"' not in html("")
