"""Audiences through the page call and fragment URLs: every built-in audience and every kind of
rule, from real event sequences posted to /v1/events (past timestamps where the audience needs
them), membership that changes on the visitor's next page call, the reasons QA reads with
`_context=1`, the QA override, templates, and campaigns that target audiences."""

from __future__ import annotations

import dataclasses
import time
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from server.models import utcnow
from server.visitors.page_views import PageView

from conftest import SMALL_CATALOG, UK_IP, US_IP, qa_headers, record_history

SHOP = "aud"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")
CHROME = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
          "Chrome/120.0.0.0 Safari/537.36")
WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


def london_hours() -> tuple[int, int]:
    """An hour either side of the hour in London now (clipped to the day)."""
    hour = datetime.now(ZoneInfo("Europe/London")).hour
    return max(0, hour - 1), min(23, hour + 1)


# Each of these audiences gets a banner campaign of its own, on a placement of the same name:
# the page call's fragments are then the visitor's audiences.
CUSTOM = """
[[audiences.custom]]
id = "big_cart"
cart_value = {{ min = 5 }}

[[audiences.custom]]
id = "gift_cart"
cart_categories = "Gifts"

[[audiences.custom]]
id = "candle_fan"
category_views = {{ category = "Candles and lights", min = 2 }}

[[audiences.custom]]
id = "candle_lover"
interest = {{ category = "candles and lights", min = 0.6 }}

[[audiences.custom]]
id = "saw_warmer"
viewed_items = "22632"

[[audiences.custom]]
id = "saw_decor"
viewed_categories = ["Home decor"]

[[audiences.custom]]
id = "lantern_searcher"
searches = {{ contains = "lantern" }}

[[audiences.custom]]
id = "iphone_safari"
device = "mobile"
os = "iOS"
browser = ["Mobile Safari", "Safari"]

[[audiences.custom]]
id = "windows_chrome"
os = "Windows"
browser = {{ contains = "chrome" }}

[[audiences.custom]]
id = "cambridgeshire"
country = "GB"
region = "Cambridgeshire"

[[audiences.custom]]
id = "gamlingay"
city = "Gamlingay"

[[audiences.custom]]
id = "german_speaker"
language = "de"

[[audiences.custom]]
id = "london_now"
local_hour = {{ min = {early}, max = {late} }}
weekday = ["{today}", "{tomorrow}"]

[[audiences.custom]]
id = "london_later"
local_hour = {later}

[[audiences.custom]]
id = "spring_mail"
medium = "email"
source = "newsletter"
campaign = "spring"

[[audiences.custom]]
id = "googled_tv"
referrer = "google.com"
landing_page = {{ prefix = "/tv" }}

[[audiences.custom]]
id = "third_page"
visit_page_views = {{ min = 3 }}

[[audiences.custom]]
id = "long_gone"
days_since_last_visit = {{ min = 90 }}

[[audiences.custom]]
id = "big_spender"
orders = {{ min = 1 }}
revenue = {{ min = 100 }}
days_since_last_order = {{ max = 30 }}

[[audiences.custom]]
id = "fresh_sign_up"
signed_up = true
hours_since_sign_up = {{ max = 48 }}

[[audiences.custom]]
id = "not_new"
not = {{ audience = "new" }}

[[audiences.custom]]
id = "lapsed_or_abandoner"
any = [
  {{ audience = "lapsed" }},
  {{ all = [{{ audience = "cart_abandoner" }}, {{ cart_count = {{ min = 2 }} }}] }},
]
"""
BUILTIN = ["new", "returning", "prospect", "first_time_customer", "repeat_customer", "loyal", "loyal_bronze",
           "loyal_gold", "lapsed", "cart_abandoner"]
AUDIENCES = BUILTIN + [line.split('"')[1] for line in CUSTOM.splitlines() if line.startswith("id = ")]


