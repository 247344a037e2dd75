"""Serving recommendations: every strategy, cold start, exclusions, the fallback chain and the widget."""

from __future__ import annotations

import time
from datetime import timedelta

import numpy as np
import pytest
from starlette.testclient import TestClient

from conftest import UK_IP, US_IP, record_history
from server.models import CatalogItem, Event, utcnow
from server.recommend.artifact import save_artifact

# Two kinds of items: A (Christmas) along the first axis, B (kitchen) along the second.
A = [f"a{i}" for i in range(6)]
B = [f"b{i}" for i in range(6)]
CATALOG = [CatalogItem(i, f"Christmas thing {i}", category="Christmas", price=2.0 + n, currency="GBP",
                       url=f"/demo/product/{i}", image_url=f"/demo/img/{i}.svg") for n, i in enumerate(A)]
CATALOG += [CatalogItem(i, f"Kitchen thing {i}", category="Kitchen", price=5.0 + n, currency="GBP",
                        url=f"/demo/product/{i}") for n, i in enumerate(B)]


def vectors_for(ids: list[str]) -> np.ndarray:
    rows = []
    for n, i in enumerate(ids):
        # Distinct lengths so that similarity ranks are strict within a kind.
        rows.append([1.0 - 0.05 * n, 0.1] if i.startswith("a") else [0.1, 1.0 - 0.05 * n])
    return np.array(rows, dtype=np.float32)


def publish(settings, bought_together=None, user_a="u:fan-a", biases=None) -> None:
    items = A + B
    save_artifact(
        settings.resolved_data_dir / "models", "demo",
        item_ids=items, item_vectors=vectors_for(items),
        item_biases=np.zeros(len(items), dtype=np.float32) if biases is None else biases,
        user_ids=[user_a], user_vectors=np.array([[1.0, 0.0]], dtype=np.float32),
        user_feature_names=["country:GB", "country:US", "device:desktop", "segment:new"],
        user_feature_vectors=np.array([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [0.0, 0.0]], dtype=np.float32),
        bought_together=bought_together or {"a1": ["b3", "b4"]},
        popularity=items, meta={"test": True},
    )


@pytest.fixture
def shop(services, settings):
    services.store.upsert_items("demo", CATALOG)
    return services


def token(services, visitor_id: str) -> str:
    return services.signer.sign("demo", visitor_id)


def recs(client: TestClient, ip: str = US_IP, visitor_token: str | None = None, **params) -> tuple[list[str], str, object]:
    headers = {"X-Forwarded-For": ip}
    client.cookies.clear()  # the visitor is the one in the token, or a stranger
    if visitor_token:
        headers["X-Visitor-Token"] = visitor_token
    params = {"shop": "demo", **params}
    r = client.get("/v1/fragments/recommendations", params=params, headers=headers)
    assert r.status_code == 200, r.text
    ids = [part.split('"')[0] for part in r.text.split('data-item-id="')[1:]]
    return ids, r.headers.get("x-vitrine-strategy", ""), r


def send(client: TestClient, visitor_token: str, *events: dict, ip: str | None = None) -> None:
    body = {"shop": "demo", "token": visitor_token, "events": list(events)}
    headers = {"X-Forwarded-For": ip} if ip else {}
    assert client.post("/v1/events?shop=demo", json=body, headers=headers).status_code == 202


def view(item: str, n: int) -> dict:
    return {"event_id": f"view-{item}-{n:04d}", "type": "view_item", "item_id": item}


# -- model strategies ------------------------------------------------------------------
def test_top_picks_for_a_visitor_the_model_knows(shop, settings, client):
    publish(settings)
    ids, strategy, _ = recs(client, visitor_token=token(shop, "u:fan-a"), strategy="top_picks", count=4)
    assert strategy == "top_picks"
    assert ids == ["a0", "a1", "a2", "a3"]


def test_cold_start_visitor_gets_a_vector_from_their_country(shop, settings, client):
    publish(settings)
    uk, strategy, _ = recs(client, ip=UK_IP, strategy="top_picks")
    us, _, _ = recs(client, ip=US_IP, strategy="top_picks")
    assert strategy == "top_picks"
    assert set(uk) <= set(B) and set(us) <= set(A)


