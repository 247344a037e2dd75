""""Why this?": the reasons every widget shows in plain words (widgets/why.py), the shared
template partial, the shop's why_link setting, consent, and shop text kept escaped."""

from __future__ import annotations

import html
import re

import numpy as np
import pytest

from server.countries import display_name
from server.models import CatalogItem
from server.recommend.artifact import save_artifact

from conftest import UK_IP, US_IP

SHOP = "why"
NASTY = '<img src=x onerror=alert(1) "Tom\'s" &'  # a category name: no ">", so one name, not a path
CONFIG = """
name = "Why test shop"
currency = "GBP"
why_link = true
sensitive_categories = ["Health"]

[qa]
open = true

[[campaigns]]
id = "uk"
widget = "banner"
placement = "top"
title = "Free UK delivery"
[campaigns.audience]
country = ["GB"]

[[campaigns]]
id = "abroad"
widget = "banner"
placement = "top"
title = "We deliver to {country_name}"
[campaigns.audience]
not_country = ["GB"]

[[campaigns]]
id = "hello"
widget = "popup"
title = "Welcome"
[campaigns.audience]
visitor = ["new"]
device = ["mobile"]
"""
KINDS = {"x": "Christmas", "k": "Kitchen", "h": "Health", "n": NASTY}
CATALOG = [
    CatalogItem(f"{p}{n}", f"{name} thing {n}", category=name, price=1.0 + n, currency="GBP")
    for p, name in KINDS.items() for n in range(6)
] + [CatalogItem("t0", '<script>alert("t")</script>', category="Kitchen", price=2.0, currency="GBP")]


@pytest.fixture
def shop(services, settings):
    (settings.resolved_shops_dir / f"{SHOP}.toml").write_text(CONFIG)
    services.store.upsert_items(SHOP, CATALOG)
    services.search.sync(SHOP, CATALOG)
    ids = [i.item_id for i in CATALOG]
    # Christmas and Kitchen items point two ways; a visitor from GB is a kitchen person.
    vectors = np.array([[1.0, 0.0] if i[0] == "x" else [0.0, 1.0] if i[0] in "kt" else [0.3, 0.3] for i in ids],
                       dtype=np.float32)
    save_artifact(
        settings.resolved_data_dir / "models", SHOP, item_ids=ids, item_vectors=vectors,
        item_biases=np.zeros(len(ids), dtype=np.float32), user_ids=["u:known"],
        user_vectors=np.array([[1.0, 0.0]], dtype=np.float32), user_feature_names=["country:GB"],
        user_feature_vectors=np.array([[0.0, 1.0]], dtype=np.float32), bought_together={}, popularity=ids,
        meta={"test": True},
    )
    return services


def viewer(client, services, *items: str, visitor: str = "v-looker") -> str:
    """The token of a visitor who viewed these items."""
    token = services.signer.sign(SHOP, visitor)
    events = [{"event_id": f"view-{item}-{n:04d}", "type": "view_item", "item_id": item}
              for n, item in enumerate(items)]
    client.cookies.clear()
    r = client.post(f"/v1/events?shop={SHOP}", json={"shop": SHOP, "token": token, "events": events})
    assert r.status_code == 202, r.text
    return token


def fragment(client, kind: str, token: str | None = None, ip: str = UK_IP, shop: str = SHOP, **params):
    client.cookies.clear()
    headers = {"X-Forwarded-For": ip, **({"X-Visitor-Token": token} if token else {})}
    r = client.get(f"/v1/fragments/{kind}", params={"shop": shop, **params}, headers=headers)
    assert r.status_code == 200, r.text
    return r


def reasons(page: str) -> list[str]:
    """The reasons listed in the fragment's "Why this?", as the shopper reads them."""
    details = re.search(r'<details class="vitrine-why" data-vitrine-why>(.*?)</details>', page, re.S)
    assert details, "no Why this? in the fragment"
    return [html.unescape(r) for r in re.findall(r"<li>(.*?)</li>", details.group(1), re.S)]


