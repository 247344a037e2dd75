"""Content by audience on a slot (`[[slots]]`, server/slots.py) and the personal copy
placeholders, through the page call and fragment URLs: first match wins, a campaign or a
strategy per audience, titles naming the visitor's favourite category or cart value, and
config errors with their lines."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from server.shops import ShopConfigError, parse_shop_config

from conftest import UK_IP, qa_headers

HOME = """
[[slots]]
id = "home-recs"
[[slots.content]]
audiences = ["cart_abandoner"]
widget = "banner"
campaign = "basket-reminder"
[[slots.content]]
audiences = ["new"]
strategy = "bestsellers"
title = "Our bestsellers"
[[slots.content]]
audiences = ["returning"]
strategy = "recently_viewed"
category = "{favourite_category}"
title = "More {favourite_category} for you"
count = 3
[[slots.content]]
not_audiences = ["new"]
strategy = "top_picks"
title = "Back for more? Your basket holds {cart_value:nothing yet}"
"""


@pytest.fixture
def shop(settings, services):
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(without_slots(path.read_text()) + HOME)
    return services


def without_slots(config: str) -> str:
    """The demo's config without its own [[slots]] (they come last in it)."""
    return config.split("\n[[slots]]", 1)[0]


def page_call(client, token: str | None = None, slots: list | None = None) -> dict:
    slots = slots or [{"id": "home-recs", "widget": "recommendations", "attrs": {"strategy": "trending"}}]
    body = {"shop": "demo", "page": {"type": "home", "url": "http://127.0.0.1:8000/demo/"}, "slots": slots,
            **({"token": token} if token else {})}
    client.cookies.clear()
    r = client.post("/v1/page?shop=demo", json=body, headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200, r.text
    return r.json()


def send(client, token: str, *events: dict) -> None:
    batch = [{"event_id": f"e{time.perf_counter_ns()}{n}", **e} for n, e in enumerate(events)]
    client.cookies.clear()
    r = client.post("/v1/events?shop=demo", json={"shop": "demo", "token": token, "events": batch},
                    headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 202, r.text


def fragment_context(client, token: str | None = None, **params: str) -> dict:
    client.app.state.services.contexts.page_views.flush()
    query = "&".join(f"{k}={v}" for k, v in {"slot": "home-recs", "_context": "1", **params}.items())
    client.cookies.clear()
    r = client.get(f"/v1/fragments/recommendations?shop=demo&{query}",
                   headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token or "", **qa_headers(client, "demo")})
    assert r.status_code == 200, r.text
    return r.json()


def test_a_new_visitor_gets_the_first_entry_and_the_page_call_says_so(client, shop) -> None:
    data = page_call(client)
    fragment = data["fragments"]["home-recs"]
    assert "Our bestsellers" in fragment["html"] and fragment["campaigns"] == []
    context = fragment_context(client)
    assert context["content"]["entry"] == 1 and context["content"]["reasons"] == [
        "content[0]: no: in none of the audiences cart_abandoner", "content[1]: ok: in audience new"]


def test_a_returning_visitor_with_a_favourite_category_sees_it_named_and_filtered(client, shop) -> None:
    token = page_call(client)["token"]
    send(client, token, *({"type": "view_item", "item_id": i} for i in ("85123A", "71053", "85123A")))
    time.sleep(0.01)
    # A second visit (the visit timeout is long: the QA override says "returning" as a new visit would).
    context = fragment_context(client, token, visitor="returning")
    assert context["content"]["entry"] == 2, context["content"]
    assert context["content"]["reasons"][:2] == [
        "content[0]: no: in none of the audiences cart_abandoner",
        "content[1]: no: in none of the audiences new",
    ]
    html = client.get("/v1/fragments/recommendations?shop=demo&slot=home-recs&visitor=returning",
                      headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token, **qa_headers(client, "demo")}).text
    assert "More Candles and lights for you" in html


def test_without_a_favourite_the_entry_that_names_it_is_passed_over(client, shop) -> None:
    token = page_call(client)["token"]
    send(client, token, {"type": "view_item", "item_id": "22632"})  # one view: no favourite yet
    context = fragment_context(client, token, visitor="returning")
    assert context["content"]["entry"] == 3
    assert "content[2]: no: its title names {favourite_category}, which this visitor has not" in context["content"]["reasons"]
    html = client.get("/v1/fragments/recommendations?shop=demo&slot=home-recs&visitor=returning",
                      headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token, **qa_headers(client, "demo")}).text
    assert "Your basket holds nothing yet" in html  # the fallback after the colon