def shop_config() -> str:
    early, late = london_hours()
    today = datetime.now(ZoneInfo("Europe/London")).weekday()
    custom = CUSTOM.format(early=early, late=late, later=(early + 12) % 24, today=WEEKDAYS[today],
                           tomorrow=WEEKDAYS[(today + 1) % 7])
    campaigns = "".join(
        f'\n[[campaigns]]\nid = "in-{a.replace("_", "-")}"\nwidget = "banner"\nplacement = "{a}"\n'
        f'title = "{a}"\n[campaigns.audience]\naudiences = ["{a}"]\n' for a in AUDIENCES)
    return (
        'name = "Audiences"\norigins = ["http://127.0.0.1:8000"]\ncurrency = "GBP"\n'
        "[audiences]\nlapsed_days = 3\ncart_abandon_minutes = 60\n"
        '[[audiences.loyal]]\ntier = "bronze"\norders = 2\n[[audiences.loyal]]\ntier = "gold"\nrevenue = 100\n'
        + custom + campaigns
    )


@pytest.fixture
def settings(settings):
    """A slot for each audience, in one page call."""
    return dataclasses.replace(settings, max_slots_per_page=len(AUDIENCES))


@pytest.fixture
def shop(settings, services):
    (settings.resolved_shops_dir / f"{SHOP}.toml").write_text(shop_config())
    services.store.upsert_items(SHOP, SMALL_CATALOG)
    return services


class Visitor:
    """One browser: its token, and what it sends (never another visitor's cookie: the test
    client's cookie jar is shared, so it is emptied before each request)."""

    def __init__(self, client, ip: str = UK_IP, user_agent: str = CHROME, language: str = "en-GB,en;q=0.8") -> None:
        self.client = client
        self.token: str | None = None
        self.headers = {"X-Forwarded-For": ip, "User-Agent": user_agent, "Accept-Language": language}

    def page(self, url: str = "http://127.0.0.1:8000/", referrer: str = "", **page) -> set[str]:
        """A page call; the visitor's audiences, as the fragments of the audience banners."""
        body = {"shop": SHOP, "page": {"url": url, "referrer": referrer, **page},
                "slots": [{"id": a, "widget": "banner", "attrs": {"placement": a}} for a in AUDIENCES]}
        if self.token:
            body["token"] = self.token
        self.client.cookies.clear()
        r = self.client.post(f"/v1/page?shop={SHOP}", json=body, headers=self.headers)
        assert r.status_code == 200, r.text
        data = r.json()
        assert data["errors"] == {}
        self.token = data["token"]
        return set(data["fragments"])

    def send(self, *events: dict) -> None:
        batch = [{"event_id": f"e{time.perf_counter_ns()}{n}", **e} for n, e in enumerate(events)]
        self.client.cookies.clear()
        r = self.client.post(f"/v1/events?shop={SHOP}", json={"shop": SHOP, "token": self.token, "events": batch},
                             headers=self.headers)
        assert r.status_code == 202 and r.json()["accepted"] == len(events), r.text

    def context(self, **params: str) -> dict:
        """`_context=1` of a banner fragment, once this visitor's page views are written (a
        fragment URL reads the stored visitor)."""
        assert self.client.app.state.services.contexts.page_views.flush()
        query = "&".join(f"{k}={v}" for k, v in {"placement": "new", **params}.items())
        self.client.cookies.clear()
        r = self.client.get(f"/v1/fragments/banner?shop={SHOP}&_context=1&{query}",
                            headers={**self.headers, "X-Visitor-Token": self.token or "",
                                     **qa_headers(self.client, SHOP)})
        assert r.status_code == 200, r.text
        return r.json()

    def reasons(self, **params: str) -> dict[str, tuple[bool, str]]:
        return {a["id"]: (a["member"], a["reason"]) for a in self.context(**params)["audiences"]}


def ago(**delta: float) -> int:
    """Unix milliseconds, `delta` ago."""
    return int((time.time() - timedelta(**delta).total_seconds()) * 1000)


def visited_before(shop, visitor: Visitor, when: datetime) -> None:
    """A page view of theirs at `when` (a page call is always now): a visit before this one."""
    visitor_id = shop.signer.visitor_id(SHOP, visitor.token)
    assert shop.contexts.page_views.flush()
    # Deleted as the retention purge deletes (not at the visitor's request: they may come back).
    assert shop.store.delete_visitors(SHOP, [visitor_id], inactive_before=utcnow() + timedelta(days=1))["visitors"] == 1
    shop.store.record_page_views([PageView(SHOP, visitor_id, when, 1800)])
    shop.store.record_page_views([PageView(SHOP, visitor_id, when + timedelta(minutes=1), 1800)])


