"""Personalized search: text tiers, the personal blend, suggestions, popular searches, zero
results, the index kept in step with imports, the fragment URL, the slot and the debug view."""

from __future__ import annotations

import json
import os
import re
import shutil
from datetime import timedelta
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from conftest import DEMO_CONFIG, record_history
from servers import write_demo_config
from server.cli import main
from server.models import CatalogItem, utcnow
from server.recommend.artifact import save_artifact
from server.search import run_popular_searches

BAGS = [
    CatalogItem("b1", "Jumbo Bag Red Retrospot", category="Bags", price=1.95, currency="GBP", url="/demo/product/b1",
                image_url="/demo/img/b1.svg"),
    CatalogItem("b2", "Lunch Bag Pink Polka", category="Bags", price=1.65, currency="GBP", url="/demo/product/b2"),
    CatalogItem("b3", "Charlotte Bag Suki Design", category="Bags", price=0.85, currency="GBP", url="/demo/product/b3"),
    CatalogItem("b4", "Recycling Bag Retrospot", category="Bags", price=2.10, currency="GBP", url="/demo/product/b4"),
]
CHRISTMAS = [
    CatalogItem("x1", "Christmas Gift Bag Large", category="Christmas", price=1.25, currency="GBP",
                url="/demo/product/x1"),
    CatalogItem("x2", "Jumbo Bag 50's Christmas", category="Christmas", price=2.08, currency="GBP",
                url="/demo/product/x2"),
    CatalogItem("x3", "Christmas Tree Decoration", category="Christmas", price=0.85, currency="GBP",
                url="/demo/product/x3"),
    CatalogItem("x4", "Christmas Star Wreath", category="Christmas", price=4.95, currency="GBP", url="/demo/product/x4"),
    CatalogItem("x5", "Paper Chain Kit Vintage Christmas", category="Christmas", price=2.95, currency="GBP",
                url="/demo/product/x5"),
]
KITCHEN = [
    CatalogItem("k1", "Regency Cakestand 3 Tier", category="Kitchen", price=12.75, currency="GBP", url="/demo/product/k1"),
    CatalogItem("k2", "Pack of 72 Retrospot Cake Cases", category="Kitchen", price=0.55, currency="GBP",
                url="/demo/product/k2"),
]
CATALOG = BAGS + CHRISTMAS + KITCHEN
BAG_TEXT_ORDER = ["b4", "b1", "b2", "b3", "x1", "x2"]  # what BM25 alone gives for "bag" (checked below)


@pytest.fixture
def shop(services):
    services.store.upsert_items("demo", CATALOG)
    services.search.sync("demo", CATALOG)
    return services


def publish_model(settings, user: str = "u:christmas-fan") -> None:
    """A two-axis model: Christmas items along the first axis, everything else along the second;
    `user` is a customer the model knows, who likes Christmas."""
    ids = [i.item_id for i in CATALOG]
    vectors = np.array([[1.0, 0.1] if i.startswith("x") else [0.1, 1.0] for i in ids], dtype=np.float32)
    save_artifact(
        settings.resolved_data_dir / "models", "demo",
        item_ids=ids, item_vectors=vectors, item_biases=np.zeros(len(ids), dtype=np.float32),
        user_ids=[user], user_vectors=np.array([[1.0, 0.0]], dtype=np.float32),
        user_feature_names=["country:US", "device:desktop", "segment:new"],
        user_feature_vectors=np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]], dtype=np.float32),
        bought_together={}, popularity=ids, meta={"test": True},
    )


def token(services, visitor_id: str) -> str:
    return services.signer.sign("demo", visitor_id)


def send(client: TestClient, visitor_token: str, *events: dict) -> None:
    body = {"shop": "demo", "token": visitor_token, "events": list(events)}
    assert client.post("/v1/events?shop=demo", json=body).status_code == 202


def views(*items: str) -> list[dict]:
    return [{"event_id": f"view-{item}-{n:04d}", "type": "view_item", "item_id": item} for n, item in enumerate(items)]


def searched(term: str, n: int = 0, days_ago: float = 0) -> dict:
    ts = (utcnow() - timedelta(days=days_ago)).isoformat()
    return {"event_id": f"search-{n:04d}-{abs(hash(term)) % 10**8}", "type": "search", "search_term": term, "ts": ts}