def test_a_cart_abandoner_gets_the_banner_campaign_in_a_recommendations_slot(client, shop) -> None:
    token = page_call(client)["token"]
    send(client, token, {"type": "add_to_cart", "items": [{"item_id": "22112", "quantity": 2, "price": 4.95}]})
    context = fragment_context(client, token, audience="cart_abandoner")
    assert context["content"]["entry"] == 0 and context["content"]["widget"] == "banner"
    assert context["campaigns"] == ["basket-reminder"]
    # The campaign's own targeting holds too: closed by the visitor, the entry is passed over.
    send(client, token, {"type": "close_promotion", "promotion_id": "basket-reminder"})
    context = fragment_context(client, token, audience="cart_abandoner")
    assert context["content"]["entry"] == 1
    assert context["content"]["reasons"][0].startswith("content[0]: no: campaign basket-reminder does not show: ")


def test_cart_value_in_copy_is_the_carts_money(client, shop, settings) -> None:
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text().replace('"Back for more? Your basket holds {cart_value:nothing yet}"',
                                             '"Your basket: {cart_value}"'))
    token = page_call(client)["token"]
    context = fragment_context(client, token, visitor="returning")
    assert "content[3]: no: its title names {cart_value}, which this visitor has not" in context["content"]["reasons"]
    assert context["content"]["entry"] is None  # nothing matched: the slot as the page marked it
    send(client, token, {"type": "add_to_cart", "items": [{"item_id": "71053", "quantity": 2, "price": 3.39}]})
    html = client.get("/v1/fragments/recommendations?shop=demo&slot=home-recs&visitor=returning",
                      headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token, **qa_headers(client, "demo")}).text
    assert "Your basket: £6.78" in html


def test_a_slot_without_rules_and_without_consent_renders_as_marked(client, shop) -> None:
    data = page_call(client, slots=[{"id": "home-trending", "widget": "recommendations", "attrs": {"strategy": "trending"}}])
    assert "Our bestsellers" not in data["fragments"].get("home-trending", {}).get("html", "")


def test_campaign_copy_with_a_personal_placeholder_shows_only_to_who_has_it(client, shop, settings) -> None:
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text() + '\n[[campaigns]]\nid = "fav"\nwidget = "banner"\nplacement = "fav"\n'
                    'priority = 9\ntitle = "New in {favourite_category}"\n')
    slots = [{"id": "fav", "widget": "banner", "attrs": {"placement": "fav"}}]
    token = page_call(client, slots=slots)["token"]
    assert "fav" not in page_call(client, token, slots)["fragments"]
    send(client, token, *({"type": "view_item", "item_id": i} for i in ("22112", "22112")))
    fragment = page_call(client, token, slots)["fragments"]["fav"]
    assert "New in Home decor" in fragment["html"]


# -- the config ---------------------------------------------------------------------------
def problems(tmp_path: Path, text: str) -> list[str]:
    demo = Path(__file__).resolve().parents[1] / "server" / "demo" / "demo.toml"
    path = tmp_path / "shop.toml"
    path.write_text(without_slots(demo.read_text()) + text)
    with pytest.raises(ShopConfigError) as caught:
        parse_shop_config("shop", path)
    return [p.split(": ", 1)[1].replace(' (id "home-recs")', "") for p in caught.value.problems]


def test_config_errors_name_the_line_and_what_is_wrong(tmp_path: Path) -> None:
    found = problems(tmp_path, """
[[slots]]
id = "home-recs"
[[slots.content]]
audiences = ["nobody"]
strategy = "best"
[[slots.content]]
campaign = "welcome"
[[slots.content]]
campaign = "missing"
category = "{city}"
title = "Hi {city}"
[[slots]]
id = "home-recs"
""")
    assert any("slots[0].content[0].strategy: unknown strategy 'best'" in p for p in found), found
    assert any("slots[0].content[2].category: a category is a catalog category, or {favourite_category}" in p for p in found)
    assert any("slots[0].content[2].title: unknown placeholder {city}" in p for p in found)


def test_config_errors_about_what_the_shop_has_not(tmp_path: Path) -> None:
    found = problems(tmp_path, """
[[slots]]
id = "home-recs"
[[slots.content]]
audiences = ["nobody"]
[[slots.content]]
campaign = "welcome"
[[slots.content]]
campaign = "missing"
[[slots]]
id = "home-recs"
""")
    assert any(p.startswith("slots[0].content[0].audiences[0]: unknown audience 'nobody'") for p in found), found
    assert any(p == "slots[0].content[1].campaign: campaign 'welcome' is a popup: a slot shows banners" for p in found), found
    assert any(p == "slots[0].content[2].campaign: no campaign 'missing' in this config" for p in found), found
    assert any(p.startswith("slots[1].id: slot 'home-recs' is listed twice") for p in found), found