# -- the built-in lifecycle audiences ------------------------------------------------------
def test_a_first_visit_is_new_and_the_next_visit_returning(client, shop) -> None:
    visitor = Visitor(client)
    first = visitor.page()
    assert {"new", "not_new"} & first == {"new"}
    visited_before(shop, visitor, utcnow() - timedelta(days=100))
    again = visitor.page()
    assert {"returning", "not_new", "long_gone"} <= again and "new" not in again
    member, reason = visitor.reasons()["returning"]
    assert member and reason == "visit 2, no order yet"


def test_a_sign_up_makes_a_prospect_until_the_first_order(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "sign_up"})
    assert {"prospect", "fresh_sign_up"} <= visitor.page()
    assert visitor.reasons()["prospect"] == (True, "signed up less than an hour ago, no order yet")
    visitor.send({"type": "purchase", "transaction_id": "o1", "value": 20})
    after = visitor.page()
    assert "prospect" not in after and {"first_time_customer", "fresh_sign_up"} <= after


def test_a_login_makes_a_prospect_too_and_a_sign_up_long_ago_is_not_fresh(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "login", "ts": ago(days=5)})
    found = visitor.page()
    assert "prospect" in found and "fresh_sign_up" not in found
    assert visitor.reasons()["fresh_sign_up"][1] == "signed up 120 hours ago, wanted at most 48 hours"


def test_orders_make_first_time_then_repeat_customers_and_loyalty_tiers(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "purchase", "transaction_id": "o1", "value": 30})
    assert {"first_time_customer", "new", "repeat_customer", "loyal"} & visitor.page() == {"first_time_customer"}
    visitor.send({"type": "purchase", "transaction_id": "o2", "value": 30})
    found = visitor.page()
    assert {"repeat_customer", "loyal", "loyal_bronze"} <= found and "first_time_customer" not in found
    assert visitor.reasons()["loyal_bronze"] == (True, "bronze tier: 2 orders, revenue 60.00 (bronze from 2 orders)")
    visitor.send({"type": "purchase", "transaction_id": "o3", "value": 50})
    found = visitor.page()
    assert {"loyal", "loyal_gold"} <= found and "loyal_bronze" not in found
    member, reason = visitor.reasons()["loyal_bronze"]
    assert not member and reason == "gold tier, not bronze: 3 orders, revenue 110.00 (bronze from 2 orders)"


def test_a_customer_whose_last_order_is_old_enough_is_lapsed_until_they_order_again(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "purchase", "transaction_id": "old", "value": 10, "ts": ago(days=4)})
    assert {"lapsed", "lapsed_or_abandoner"} <= visitor.page()
    assert visitor.reasons()["lapsed"] == (True, "last order 4 days ago (lapsed after 3 days)")
    visitor.send({"type": "purchase", "transaction_id": "new", "value": 10})
    assert "lapsed" not in visitor.page()
    assert visitor.reasons()["lapsed"] == (False, "last order 0 days ago, wanted at least 3 days")


def test_lapsed_follows_the_shops_threshold_300_days_by_default(client, services) -> None:
    """The demo shop keeps the default: ten months without an order (the history is older than
    the API's window, so it is written as a shop's imported history is)."""
    def lapsed(days: int) -> bool:
        client.cookies.clear()  # a new visitor each time
        token = client.post("/v1/page?shop=demo", json={"shop": "demo", "slots": []}).json()["token"]
        record_history(services, "demo", token, {"event_id": f"p-{days}-{token[-8:]}", "type": "purchase",
                                                 "transaction_id": "o", "value": 5,
                                                 "ts": (utcnow() - timedelta(days=days)).isoformat()})
        r = client.get("/v1/fragments/banner?shop=demo&placement=home-hero&_context=1",
                       headers={"X-Visitor-Token": token})
        return "lapsed" in r.json()["visitor"]["audiences"]

    assert lapsed(301) and not lapsed(299)