def test_a_visitor_who_looked_at_a_category_is_told_so(shop, client) -> None:
    token = viewer(client, shop, "x1", "x2", "x3")
    r = fragment(client, "recommendations", token, strategy="top_picks")
    assert r.headers["x-vitrine-strategy"] == "top_picks"
    assert reasons(r.text) == ["Because you looked at items in Christmas"]
    assert "<summary>Why this?</summary>" in r.text
    assert r.text.count("data-vitrine-optout") == 1  # personalization is on: it can be turned off
    # QA sees the same words on the same decision.
    context = fragment(client, "recommendations", token, strategy="top_picks", _context="1").json()
    assert context["why"] == {"reasons": ["Because you looked at items in Christmas"], "personalized": True}


def test_a_new_visitor_is_told_what_the_picks_start_from(shop, client) -> None:
    r = fragment(client, "recommendations", strategy="top_picks")
    assert r.headers["x-vitrine-strategy"] == "top_picks"
    assert reasons(r.text) == ["Because you are visiting from the United Kingdom"]


def test_a_country_targeted_banner_names_the_country(shop, client) -> None:
    uk = fragment(client, "banner", placement="top", country="GB")
    assert uk.headers["x-vitrine-campaigns"] == "uk"
    assert reasons(uk.text) == ["Because you are visiting from the United Kingdom"]
    ireland = fragment(client, "banner", placement="top", country="IE")
    assert ireland.headers["x-vitrine-campaigns"] == "abroad"
    assert reasons(ireland.text) == ["Because you are visiting from Ireland"]
    unknown = fragment(client, "banner", ip="127.0.0.1", placement="top")
    assert reasons(unknown.text) == ["Because you are visiting from outside the United Kingdom"]


def test_the_demo_shop_shows_it_on_its_geo_banner(client) -> None:
    r = fragment(client, "banner", shop="demo", ip=US_IP, placement="top")
    assert r.headers["x-vitrine-campaigns"] == "international-delivery"
    assert reasons(r.text) == ["Because you are visiting from the United States"]


def test_a_popup_lists_each_condition_of_its_audience(shop, client) -> None:
    r = fragment(client, "popup", device="mobile")
    assert reasons(r.text) == ["Because you are new here", "Because you are on a phone"]


@pytest.mark.parametrize("kind, params", [
    ("banner", {"placement": "top"}),
    ("popup", {"device": "mobile"}),
    ("recommendations", {"strategy": "trending"}),
    ("nav", {"categories": "christmas,kitchen"}),
    ("category", {"category": "Christmas"}),
    ("search", {"q": "thing"}),
])
def test_every_widget_kind_shows_it_through_the_one_partial(shop, client, kind, params) -> None:
    r = fragment(client, kind, **params)
    assert r.text.count('<details class="vitrine-why" data-vitrine-why>') == 1
    assert reasons(r.text)


def test_the_menu_category_pages_and_search_say_what_they_followed(shop, client) -> None:
    token = viewer(client, shop, *["x1", "x2", "x3", "x4"])
    assert reasons(fragment(client, "nav", token, categories="kitchen,christmas").text) == [
        "Because you looked at items in Christmas", "And by the items picked for you"]
    assert reasons(fragment(client, "nav", categories="kitchen,christmas").text) == [
        "This menu is in the shop's usual order"]
    assert reasons(fragment(client, "category", token, category="Kitchen").text) == [
        "Sorted for you", "Because you looked at items in Christmas"]
    assert reasons(fragment(client, "category", category="Kitchen", sort="bestsellers").text) == [
        "Sorted by what sells most"]
    searched = fragment(client, "search", token, q="thing")
    assert searched.headers["x-vitrine-strategy"] == "personal"
    assert reasons(searched.text) == [
        "Matches for your search, sorted for you", "Because you looked at items in Christmas"]
    assert reasons(fragment(client, "search", q="thing", consent="none").text) == [
        "Matches for your search, the best first"]


def test_without_consent_only_what_needs_no_profile_and_no_button(shop, client) -> None:
    token = viewer(client, shop, "x1", "x2", "x3")
    r = fragment(client, "recommendations", token, strategy="top_picks", consent="none")
    assert reasons(r.text) == ["Because you are visiting from the United Kingdom"]  # not what they looked at
    assert "data-vitrine-optout" not in r.text
    assert "Personalization is off" in r.text
    popup = fragment(client, "popup", token, device="mobile", consent="none")
    assert reasons(popup.text) == [
        "Because this shop does not remember your visits (personalization is off)", "Because you are on a phone"]