def test_panel_changes_within_the_session_as_the_visitor_views_items(shop, settings, client):
    publish(settings)
    visitor = token(shop, "fresh-visitor-1")
    before, _, _ = recs(client, ip=UK_IP, visitor_token=visitor, strategy="top_picks")
    assert set(before) <= set(B)  # GB visitors lean to kind B
    send(client, visitor, *[view(i, n) for n, i in enumerate(["a3", "a4", "a5"])])
    after, _, _ = recs(client, ip=UK_IP, visitor_token=visitor, strategy="top_picks")
    assert after[0] in A and after != before


def test_similar_items_are_of_the_same_kind_and_exclude_the_anchor(shop, settings, client):
    publish(settings)
    ids, strategy, _ = recs(client, strategy="similar", item="a2", count=3)
    assert strategy == "similar"
    assert "a2" not in ids and set(ids) <= set(A)


def test_bought_together_then_its_stand_in_similar(shop, settings, client):
    publish(settings)
    ids, strategy, _ = recs(client, strategy="bought_together", item="a1", count=2)
    assert (ids, strategy) == (["b3", "b4"], "bought_together")
    ids, strategy, _ = recs(client, strategy="bought_together", item="a4", count=2)
    assert strategy == "similar" and set(ids) <= set(A) and "a4" not in ids


# -- history strategies ----------------------------------------------------------------
def test_recently_viewed_newest_first_without_the_page_item(shop, client):
    visitor = token(shop, "browser-1")
    base = utcnow() - timedelta(minutes=5)
    events = [{**view(i, n), "ts": (base + timedelta(seconds=n)).isoformat()} for n, i in enumerate(["b1", "a2", "b5"])]
    send(client, visitor, *events)
    ids, strategy, _ = recs(client, visitor_token=visitor, strategy="recently_viewed", item="b5", count=4)
    assert strategy == "recently_viewed"
    assert ids == ["a2", "b1"]  # not padded with other strategies' items
    ids, strategy, _ = recs(client, visitor_token=token(shop, "nobody-yet"), strategy="recently_viewed", count=4)
    assert strategy != "recently_viewed" and len(ids) == 4  # nothing viewed: the chain fills it


def test_buy_again_puts_the_most_overdue_repeat_purchase_first(shop, client):
    visitor = token(shop, "repeat-buyer")
    now = utcnow()

    def bought(item: str, days_ago: float, n: int) -> dict:
        ts = (now - timedelta(days=days_ago)).isoformat()
        return {"event_id": f"buy-{item}-{n:04d}", "type": "purchase", "item_id": item, "value": 1.0,
                "transaction_id": f"T-{item}-{n}", "ts": ts}

    # b1 every 10 days, last 30 days ago: overdue (3x). a1 every 10 days, last 5 days ago: not due.
    record_history(shop, "demo", visitor, bought("b1", 50, 1), bought("b1", 40, 2), bought("b1", 30, 3),
         bought("a1", 15, 4), bought("a1", 5, 5), bought("b2", 1, 6))
    ids, strategy, _ = recs(client, visitor_token=visitor, strategy="buy_again", count=3)
    assert strategy == "buy_again"
    assert ids == ["b1", "a1", "b2"]


def test_purchased_and_out_of_stock_items_are_left_out(shop, settings, client):
    publish(settings)
    shop.store.upsert_items("demo", [CatalogItem("a1", "Sold out", category="Christmas", in_stock=False)])
    visitor = token(shop, "u:fan-a")
    send(client, visitor, {"event_id": "buy-a0-0001", "type": "purchase", "item_id": "a0", "value": 2.0,
                           "transaction_id": "T-1"})
    ids, _, _ = recs(client, visitor_token=visitor, strategy="top_picks", count=4)
    assert "a0" not in ids and "a1" not in ids
    assert ids[:2] == ["a2", "a3"]