def test_a_cart_left_for_an_hour_is_abandoned_until_it_is_bought_or_emptied(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "add_to_cart", "item_id": "22632", "ts": ago(minutes=61)})
    assert "cart_abandoner" in visitor.page()
    member, reason = visitor.reasons()["cart_abandoner"]
    assert member and reason == ("1 item in the cart (1.85), the newest added 61 minutes ago, no order since "
                                 "(abandoned after 60 minutes)")
    visitor.send({"type": "add_to_cart", "item_id": "22112", "ts": ago(minutes=5)})
    assert "cart_abandoner" not in visitor.page()  # the newest item is five minutes old
    assert visitor.reasons()["cart_abandoner"][1] == "cart added to 5 minutes ago, wanted at least 60 minutes"
    visitor.send({"type": "remove_from_cart", "item_id": "22112"})
    assert "cart_abandoner" in visitor.page()  # back to the hour-old cart
    visitor.send({"type": "purchase", "transaction_id": "o1", "value": 1.85, "items": [{"item_id": "22632"}]})
    assert "cart_abandoner" not in visitor.page()
    assert visitor.reasons()["cart_abandoner"][1] == "empty cart, wanted at least 60 minutes"


def test_an_emptied_cart_is_not_abandoned(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "add_to_cart", "item_id": "22632", "ts": ago(hours=3)},
                 {"type": "remove_from_cart", "item_id": "22632", "ts": ago(hours=2)})
    assert "cart_abandoner" not in visitor.page()


# -- the shop's own rules ------------------------------------------------------------------
def test_cart_value_and_categories_follow_the_cart_within_the_visit(client, shop) -> None:
    visitor = Visitor(client)
    assert not {"big_cart", "gift_cart"} & visitor.page()
    visitor.send({"type": "add_to_cart", "items": [{"item_id": "22632", "quantity": 2, "price": 1.85}]})
    assert {"gift_cart"} == {"big_cart", "gift_cart"} & visitor.page()
    visitor.send({"type": "add_to_cart", "item_id": "22112"})  # no price sent: the catalog's 4.95
    assert {"big_cart", "gift_cart"} <= visitor.page()
    assert visitor.reasons()["big_cart"] == (True, "cart value 8.65 (at least 5)")
    visitor.send({"type": "remove_from_cart", "items": [{"item_id": "22632", "quantity": 2}]})
    assert not {"gift_cart", "big_cart"} & visitor.page()
    assert visitor.reasons()["big_cart"] == (False, "cart value 4.95, wanted at least 5")


def test_views_interest_and_searches(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "view_item", "item_id": "85123A"})
    found = visitor.page()
    assert {"candle_lover"} <= found and not {"candle_fan", "saw_warmer", "saw_decor"} & found
    visitor.send({"type": "view_item", "item_id": "71053"}, {"type": "view_item", "item_id": "71053"})
    assert {"candle_fan", "candle_lover"} <= visitor.page()
    assert visitor.reasons()["candle_fan"] == (True, "2 items viewed in Candles and lights (at least 2)")
    visitor.send({"type": "view_item", "item_id": "22632"}, {"type": "view_item", "item_id": "22112"},
                 {"type": "view_item", "item_id": "22632"})
    found = visitor.page()
    assert {"saw_warmer", "saw_decor", "candle_fan"} <= found and "candle_lover" not in found
    member, reason = visitor.reasons()["candle_lover"]
    assert not member and reason == "50% of interest in candles and lights, wanted at least 60%"
    visitor.send({"type": "search", "search_term": "Glass LANTERNS"})
    assert "lantern_searcher" in visitor.page()