def search(client: TestClient, visitor_token: str | None = None, **params) -> tuple[list[str], str, object]:
    """The result ids of a search fragment, its ranking (personal or text), and the response."""
    client.cookies.clear()
    headers = {"X-Visitor-Token": visitor_token} if visitor_token else {}
    response = client.get("/v1/fragments/search", params={"shop": "demo", **params}, headers=headers)
    assert response.status_code == 200, response.text
    return item_ids(response.text), response.headers.get("x-vitrine-strategy", ""), response


def item_ids(html: str) -> list[str]:
    return re.findall(r'data-item-id="([^"]+)"', html)


def scores(client: TestClient, visitor_token: str | None = None, **params) -> dict:
    client.cookies.clear()
    headers = {"X-Visitor-Token": visitor_token} if visitor_token else {}
    response = client.get("/v1/fragments/search", params={"shop": "demo", "_context": "1", **params}, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["search"]


# -- ranking ---------------------------------------------------------------------------
def test_a_new_visitor_gets_the_plain_text_ranking(shop, client) -> None:
    index_order = [hit.item_id for hit in shop.search.index("demo").search("bag")]
    ids, ranking, _ = search(client, q="bag")
    assert ids == index_order == BAG_TEXT_ORDER
    assert ranking == "text"
    debug = scores(client, q="bag")
    assert debug["weight"] == 0 and debug["ranking"] == "text"
    assert all(r["personal"] == 0 and r["model"] is None and r["affinity"] is None for r in debug["results"])


def test_a_visitor_with_no_history_and_no_model_vector_gets_the_plain_text_ranking(shop, settings, client) -> None:
    publish_model(settings)  # the model cannot place a visitor it never saw who did nothing yet
    ids, ranking, _ = search(client, token(shop, "returning-but-idle"), q="bag")
    assert (ids, ranking) == (BAG_TEXT_ORDER, "text")


def test_a_visitor_who_viewed_christmas_items_sees_christmas_bags_first(shop, client) -> None:
    visitor = token(shop, "christmas-viewer")
    send(client, visitor, *views("x3", "x4", "x5"))  # decorations, no bags
    ids, ranking, _ = search(client, visitor, q="bag")
    assert ranking == "personal"
    assert set(ids[:2]) == {"x1", "x2"} and sorted(ids) == sorted(BAG_TEXT_ORDER)
    debug = scores(client, visitor, q="bag")
    first, last = debug["results"][0], debug["results"][-1]
    assert first["affinity"] == 1.0 and last["affinity"] == 0.0
    assert first["text"] < last["text"] <= 1.0  # the text alone ranks the Christmas bags lower
    assert debug["visitor"]["affinity"] == {"Christmas": 1.0}


def test_the_model_vector_of_a_known_customer_reorders_results(shop, settings, client) -> None:
    publish_model(settings)
    ids, ranking, _ = search(client, token(shop, "u:christmas-fan"), q="bag")
    assert ranking == "personal" and set(ids[:2]) == {"x1", "x2"}
    debug = scores(client, token(shop, "u:christmas-fan"), q="bag")
    assert debug["visitor"]["model_vector"] is True
    assert [r["model"] for r in debug["results"][:2]] == [1.0, 1.0] and debug["results"][-1]["model"] == 0.0
    assert all(r["affinity"] is None for r in debug["results"])  # no events: no affinity


def test_every_word_matched_stays_above_a_partial_match_whatever_the_personal_score(shop, client) -> None:
    shop.search.weight = 1.0  # the most a shop can give the personal score
    visitor = token(shop, "bag-lover")
    send(client, visitor, *views("b1", "b2", "b3"))
    debug = scores(client, visitor, q="christmas bag")
    tiers = [r["tier"] for r in debug["results"]]
    assert tiers == sorted(tiers, reverse=True) and tiers.count(1) == 2
    assert {r["item_id"] for r in debug["results"][:2]} == {"x1", "x2"}
    # ... while among the partial matches the visitor's bags come before Christmas decorations.
    partial = [r["item_id"] for r in debug["results"] if r["tier"] == 0]
    assert partial.index("b4") < partial.index("x3")


def test_out_of_stock_items_come_last(shop, client) -> None:
    sold_out = CatalogItem("b1", "Jumbo Bag Red Retrospot", category="Bags", price=1.95, in_stock=False)
    shop.store.upsert_items("demo", [sold_out])
    ids, _, response = search(client, q="bag")
    assert ids == [i for i in BAG_TEXT_ORDER if i != "b1"] + ["b1"]
    assert "Out of stock" in response.text


def test_recent_searches_count_in_the_category_affinity(shop, client) -> None:
    visitor = token(shop, "searcher")
    send(client, visitor, searched("christmas decoration", 1), searched("bag", 2))
    ids, ranking, _ = search(client, visitor, q="bag")
    assert ranking == "personal" and set(ids[:2]) == {"x1", "x2"}
    debug = scores(client, visitor, q="bag")
    # The search being made does not count for itself: only the earlier one does.
    assert debug["visitor"]["searches"] == ["christmas decoration"]
    assert debug["visitor"]["affinity"] == {"Christmas": 1.0}


def test_the_search_being_made_is_not_history_of_its_own(shop, client) -> None:
    visitor = token(shop, "just-searched-bag")
    send(client, visitor, searched("Bag ", 1))
    ids, ranking, _ = search(client, visitor, q="bag")
    assert (ids, ranking) == (BAG_TEXT_ORDER, "text")


# -- pages, slot, debug ----------------------------------------------------------------
def test_fragment_pages_through_the_results(shop, client) -> None:
    first, _, response = search(client, q="bag", count="4")
    second, _, _ = search(client, q="bag", count="4", page="2")
    assert first == BAG_TEXT_ORDER[:4] and second == BAG_TEXT_ORDER[4:]
    assert response.headers["content-type"].startswith("text/html")
    assert response.headers["x-vitrine-template"] == "search.html"
    html = response.text
    assert "6 results for “bag”, page 1 of 2" in html
    assert 'href="?shop=demo&amp;count=4&amp;q=bag&amp;page=2" rel="next"' in html
    assert '<img src="http://127.0.0.1:8000/demo/img/b1.svg"' in html and 'href="http://127.0.0.1:8000/demo/product/b1"' in html and "£1.95" in html


def test_at_most_the_candidates_are_ranked_and_the_page_says_there_are_more(shop, client, monkeypatch) -> None:
    monkeypatch.setattr("server.search.CANDIDATES", 3)
    ids, _, response = search(client, q="bag")
    assert ids == BAG_TEXT_ORDER[:3]
    assert "More than 3 results for “bag”" in response.text
    assert scores(client, q="bag")["more"] is True


def test_the_page_call_fills_a_search_slot(shop, client) -> None:
    slot = {"id": "search-results", "widget": "search",
            "attrs": {"query": "bag", "page": "2", "count": "4", "searchUrl": "/demo/search"}}
    response = client.post("/v1/page?shop=demo", json={"shop": "demo", "page": {"type": "search"}, "slots": [slot]})
    assert response.status_code == 200, response.text
    fragment = response.json()["fragments"]["search-results"]
    assert fragment["shadow"] is True and fragment["strategy"] == "text"
    assert item_ids(fragment["html"]) == BAG_TEXT_ORDER[4:]
    assert 'data-vitrine-list="search-results"' in fragment["html"]
    assert 'href="/demo/search?q=bag"' in fragment["html"]  # page 1, on the shop's own search page


def test_an_empty_query_leaves_the_slot_to_its_default_content(shop, client) -> None:
    slot = {"id": "search-results", "widget": "search", "attrs": {"query": "  "}}
    response = client.post("/v1/page?shop=demo", json={"shop": "demo", "slots": [slot]})
    assert response.json()["fragments"] == {} and response.json()["errors"] == {}


def test_debug_view_shows_text_and_personal_scores(shop, client) -> None:
    visitor = token(shop, "christmas-viewer")
    send(client, visitor, *views("x3"))
    debug = scores(client, visitor, q="bag")
    weight = shop.settings.search_personal_weight
    assert debug["query"] == "bag" and debug["ranking"] == "personal" and debug["weight"] == weight
    assert set(debug["results"][0]) >= {"item_id", "bm25", "tier", "text", "model", "affinity", "personal", "score"}
    for r in debug["results"]:
        assert r["score"] == pytest.approx(r["tier"] + (1 - weight) * r["text"] + weight * r["personal"], abs=1e-3)
    client.cookies.clear()
    html = client.get("/v1/fragments/search", params={"shop": "demo", "q": "bag", "_debug": "1"},
                      headers={"X-Visitor-Token": visitor}).text
    comment = json.loads(html.split("<!-- vitrine debug", 1)[1].rsplit("-->", 1)[0])
    assert [r["item_id"] for r in comment["search"]["results"]] == item_ids(html.split("<!--", 1)[0])


# -- the search box --------------------------------------------------------------------
def test_a_search_url_is_a_path_or_a_web_address_never_a_script(shop, client) -> None:
    html = search(client, q="bag", count="4", search_url="javascript:alert(1)//")[2].text
    assert "javascript:" not in html and 'href="?shop=demo&amp;count=4&amp;q=bag&amp;page=2"' in html
    html = search(client, q="bag", count="4", search_url="https://shop.example/find?lang=en")[2].text
    assert 'href="https://shop.example/find?lang=en&amp;q=bag&amp;page=2"' in html


def test_suggestions_as_you_type(shop, client) -> None:
    _, kind, response = search(client, q="chri", suggest="1", search_url="/demo/search")
    assert kind == "completions"
    html = response.text
    suggestions = re.findall(r'data-suggestion="([^"]+)"', html)
    assert suggestions[0] == "christmas" and "christmas gift" in suggestions
    assert '<a href="/demo/search?q=christmas">christmas</a>' in html
    products = item_ids(html)
    assert 1 <= len(products) <= 4 and set(products) <= {"x1", "x2", "x3", "x4", "x5"}
    assert 'href="/demo/search?q=chri"' in html  # every result


def test_an_empty_box_suggests_popular_searches_of_the_last_30_days(shop, client) -> None:
    shop.search.popular_min_visitors = 2
    _, kind, response = search(client, q="", suggest="1")
    assert kind == "categories"  # no searches yet: the largest categories
    assert re.findall(r'data-suggestion="([^"]+)"', response.text)[:2] == ["Christmas", "Bags"]

    for n, visitor in enumerate(("v1", "v2", "v3")):
        send(client, token(shop, visitor), searched("Bag", n), searched("zzqxw", n + 10))
    send(client, token(shop, "v1"), searched("bag", 20))  # the same visitor again counts once
    send(client, token(shop, "v4"), searched("christmas", 30))
    send(client, token(shop, "v6"), searched("Christmas ", 31), searched("retrospot", 32))
    record_history(shop, "demo", token(shop, "v5"), searched("cake", 40, days_ago=45), searched("wreath", 41))
    send(client, token(shop, "v7"), searched("wreath", 42))
    record_history(shop, "demo", token(shop, "v8"), searched("wreath", 43, days_ago=45))
    assert search(client, q="", suggest="1")[1] == "categories"  # the worker has not counted them yet
    assert run_popular_searches(shop) == "demo: 3 terms"
    _, kind, response = search(client, q="", suggest="1")
    assert kind == "searches"
    # Most visitors first; a term that finds nothing is left out; one visitor is not enough
    # ("retrospot"); searches older than 30 days do not count (the second "wreath").
    assert re.findall(r'data-suggestion="([^"]+)"', response.text) == ["bag", "christmas", "wreath"]
    assert shop.store.popular_searches("demo", utcnow() - timedelta(days=30))[0] == ("bag", 3)
    assert ("retrospot", 1) not in shop.store.popular_searches("demo", utcnow() - timedelta(days=30), 50, min_visitors=2)


@pytest.mark.parametrize("term", [
    "bag www.evil.example", "https://evil.example/bag", "bag evil-shop.com", "bag me@example.com",
    "bag 07700 900123", "bag 4111111111111111", "bag " + "x" * 40,
])
def test_popular_searches_never_show_what_looks_like_personal_data(shop, client, term) -> None:
    shop.search.popular_min_visitors = 2
    shop.search.popular_ttl_s = 0
    for n in range(4):
        send(client, token(shop, f"spam{n}"), searched(term, 50 + n), searched("wreath", 60 + n))
    run_popular_searches(shop)
    _, kind, response = search(client, q="", suggest="1")
    assert kind == "searches"
    shown = re.findall(r'data-suggestion="([^"]+)"', response.text)
    assert shown == ["wreath"], shown


def test_one_visitor_or_a_few_fake_ones_are_not_enough_by_default(shop, client) -> None:
    shop.search.popular_ttl_s = 0
    for n in range(9):  # the default needs 10 distinct visitors
        send(client, token(shop, f"fake{n}"), searched("buy cheap pills", 70 + n), searched("wreath", 80 + n))
    run_popular_searches(shop)
    assert search(client, q="", suggest="1")[1] == "categories"
    send(client, token(shop, "fake9"), searched("wreath", 99))
    run_popular_searches(shop)
    _, kind, response = search(client, q="", suggest="1")
    assert kind == "searches" and re.findall(r'data-suggestion="([^"]+)"', response.text) == ["wreath"]


def test_nothing_to_suggest_is_an_empty_fragment(shop, client) -> None:
    _, _, response = search(client, q="zzqxw", suggest="1")
    assert "vitrine-suggest" not in response.text


# -- zero results ----------------------------------------------------------------------
def test_zero_results_offer_a_spelling_alternative_and_trending_items(shop, client) -> None:
    buyer = token(shop, "buyer")
    send(client, buyer, *views("k2", "k2", "x4"))
    ids, _, response = search(client, q="cakstnd", search_url="/demo/search")
    html = response.text
    assert "No products match “cakstnd”" in html
    assert 'Did you mean <a href="/demo/search?q=cakestand">cakestand</a>?' in html
    assert "Trending now" in html and ids[:2] == ["k2", "x4"]
    assert search(client, q="cakestand")[0] == ["k1"]


def test_zero_results_without_a_spelling_alternative(shop, client) -> None:
    ids, _, response = search(client, q="qqqqqq")
    assert "No products match" in response.text and "Did you mean" not in response.text
    assert len(ids) == 4  # trending, else bestsellers, else the catalog: never an empty page


# -- the index in step with the store --------------------------------------------------
def test_import_catalog_keeps_the_index_in_step(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in os.environ if n.startswith("VITRINE_")]:
        monkeypatch.delenv(name)
    data_dir = tmp_path / "state"
    write_demo_config(data_dir / "shops" / "demo.toml")

    def vitrine(*args: str):
        result = CliRunner().invoke(main, ["--data-dir", str(data_dir), *args])
        assert result.exit_code in (0, 1), result.output
        return result

    first = tmp_path / "first.csv"
    first.write_text("item_id,title,category,price,currency\n1,White Metal Lantern,Lights,3.75,GBP\n"
                     "2,Jumbo Bag Red,Bags,1.95,GBP\n")
    assert "Imported 2 catalog items" in vitrine("import", "catalog", str(first), "--shop", "demo").output
    assert item_ids(vitrine("get", "/v1/fragments/search?shop=demo&q=lantern").output) == ["1"]

    second = tmp_path / "second.csv"  # item 1 renamed, item 3 new: only these are written
    second.write_text("item_id,title,category,price,currency\n1,Zinc Garden Planter,Garden,5.00,GBP\n"
                      "3,Moroccan Lantern,Lights,8.50,GBP\n")
    vitrine("import", "catalog", str(second), "--shop", "demo")
    assert item_ids(vitrine("get", "/v1/fragments/search?shop=demo&q=lantern").output) == ["3"]
    assert item_ids(vitrine("get", "/v1/fragments/search?shop=demo&q=planter").output) == ["1"]
    assert item_ids(vitrine("get", "/v1/fragments/search?shop=demo&q=bag").output) == ["2"]


def test_rebuild_brings_a_missing_index_in_step_with_the_store(shop) -> None:
    shop.store.upsert_items("demo", [CatalogItem("n1", "Enamel Flag Sign", category="Home decor")])
    assert not shop.search.in_step("demo")  # stored but not indexed
    shop.search.close()
    shutil.rmtree(shop.settings.resolved_data_dir / "search" / "demo")
    assert shop.search.rebuild("demo") == shop.store.count_items("demo")
    assert shop.search.in_step("demo")
    assert [h.item_id for h in shop.search.index("demo").search("flag")] == ["n1"]