# -- popularity strategies -------------------------------------------------------------
def test_trending_and_trending_near_you(shop, client):
    gb, us = token(shop, "gb-visitor"), token(shop, "us-visitor")
    # Events count where they come from, as the browser that sends them makes the page calls too.
    send(client, gb, *[view("b2", n) for n in range(3)], ip=UK_IP)
    send(client, us, *[view("a4", n) for n in range(10, 15)], ip=US_IP)
    ids, strategy, _ = recs(client, strategy="trending", count=2)
    assert (ids, strategy) == (["a4", "b2"], "trending")
    ids, strategy, _ = recs(client, ip=UK_IP, strategy="trending_near_you", count=1)
    assert (ids, strategy) == (["b2"], "trending_near_you")


def test_bestsellers_overall_and_per_category(shop, client):
    visitor = token(shop, "buyer")
    send(client, visitor, *[
        {"event_id": f"best-{i}-{n:04d}", "type": "purchase", "item_id": i, "value": 1.0, "transaction_id": f"T{i}{n}"}
        for i, times in (("b1", 3), ("a2", 2), ("a5", 1)) for n in range(times)
    ])
    ids, strategy, _ = recs(client, strategy="bestsellers", count=3)
    assert (ids, strategy) == (["b1", "a2", "a5"], "bestsellers")
    ids, _, _ = recs(client, strategy="bestsellers", category="Christmas", count=2)
    assert ids == ["a2", "a5"]


# -- the chain ---------------------------------------------------------------------------
def test_without_a_model_top_picks_falls_back_down_the_chain_and_is_never_empty(shop, client):
    ids, strategy, r = recs(client, strategy="top_picks", count=4)
    assert strategy == "catalog" and len(ids) == 4
    _, _, r = recs(client, strategy="top_picks", count=4, _context=1)
    context = r.json()
    assert [step["strategy"] for step in context["chain"]] == ["top_picks", "trending", "bestsellers", "catalog"]
    visitor = token(shop, "viewer")
    send(client, visitor, view("b4", 1))
    shop.catalog.aggregate_ttl_s = 0  # each worker reads trending again within a second; here, at once
    ids, strategy, _ = recs(client, strategy="top_picks", count=4)
    assert strategy == "trending" and ids[0] == "b4" and len(ids) == 4


def test_unknown_strategy_is_a_clear_error(shop, client):
    r = client.get("/v1/fragments/recommendations", params={"shop": "demo", "strategy": "magic"})
    assert r.status_code == 422 and "magic" in r.json()["error"]


def test_panels_on_one_page_do_not_repeat_items(shop, settings, client):
    publish(settings)
    body = {"shop": "demo", "page": {"type": "product", "item_id": "a1"}, "slots": [
        {"id": "one", "widget": "recommendations", "attrs": {"strategy": "similar"}},
        {"id": "two", "widget": "recommendations", "attrs": {"strategy": "similar"}},
    ]}
    r = client.post("/v1/page?shop=demo", json=body, headers={"X-Forwarded-For": US_IP})
    frags = r.json()["fragments"]
    first = {p.split('"')[0] for p in frags["one"]["html"].split('data-item-id="')[1:]}
    second = {p.split('"')[0] for p in frags["two"]["html"].split('data-item-id="')[1:]}
    assert len(first) == len(second) == 4 and not first & second
    assert frags["one"]["strategy"] == "similar"


def test_the_panel_html_has_what_a_shop_needs(shop, settings, client):
    publish(settings)
    _, _, r = recs(client, strategy="similar", item="a1", count=2, title="More like this")
    html = r.text
    assert "More like this" in html and 'data-vitrine-list="recommendations"' in html
    # The demo's site_url = "self": its paths made absolute on this server.
    assert 'href="http://127.0.0.1:8000/demo/product/a0"' in html and "£2.00" in html
    assert 'src="http://127.0.0.1:8000/demo/img/a0.svg"' in html


def test_a_newly_published_model_is_served_without_restart(shop, settings, client):
    publish(settings, bought_together={"a1": ["b3", "b4"]})
    ids, _, _ = recs(client, strategy="bought_together", item="a1", count=2)
    assert ids == ["b3", "b4"]
    time.sleep(1.1)  # the registry looks at the pointer at most once a second
    publish(settings, bought_together={"a1": ["b5", "b0"]})
    time.sleep(1.1)
    ids, _, _ = recs(client, strategy="bought_together", item="a1", count=2)
    assert ids == ["b5", "b0"]