def test_a_product_page_counts_as_a_view(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page(type="product", item_id="22632")
    assert "saw_warmer" in visitor.page()


def test_device_os_browser_location_language_and_local_time(client, shop) -> None:
    phone = Visitor(client, ip=UK_IP, user_agent=IPHONE, language="de-AT,de;q=0.9,en;q=0.5")
    found = phone.page()
    assert {"iphone_safari", "cambridgeshire", "gamlingay", "german_speaker", "london_now"} <= found
    assert not {"windows_chrome", "london_later"} & found
    desktop = Visitor(client, ip=US_IP, user_agent=CHROME, language="en-US")
    found = desktop.page()
    assert "windows_chrome" in found
    assert not {"iphone_safari", "cambridgeshire", "gamlingay", "german_speaker", "london_now"} & found
    reasons = desktop.reasons()
    assert reasons["german_speaker"] == (False, "language en-us, wanted de")
    assert reasons["cambridgeshire"] == (False, "country US, wanted GB")
    unknown = Visitor(client, ip="127.0.0.1")  # no address, no time zone
    assert "london_now" not in unknown.page()
    early, late = london_hours()
    assert unknown.reasons()["london_now"] == (False, f"local time unknown (no time zone), wanted {early} to {late}")


def test_the_visits_source_campaign_referrer_and_landing_page_last_the_whole_visit(client, shop) -> None:
    mailed = Visitor(client)
    landing = "http://127.0.0.1:8000/spring?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
    assert "spring_mail" in mailed.page(url=landing)
    inside = mailed.page(url="http://127.0.0.1:8000/c/gifts", referrer=landing)  # browsing on
    assert "spring_mail" in inside
    searcher = Visitor(client)
    assert "googled_tv" in searcher.page(url="http://127.0.0.1:8000/tv/oled?q=x", referrer="https://www.google.com/")
    assert "googled_tv" in searcher.page(url="http://127.0.0.1:8000/basket", referrer="http://127.0.0.1:8000/tv/oled")
    assert searcher.reasons()["googled_tv"] == (
        True, 'referrer google.com (google.com); landing page /tv/oled (starting with "/tv")')
    elsewhere = Visitor(client)
    assert "googled_tv" not in elsewhere.page(url="http://127.0.0.1:8000/lamps", referrer="https://news.google.com/")
    assert elsewhere.reasons()["googled_tv"] == (False, 'landing page /lamps, wanted starting with "/tv"')


def test_page_views_this_visit(client, shop) -> None:
    visitor = Visitor(client)
    assert "third_page" not in visitor.page()
    assert "third_page" not in visitor.page()
    assert "third_page" in visitor.page()
    assert visitor.reasons()["third_page"] == (True, "3 page views this visit (at least 3 page views)")


def test_orders_revenue_and_days_since_the_last_order(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "purchase", "transaction_id": "o1", "value": 120, "ts": ago(days=2)})
    assert "big_spender" in visitor.page()
    member, reason = visitor.reasons()["big_spender"]
    assert member and reason == "1 order (at least 1 order); revenue 120.00 (at least 100); last order 2 days ago " \
                                "(at most 30 days)"


def test_not_any_all_and_audiences_named_by_others(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "add_to_cart", "items": [{"item_id": "22632", "quantity": 2}], "ts": ago(hours=2)})
    assert {"cart_abandoner", "lapsed_or_abandoner"} <= visitor.page()
    member, reason = visitor.reasons()["lapsed_or_abandoner"]
    assert member and reason.startswith("in cart_abandoner (2 items in the cart")
    single = Visitor(client)
    single.page()
    single.send({"type": "add_to_cart", "item_id": "22632", "ts": ago(hours=2)})
    found = single.page()
    assert "cart_abandoner" in found and "lapsed_or_abandoner" not in found
    assert single.reasons()["lapsed_or_abandoner"] == (
        False, "none held: not in lapsed; 1 item in the cart, wanted at least 2 items")