def test_shop_text_in_a_reason_stays_text(shop, client) -> None:
    token = viewer(client, shop, "n1", "n2", "t0")
    similar = fragment(client, "recommendations", token, strategy="similar")
    assert reasons(similar.text)[0] == 'Similar to “<script>alert("t")</script>”, which you looked at'
    assert "<script>" not in similar.text and "&lt;script&gt;alert(&#34;t&#34;)&lt;/script&gt;" in similar.text
    token = viewer(client, shop, "n1", "n2", "n3", visitor="v-nasty")
    picks = fragment(client, "recommendations", token, strategy="top_picks")
    assert reasons(picks.text) == [f"Because you looked at items in {NASTY}"]
    assert "<img" not in picks.text and "&lt;img src=x onerror=alert(1) &#34;Tom&#39;s&#34; &amp;" in picks.text


def test_a_sensitive_category_is_not_named_outside_its_own_pages(shop, client) -> None:
    token = viewer(client, shop, "h1", "h2", "h3", "h4", "x1")
    assert reasons(fragment(client, "recommendations", token, strategy="top_picks").text) == [
        "Because you looked at items in Christmas"]
    health_page = fragment(client, "category", token, category="Health")
    assert reasons(health_page.text) == ["Sorted for you", "Because you looked at items in Health and in Christmas"]


def test_off_unless_the_shop_turns_it_on(shop, client, settings) -> None:
    (settings.resolved_shops_dir / f"{SHOP}.toml").write_text(CONFIG.replace("why_link = true\n", ""))
    r = fragment(client, "banner", placement="top")
    assert "<details" not in r.text and "data-vitrine-optout" not in r.text
    assert "<details" not in fragment(client, "recommendations", strategy="trending").text
    # QA still sees what it would say.
    context = fragment(client, "banner", placement="top", _context="1").json()
    assert context["why"]["reasons"] == ["Because you are visiting from the United Kingdom"]


def test_the_page_call_fragments_carry_it(shop, client) -> None:
    body = {"shop": SHOP, "page": {"type": "home"}, "slots": [
        {"id": "top", "widget": "banner", "attrs": {"placement": "top"}},
        {"id": "recs", "widget": "recommendations", "attrs": {"strategy": "trending"}}]}
    client.cookies.clear()
    fragments = client.post(f"/v1/page?shop={SHOP}", json=body, headers={"X-Forwarded-For": UK_IP}).json()["fragments"]
    assert reasons(fragments["top"]["html"]) == ["Because you are visiting from the United Kingdom"]
    assert reasons(fragments["recs"]["html"]) == ["More from this shop"]  # no trending scores yet: the catalog
    assert all("data-vitrine-optout" in f["html"] for f in fragments.values())
    client.cookies.clear()
    refused = client.post(f"/v1/page?shop={SHOP}", json={**body, "consent": {"personalization": False}},
                          headers={"X-Forwarded-For": UK_IP}).json()["fragments"]
    assert not any("data-vitrine-optout" in f["html"] for f in refused.values())


def test_country_names_read_as_a_sentence() -> None:
    assert [display_name(c) for c in ("GB", "ie", "US", "KR", "NL", "DO", "XX", "")] == [
        "the United Kingdom", "Ireland", "the United States", "South Korea", "the Netherlands",
        "the Dominican Republic", "", ""]


def test_a_campaign_for_an_audience_says_why_without_naming_it(shop, client, settings) -> None:
    path = settings.resolved_shops_dir / f"{SHOP}.toml"
    path.write_text(path.read_text() + """
[[audiences.custom]]
id = "xmas_fans_internal_name"
description = "Internal: people who love Christmas"
any = [{ category_views = { category = "Christmas", min = 2 } }, { searches = "tinsel" }]
not = { audience = "loyal" }

[[campaigns]]
id = "fans"
widget = "banner"
placement = "hero"
[campaigns.audience]
audiences = ["lapsed", "xmas_fans_internal_name"]

[[campaigns]]
id = "reminder"
widget = "banner"
placement = "reminder"
[campaigns.audience]
audiences = ["cart_abandoner"]
""")
    token = viewer(client, shop, "x1", "x2")
    r = fragment(client, "banner", token, placement="hero")
    assert reasons(r.text) == ["Because you looked at items in Christmas"]
    assert "xmas_fans" not in r.text and "Internal" not in r.text
    r = fragment(client, "banner", placement="reminder", audience="cart_abandoner")
    assert reasons(r.text) == ["Because you left items in your cart"]
