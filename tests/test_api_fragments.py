"""GET /v1/fragments/{kind}: HTML for QA and server-side includes, overrides, context, templates."""

from __future__ import annotations

import json
import re

import pytest

from conftest import UK_IP, US_IP


def fragment(client, kind: str = "banner", ip: str = UK_IP, **params: str):
    query = {"shop": "demo", **params}
    return client.get(f"/v1/fragments/{kind}", params=query, headers={"X-Forwarded-For": ip})


def write_template(settings, name: str, text: str) -> None:
    folder = settings.resolved_data_dir / "templates"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def test_banner_is_html_for_a_uk_visitor(client) -> None:
    r = fragment(client, placement="top")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "Free UK delivery" in r.text
    assert 'data-vitrine-campaign="uk-delivery"' in r.text
    assert r.headers["x-vitrine-campaigns"] == "uk-delivery"
    assert r.headers["x-vitrine-template"] == "banner.html"
    assert "no-store" in r.headers["cache-control"]


def test_banner_for_a_us_visitor_names_the_country(client) -> None:
    r = fragment(client, ip=US_IP, placement="top")
    assert "We deliver to United States" in r.text
    assert "Free UK delivery" not in r.text
    assert r.headers["x-vitrine-campaigns"] == "international-delivery"


def test_country_override_beats_the_ip(client) -> None:
    r = fragment(client, ip=US_IP, placement="top", country="gb")
    assert r.headers["x-vitrine-campaigns"] == "uk-delivery"


def test_home_hero_for_returning_and_customer_visitors(client) -> None:
    returning = fragment(client, placement="home-hero", visitor="returning")
    assert returning.headers["x-vitrine-campaigns"] == "returning-christmas"
    assert "Christmas decorations are 15% off" in returning.text
    customer = fragment(client, placement="home-hero", visitor="customer")
    assert customer.headers["x-vitrine-campaigns"] == "customer-thanks"
    assert "Thanks for shopping with us" in customer.text
    new = fragment(client, placement="home-hero", visitor="new")
    assert new.status_code == 200
    assert "x-vitrine-campaigns" not in new.headers
    assert "no banner for this visitor" in new.text and "<aside" not in new.text


def test_popup_fragment_is_open_for_a_new_visitor(client) -> None:
    r = fragment(client, "popup", visitor="new")
    assert r.headers["x-vitrine-campaigns"] == "welcome,before-you-go"  # every popup they qualify for
    assert re.search(r"<dialog[^>]*\bopen\b", r.text)
    assert "data-vitrine-issue" in r.text and "Reveal my code" in r.text
    assert "x-vitrine-campaigns" not in fragment(client, "popup", visitor="customer").headers


def test_opening_a_fragment_records_nothing(client, services) -> None:
    for _ in range(3):
        assert fragment(client, placement="top").status_code == 200
    assert services.store.count_events("demo") == 0


def test_context_is_json_with_decisions_and_reasons(client) -> None:
    r = fragment(client, placement="home-hero", visitor="returning", device="mobile", source="email", _context="1")
    assert r.headers["content-type"].startswith("application/json")
    data = r.json()
    assert data["visitor"]["kind"] == "returning"
    assert data["visitor"]["device"]["device_class"] == "mobile"
    assert data["visitor"]["source"]["medium"] == "email"
    assert data["visitor"]["geo"]["country"] == "GB"
    assert "81.2.69.160" not in r.text
    by_id = {d["campaign"]: d for d in data["decisions"]}
    assert set(by_id) == {"missed-you", "christmas-fans", "returning-christmas", "customer-thanks", "hero-new-this-week",
                          "st-patricks"}
    assert by_id["st-patricks"]["reasons"][-1].startswith(
        "no: no Saint Patrick's Day in GB today or in the next 2 days, it is ")  # a calendar campaign's reason
    assert by_id["hero-new-this-week"]["reasons"][0] == "no: campaign enabled"  # shown by an experiment only
    assert by_id["missed-you"]["show"] is by_id["christmas-fans"]["show"] is False
    assert "no: in none of the audiences lapsed (lapsed: no order yet, wanted at least 1 order)" in by_id["missed-you"]["reasons"]
    assert data["visitor"]["audiences"] == ["returning"]
    assert by_id["returning-christmas"]["show"] is True
    assert by_id["customer-thanks"]["show"] is False
    assert "no: visitor is returning, wanted customer" in by_id["customer-thanks"]["reasons"]
    assert data["campaigns"] == ["returning-christmas"]
    assert data["template"] == "banner.html"


