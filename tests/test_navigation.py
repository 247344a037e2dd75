"""Navigation order: affinity ranking, minimum evidence, pinned and unknown entries, the model
for a short history, the page call's `nav` answer and the `nav` fragment URL."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import pytest
from conftest import qa_headers, record_history

from server.models import CatalogItem, utcnow
from server.recommend.artifact import save_artifact
from server.shops import ShopConfigError, parse_shop_config

SHOP = "menu"
CONFIG = """
name = "Menu test shop"
currency = "GBP"

[nav]
pinned = ["Sale"]
min_events = 3
history_events = 10
url = "/shop/c/{slug}"
"""
KINDS = {"x": "Christmas", "k": "Kitchen", "b": "Bags", "g": "Home > Garden", "d": "Home > Decor"}
CATALOG = [
    CatalogItem(f"{p}{n}", f"{name} thing {n}", category=name, price=1.0 + n, currency="GBP")
    for p, name in KINDS.items() for n in range(6)
]
MENU = ["Sale", "kitchen", "Bags", "christmas", "home", "not-in-catalog"]


@pytest.fixture
def shop(services, settings):
    (settings.resolved_shops_dir / f"{SHOP}.toml").write_text(CONFIG)
    services.store.upsert_items(SHOP, CATALOG)
    return services


def token(services, visitor_id: str) -> str:
    return services.signer.sign(SHOP, visitor_id)


def send(client, visitor_token: str, *events: dict) -> None:
    r = client.post(f"/v1/events?shop={SHOP}", json={"shop": SHOP, "token": visitor_token, "events": list(events)})
    assert r.status_code == 202, r.text


_ids = iter(range(10**6))


def event(kind: str, item: str, hours_ago: float = 0.0) -> dict:
    ev = {"event_id": f"ev-{kind}-{item}-{next(_ids):06d}", "type": kind, "item_id": item,
          "ts": (utcnow() - timedelta(hours=hours_ago)).isoformat()}
    if kind == "purchase":
        ev.update(value=1.0, transaction_id=f"T{ev['event_id']}")
    return ev


def views(prefix: str, n: int, hours_ago: float = 0.0) -> list[dict]:
    return [event("view_item", f"{prefix}{i % 6}", hours_ago) for i in range(n)]


def page_nav(client, visitor_token: str | None, nav: list[str] = MENU) -> dict:
    client.cookies.clear()
    body = {"shop": SHOP, "token": visitor_token, "page": {"type": "home"}, "nav": nav}
    r = client.post(f"/v1/page?shop={SHOP}", json=body)
    assert r.status_code == 200, r.text
    return r.json()["nav"]


def nav_context(client, visitor_token: str, categories: list[str] = MENU) -> dict:
    client.cookies.clear()
    r = client.get("/v1/fragments/nav", params={"shop": SHOP, "categories": ",".join(categories), "_context": "1"},
                   headers={"X-Visitor-Token": visitor_token, **qa_headers(client, SHOP)})
    assert r.status_code == 200, r.text
    return r.json()["nav"]


# -- order -------------------------------------------------------------------------------
def test_a_new_visitor_gets_the_shops_own_order(shop, client):
    nav = page_nav(client, None)
    assert nav == {"order": MENU, "moved": False, "basis": "shop"}


def test_the_category_with_the_most_affinity_moves_to_the_front(shop, client):
    visitor = token(shop, "christmas-fan")
    send(client, visitor, *views("x", 8), *views("k", 3))
    nav = page_nav(client, visitor)
    # Movable entries are re-ranked; those without interest keep the shop's relative order.
    assert nav == {"order": ["Sale", "christmas", "kitchen", "Bags", "home", "not-in-catalog"], "moved": True,
                   "basis": "affinity"}


def test_carts_and_purchases_weigh_more_than_views(shop, client):
    visitor = token(shop, "bag-buyer")
    send(client, visitor, *views("x", 7), event("add_to_cart", "b1"), event("purchase", "b2"))  # 3 + 5 > 7
    assert page_nav(client, visitor)["order"][:3] == ["Sale", "Bags", "christmas"]


def test_old_interest_fades_with_the_half_life(shop, client):
    visitor = token(shop, "changed-mind")
    # 12 Christmas views five weeks ago (half-life one week: 12 / 32 = 0.4) against 2 Kitchen views today.
    record_history(shop, SHOP, visitor, *views("x", 12, hours_ago=5 * 168), *views("k", 2))
    assert page_nav(client, visitor)["order"][1:3] == ["kitchen", "christmas"]


def test_categories_below_a_menu_entry_count_for_it(shop, client):
    visitor = token(shop, "gardener")
    send(client, visitor, *views("g", 6), *views("d", 5), *views("b", 4))  # Home: 11, Bags: 4
    assert page_nav(client, visitor)["order"][1:3] == ["home", "Bags"]


# -- minimum evidence, pinned and unknown entries ---------------------------------------
def test_below_the_minimum_evidence_nothing_moves(shop, client):
    visitor = token(shop, "browsed-twice")
    send(client, visitor, *views("x", 2))
    assert page_nav(client, visitor) == {"order": MENU, "moved": False, "basis": "shop"}
    context = nav_context(client, visitor)
    assert context["evidence"] == 2 and "below the minimum of 3" in context["reason"]
    send(client, visitor, *views("x", 1))
    assert page_nav(client, visitor)["order"][1] == "christmas"


def test_a_product_page_view_and_the_shops_view_item_count_once(shop, client):
    visitor = token(shop, "one-product")
    for item in ("x1", "x2"):
        client.cookies.clear()
        r = client.post(f"/v1/page?shop={SHOP}", json={"shop": SHOP, "token": visitor,
                                                       "page": {"type": "product", "item_id": item}})
        assert r.status_code == 200
        send(client, visitor, event("view_item", item))
    context = nav_context(client, visitor)
    assert context["evidence"] == 2 and context["moved"] is False


def test_pinned_and_unknown_entries_keep_their_place(shop, client):
    visitor = token(shop, "sale-hunter")
    send(client, visitor, *views("b", 12), *views("x", 6), *views("k", 3))
    nav = page_nav(client, visitor, ["kitchen", "Sale", "christmas", "not-in-catalog", "bags"])
    assert nav["order"] == ["bags", "Sale", "christmas", "not-in-catalog", "kitchen"]
    why = {e["key"]: e["why"] for e in nav_context(client, visitor)["entries"]}
    assert why["Sale"] == "pinned" and why["not-in-catalog"] == "not a catalog category"


def test_only_unknown_entries_are_returned_unchanged(shop, client):
    visitor = token(shop, "lost")
    send(client, visitor, *views("x", 12))
    nav = page_nav(client, visitor, ["Outlet", "Gift cards", "christmas"])
    assert nav == {"order": ["Outlet", "Gift cards", "christmas"], "moved": False, "basis": "shop"}


def test_entries_match_slugs_and_names_in_any_case(shop, client):
    visitor = token(shop, "any-case")
    send(client, visitor, *views("b", 12))
    assert page_nav(client, visitor, ["KITCHEN", "christmas", "bAgS"])["order"] == ["bAgS", "KITCHEN", "christmas"]


# -- the model for a short history ------------------------------------------------------
def publish_kitchen_lover(settings, visitor_id: str) -> None:
    """A model in which `visitor_id` is a kitchen person (their vector points at the k items)."""
    ids = [i.item_id for i in CATALOG]
    vectors = np.array([[1.0, 0.0] if i.startswith("k") else [0.0, 1.0] if i.startswith("x") else [0.0, 0.0]
                        for i in ids], dtype=np.float32)
    save_artifact(
        settings.resolved_data_dir / "models", SHOP, item_ids=ids, item_vectors=vectors,
        item_biases=np.zeros(len(ids), dtype=np.float32), user_ids=[visitor_id],
        user_vectors=np.array([[1.0, 0.0]], dtype=np.float32), user_feature_names=["segment:new"],
        user_feature_vectors=np.zeros((1, 2), dtype=np.float32), bought_together={}, popularity=ids,
        meta={"test": True},
    )


def test_a_short_history_blends_in_the_categories_of_the_model_top_picks(shop, settings, client):
    visitor_id = "u:kitchen-person"
    publish_kitchen_lover(settings, visitor_id)
    visitor = token(shop, visitor_id)
    send(client, visitor, *views("b", 3))  # 3 events: the model weighs 70%
    nav = page_nav(client, visitor)
    assert nav["basis"] == "affinity+model"
    assert nav["order"][:3] == ["Sale", "kitchen", "Bags"]
    context = nav_context(client, visitor)
    assert context["model_weight"] == pytest.approx(0.7)
    kitchen = next(e for e in context["entries"] if e["key"] == "kitchen")
    assert kitchen["affinity"] == 0.0 and kitchen["model"] == max(e["model"] for e in context["entries"]) > 0.5

    send(client, visitor, *views("b", 9))  # 12 events: the visitor's own history alone
    nav = page_nav(client, visitor)
    assert nav["basis"] == "affinity" and nav["order"][1] == "Bags"


# -- the page call and the fragment URL -------------------------------------------------
def test_the_page_call_answers_nav_only_when_the_page_has_a_menu(shop, client):
    client.cookies.clear()
    r = client.post(f"/v1/page?shop={SHOP}", json={"shop": SHOP, "page": {"type": "home"}})
    assert r.status_code == 200 and "nav" not in r.json()
    r = client.post(f"/v1/page?shop={SHOP}", json={"shop": SHOP, "nav": ["x" * 200]})
    assert r.status_code == 422 and "nav" in r.json()["error"]


def test_nav_fragment_renders_the_whole_menu_in_the_visitors_order(shop, client):
    visitor = token(shop, "fragment-reader")
    send(client, visitor, *views("x", 12))
    client.cookies.clear()
    r = client.get("/v1/fragments/nav", params={"shop": SHOP, "categories": "kitchen,christmas,sale"},
                   headers={"X-Visitor-Token": visitor})
    assert r.status_code == 200 and r.headers["x-vitrine-template"] == "nav.html"
    assert r.headers["x-vitrine-strategy"] == "affinity"
    links = [part.split('"')[0] for part in r.text.split('href="')[1:]]
    assert links == ["/shop/c/christmas", "/shop/c/kitchen", "/shop/c/sale"]
    assert ">Christmas</a>" in r.text and ">Kitchen</a>" in r.text and ">sale</a>" in r.text


def test_nav_fragment_without_categories_lists_the_catalogs_top_level(shop, client):
    client.cookies.clear()
    r = client.get("/v1/fragments/nav", params={"shop": SHOP})
    assert r.status_code == 200
    slugs = [part.split('"')[0] for part in r.text.split('data-category="')[1:]]
    assert slugs == ["home", "bags", "christmas", "kitchen"]  # most items first, then by name
    assert 'href="/shop/c/home"' in r.text and ">Home</a>" in r.text


def test_nav_context_shows_scores_and_why(shop, client):
    visitor = token(shop, "qa")
    send(client, visitor, *views("k", 10), *views("x", 5))
    context = nav_context(client, visitor)
    assert context["basis"] == "affinity" and context["evidence"] == 15
    entries = {e["key"]: e for e in context["entries"]}
    assert entries["kitchen"]["affinity"] == pytest.approx(10 / 15, abs=1e-3)
    assert entries["kitchen"]["evidence"] == 10 and entries["kitchen"]["why"] == "ranked"
    assert entries["Bags"]["why"].startswith("no interest yet")
    assert [e["key"] for e in context["entries"]] == context["order"]


def test_nav_config_mistakes_are_named(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text('[nav]\nmin_evidence = 3\nhistory_events = 0\n')
    with pytest.raises(ShopConfigError) as error:
        parse_shop_config("bad", path)
    assert "nav.min_evidence: Extra inputs are not permitted" in str(error.value)
    assert "nav.history_events: Input should be greater than or equal to 1" in str(error.value)