# -- seeing why, and what sees them ---------------------------------------------------------
def test_context_lists_the_visitors_audiences_and_every_audiences_reason(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    data = visitor.context()
    assert data["visitor"]["audiences"][0] == "new" and "returning" not in data["visitor"]["audiences"]
    listed = [a["id"] for a in data["audiences"]]
    assert listed == AUDIENCES
    by_id = {a["id"]: a for a in data["audiences"]}
    assert by_id["new"] == {"id": "new", "member": True, "reason": "first visit, no order yet"}
    assert by_id["lapsed"] == {"id": "lapsed", "member": False, "reason": "no order yet, wanted at least 1 order"}


def test_qa_can_render_as_a_member_of_any_audience(client, shop) -> None:
    visitor = Visitor(client)
    visitor.page()
    data = visitor.context(placement="lapsed", audience="lapsed,cart_abandoner")
    assert {"lapsed", "cart_abandoner", "lapsed_or_abandoner"} <= set(data["visitor"]["audiences"])
    by_id = {a["id"]: a for a in data["audiences"]}
    assert by_id["lapsed"]["reason"] == "QA override (audience=)"
    assert data["campaigns"] == ["in-lapsed"]
    [decision] = data["decisions"]
    assert "ok: in audience lapsed: QA override (audience=)" in decision["reasons"]
    # Without the QA key the override is ignored.
    client.cookies.clear()
    r = client.get(f"/v1/fragments/banner?shop={SHOP}&placement=lapsed&audience=lapsed",
                   headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": visitor.token})
    assert r.status_code == 200 and "in-lapsed" not in r.headers.get("x-vitrine-campaigns", "")


def test_templates_get_the_visitors_audiences(client, shop, settings) -> None:
    templates = settings.resolved_data_dir / "templates"
    templates.mkdir(exist_ok=True)
    (templates / f"banner-{SHOP}.html").write_text(
        '<div data-vitrine-campaign="{{ campaign.id }}">{{ visitor.audiences | join(",") }}|{{ visitor.language }}'
        '{% if "cart_abandoner" in visitor.audiences %} Your basket is waiting{% endif %}</div>')
    visitor = Visitor(client, ip="127.0.0.1", user_agent="curl/8.5", language="fr-CH, fr;q=0.9")
    visitor.page()
    visitor.send({"type": "add_to_cart", "item_id": "22112", "ts": ago(hours=2)})
    client.cookies.clear()
    r = client.get(f"/v1/fragments/banner?shop={SHOP}&placement=cart_abandoner",
                   headers={**visitor.headers, "X-Visitor-Token": visitor.token})
    assert r.status_code == 200
    assert "new,cart_abandoner|fr-ch Your basket is waiting" in r.text


def test_campaign_decisions_say_which_audience_matched_or_excluded(client, shop, settings) -> None:
    path = settings.resolved_shops_dir / f"{SHOP}.toml"
    path.write_text(path.read_text() + (
        '\n[[campaigns]]\nid = "reminder"\nwidget = "banner"\nplacement = "reminder"\n'
        '[campaigns.audience]\naudiences = ["lapsed", "cart_abandoner"]\nnot_audiences = ["big_cart", "loyal"]\n'))
    visitor = Visitor(client)
    visitor.page()
    [decision] = visitor.context(placement="reminder")["decisions"]
    assert decision["show"] is False
    assert ("no: in none of the audiences lapsed/cart_abandoner (lapsed: no order yet, wanted at least 1 order; "
            "cart_abandoner: empty cart, wanted at least 60 minutes)") in decision["reasons"]
    visitor.send({"type": "add_to_cart", "item_id": "22632", "ts": ago(hours=2)})
    [decision] = visitor.context(placement="reminder")["decisions"]
    assert decision["show"] is True
    assert decision["reasons"][1].startswith("ok: in audience cart_abandoner: 1 item in the cart (1.85)")
    assert decision["reasons"][2] == "ok: in none of the excluded audiences big_cart/loyal"
    visitor.send({"type": "add_to_cart", "item_id": "22112", "quantity": 1, "ts": ago(hours=2)})
    [decision] = visitor.context(placement="reminder")["decisions"]
    assert decision["show"] is False
    assert "no: in excluded audience big_cart: cart value 6.80 (at least 5)" in decision["reasons"]


def test_without_consent_only_what_the_request_says_counts(client, shop, settings) -> None:
    visitor = Visitor(client)
    visitor.page()
    visitor.send({"type": "add_to_cart", "item_id": "22632", "ts": ago(hours=2)})
    body = {"shop": SHOP, "token": visitor.token, "page": {"url": "http://127.0.0.1:8000/"},
            "consent": {"personalization": False, "analytics": False},
            "slots": [{"id": a, "widget": "banner", "attrs": {"placement": a}} for a in AUDIENCES]}
    client.cookies.clear()
    data = client.post(f"/v1/page?shop={SHOP}", json=body, headers=visitor.headers).json()
    assert "cart_abandoner" not in data["fragments"] and "new" in data["fragments"]