def test_debug_appends_templates_considered(client) -> None:
    r = fragment(client, placement="top", _debug="1")
    assert r.headers["content-type"].startswith("text/html")
    assert "Free UK delivery" in r.text
    comment = r.text[r.text.index("<!-- vitrine debug") :]
    assert comment.rstrip().endswith("-->")
    debug = json.loads(comment.removeprefix("<!-- vitrine debug").rstrip().removesuffix("-->"))
    assert debug["templates_considered"] == ["banner-demo-uk-delivery.html", "banner-demo.html", "banner.html"]
    assert "--" not in comment[len("<!--") : -len("-->") - 1]  # the comment cannot be closed early


def test_unknown_kind_is_404_listing_the_known_ones(client) -> None:
    r = fragment(client, "carousel")
    assert r.status_code == 404
    error = r.json()["error"]
    assert "carousel" in error and "banner" in error and "popup" in error


def test_unknown_shop_is_404(client) -> None:
    r = client.get("/v1/fragments/banner", params={"shop": "nowhere"})
    assert r.status_code == 404 and "nowhere" in r.json()["error"]


def test_missing_shop_is_400(client) -> None:
    r = client.get("/v1/fragments/banner")
    assert r.status_code == 400 and "shop" in r.json()["error"]


def test_post_is_405_json(client) -> None:
    r = client.post("/v1/fragments/banner?shop=demo", json={})
    assert r.status_code == 405 and r.json()["error"]


# -- template overrides -------------------------------------------------------------------
SHOP_BANNER = """{% extends "default:banner.html" %}
{% block content %}<p class="shop-look">{{ copy.title }} (shop look)</p>{% endblock %}
"""
CAMPAIGN_BANNER = """{% extends "default:banner.html" %}
{% block content %}<p class="campaign-look">{{ copy.title }} (campaign look)</p>{% endblock %}
"""


def test_shop_template_override_extends_the_default(client, settings) -> None:
    write_template(settings, "banner-demo.html", SHOP_BANNER)
    r = fragment(client, placement="top", _debug="1")
    assert r.headers["x-vitrine-template"] == "banner-demo.html"
    assert '<p class="shop-look">Free UK delivery (shop look)</p>' in r.text
    assert 'class="vitrine-banner' in r.text  # the rest of the default is kept
    assert ".vitrine-banner {" in r.text  # and its style block
    assert "on orders over" not in r.text  # the overridden block is gone


def test_campaign_template_wins_over_the_shop_template(client, settings) -> None:
    write_template(settings, "banner-demo.html", SHOP_BANNER)
    write_template(settings, "banner-demo-uk-delivery.html", CAMPAIGN_BANNER)
    uk = fragment(client, placement="top")
    assert uk.headers["x-vitrine-template"] == "banner-demo-uk-delivery.html"
    assert "campaign look" in uk.text and "shop look" not in uk.text
    # Other campaigns still use the shop-wide one.
    us = fragment(client, ip=US_IP, placement="top")
    assert us.headers["x-vitrine-template"] == "banner-demo.html"
    assert "We deliver to United States (shop look)" in us.text


def test_override_is_picked_up_without_a_restart(client, settings) -> None:
    assert fragment(client, placement="top").headers["x-vitrine-template"] == "banner.html"
    write_template(settings, "banner-demo.html", SHOP_BANNER)
    assert fragment(client, placement="top").headers["x-vitrine-template"] == "banner-demo.html"


def test_page_call_uses_the_override_too(client, settings) -> None:
    write_template(settings, "banner-demo.html", SHOP_BANNER)
    data = client.post("/v1/page?shop=demo", json={"shop": "demo", "slots": [{"id": "top", "widget": "banner"}]},
                       headers={"X-Forwarded-For": UK_IP}).json()
    assert "shop look" in data["fragments"]["top"]["html"]


# -- escaping ---------------------------------------------------------------------------
EVIL_SHOP = """
name = "Evil"
[[campaigns]]
id = "xss"
widget = "banner"
title = "<script>alert('title')</script>"
body = "Tom & Jerry's \\"deals\\" <b>bold</b>"
link = "/deals\\" onmouseover=\\"alert(2)"
cta = "<img src=x onerror=alert(3)>"
"""


def test_campaign_text_is_escaped(client, settings) -> None:
    (settings.resolved_shops_dir / "evil.toml").write_text(EVIL_SHOP)
    r = client.get("/v1/fragments/banner", params={"shop": "evil", "placement": "top"})
    assert r.status_code == 200
    assert r.headers["x-vitrine-campaigns"] == "xss"
    html = r.text
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(" in html
    assert "<b>bold</b>" not in html and "&lt;b&gt;bold&lt;/b&gt;" in html
    assert "Tom &amp; Jerry" in html
    assert "<img src=x" not in html
    assert 'onmouseover="alert' not in html  # the link cannot break out of its attribute
