"""Popup triggers and frequency caps in Chromium, on a shop of their own: one popup per
trigger or cap, each picked by the test page's page type (`data-vitrine-page`)."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from playwright.sync_api import BrowserContext, Page, expect

from .conftest import wait_until

SHOP = "popups"
CONFIG = """
name = "Popup triggers"
[qa]
open = true
[popups]
per_session = 2

[[campaigns]]
id = "on-load"
widget = "popup"
title = "On load"
audience = { page_type = ["t-load", "t-two"] }

[[campaigns]]
id = "second-on-load"
widget = "popup"
title = "Also on load"
audience = { page_type = ["t-two"] }

[[campaigns]]
id = "delayed"
widget = "popup"
title = "After a moment"
audience = { page_type = ["t-delay"] }
trigger = { on = "delay", seconds = 0.6 }

[[campaigns]]
id = "half-way"
widget = "popup"
title = "Half way down"
audience = { page_type = ["t-scroll"] }
trigger = { on = "scroll", percent = 50 }

[[campaigns]]
id = "leaving"
widget = "popup"
title = "Before you go"
audience = { page_type = ["t-exit"] }
trigger = { on = "exit" }

[[campaigns]]
id = "third-page"
widget = "popup"
title = "Third page"
audience = { page_type = ["t-views"] }
trigger = { on = "page_views", count = 3 }

[[campaigns]]
id = "added"
widget = "popup"
title = "Nice choice"
audience = { page_type = ["t-cart-add"] }
trigger = { on = "add_to_cart" }

[[campaigns]]
id = "idle"
widget = "popup"
title = "Still there?"
audience = { page_type = ["t-idle"] }
trigger = { on = "inactivity", seconds = 1 }

[[campaigns]]
id = "at-cart"
widget = "popup"
title = "Your cart"
trigger = { on = "cart_page" }

[[campaigns]]
id = "once-a-session"
widget = "popup"
title = "Once a session"
once_closed = false
audience = { page_type = ["t-session"] }
frequency = { per_session = 1 }

[[campaigns]]
id = "daily"
widget = "popup"
title = "Once a day, twice in all"
once_closed = false
audience = { page_type = ["t-daily"] }
frequency = { per_day = 1, total = 2 }

[[campaigns]]
id = "after-close"
widget = "popup"
title = "Back a day after a close"
audience = { page_type = ["t-close"] }
frequency = { days_after_close = 1 }

[[campaigns]]
id = "converts"
widget = "popup"
title = "Take the code"
code = "TAKE5"
once_closed = false
audience = { page_type = ["t-convert"] }

[[campaigns]]
id = "global-1"
widget = "popup"
title = "First of three"
once_closed = false
audience = { page_type = ["t-g1"] }

[[campaigns]]
id = "global-2"
widget = "popup"
title = "Second of three"
once_closed = false
audience = { page_type = ["t-g2"] }

[[campaigns]]
id = "global-3"
widget = "popup"
title = "Third of three"
once_closed = false
audience = { page_type = ["t-g3"] }

[[campaigns]]
id = "join"
widget = "popup"
title = "10% off? Join us"
cta = "Yes please"
code = "JOIN10"
reveal_text = "Your code:"
audience = { page_type = ["t-signup"] }
[campaigns.signup]
birthday = true
interests = ["Candles", "Lights"]
thanks = "Welcome aboard!"

[[campaigns]]
id = "hurry"
widget = "popup"
title = "Quick!"
audience = { page_type = ["t-countdown"] }
countdown = { minutes = 0.1, text = "Ends in" }
"""
PAGE = """<!doctype html><html><head><title>Popup test</title><meta name="viewport" content="width=device-width, initial-scale=1">
<script async src="/v1/vitrine.js" data-shop="popups"></script></head>
<body data-vitrine-page="%s" style="margin:0"><h1>Test page</h1><div style="height:4000px"></div></body></html>"""
DIALOG = "[data-vitrine-popup] dialog"
# A campaign's stored counts, moved back in time by `days` (times shown and the close).
AGE = """([key, days]) => {
  const c = JSON.parse(localStorage.getItem(key)); const by = days * 864e5;
  c.s = (c.s || []).map(t => t - by); if (c.c) c.c -= by;
  localStorage.setItem(key, JSON.stringify(c));
}"""


@pytest.fixture(scope="module")
def server(vitrine_server):
    (vitrine_server.data_dir / "shops" / f"{SHOP}.toml").write_text(CONFIG)
    url = f"{vitrine_server.url}/v1/fragments/popup?shop={SHOP}&page_type=t-load"
    assert wait_until(lambda: "<dialog" in urllib.request.urlopen(url).read().decode()), "the test shop was not served"
    return vitrine_server


def open_page(server, context: BrowserContext, page_type: str, page: Page | None = None) -> tuple[Page, dict]:
    """The test page of this page type (in `page`, the same tab, or a new one) and its page call's answer."""
    page = page or context.new_page()
    page.route(f"{server.url}/popup-test/*", lambda route: route.fulfill(
        body=PAGE % route.request.url.rsplit("/", 1)[1], content_type="text/html"))
    with page.expect_response(lambda r: r.url.startswith(f"{server.url}/v1/page")) as response:
        page.goto(f"{server.url}/popup-test/{page_type}")
    return page, response.value.json()


def popup_named(page: Page, campaign: str):
    return page.locator(f'[data-vitrine-popup="{campaign}"] dialog')


def test_load_opens_at_once_and_popups_js_is_fetched_only_for_a_page_with_popups(server, context, watch) -> None:
    scripts: list[str] = []
    page = context.new_page()
    problems = watch(page)
    page.on("request", lambda r: scripts.append(r.url) if r.url.endswith("/v1/popups.js") else None)
    page, answer = open_page(server, context, "t-none", page)
    assert answer["popups"] == []
    page.wait_for_timeout(300)
    assert scripts == []
    open_page(server, context, "t-load", page)
    expect(popup_named(page, "on-load")).to_be_visible()
    assert scripts == [f"{server.url}/v1/popups.js"]
    problems.assert_none()


def test_at_most_one_popup_per_page_view(server, context) -> None:
    page, answer = open_page(server, context, "t-two")
    assert [p["campaign"] for p in answer["popups"]] == ["on-load", "second-on-load"]
    expect(popup_named(page, "on-load")).to_be_visible()
    page.keyboard.press("Escape")
    page.wait_for_timeout(300)
    expect(page.locator("[data-vitrine-popup]")).to_have_count(0)


def test_delay_waits_its_seconds(server, context) -> None:
    page, answer = open_page(server, context, "t-delay")
    assert answer["popups"][0]["trigger"] == {"on": "delay", "seconds": 0.6}
    page.wait_for_timeout(150)
    expect(page.locator(DIALOG)).to_have_count(0)
    expect(popup_named(page, "delayed")).to_be_visible()


def test_scroll_waits_for_half_the_page(server, context) -> None:
    page, _ = open_page(server, context, "t-scroll")
    page.wait_for_timeout(300)
    page.evaluate("window.scrollTo(0, 800)")
    page.wait_for_timeout(300)
    expect(page.locator(DIALOG)).to_have_count(0)
    page.evaluate("window.scrollTo(0, 2000)")
    expect(popup_named(page, "half-way")).to_be_visible()


def test_exit_intent_on_desktop_is_the_pointer_leaving_through_the_top(server, context) -> None:
    page, _ = open_page(server, context, "t-exit")
    page.wait_for_timeout(300)
    page.mouse.move(600, 400)
    page.mouse.move(1190, 400)  # to the side: not leaving
    page.wait_for_timeout(200)
    expect(page.locator(DIALOG)).to_have_count(0)
    page.mouse.move(600, 5)
    page.mouse.move(600, -20, steps=2)
    expect(popup_named(page, "leaving")).to_be_visible()


def phone(new_context) -> BrowserContext:
    return new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True)


def test_exit_intent_on_a_phone_is_a_fast_scroll_up(server, new_context) -> None:
    context = phone(new_context)
    page, _ = open_page(server, context, "t-exit")
    page.wait_for_timeout(300)
    for y in range(0, 2001, 250):  # reading down the page
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(30)
    for y in range(2000, 1799, -50):  # a slow scroll back up a little: still reading
        page.evaluate(f"window.scrollTo(0, {y})")
        page.wait_for_timeout(200)
    expect(page.locator(DIALOG)).to_have_count(0)
    page.evaluate("window.scrollTo(0, 1200)")  # a flick up, towards the address bar
    expect(popup_named(page, "leaving")).to_be_visible()


def test_exit_intent_on_a_phone_is_also_the_tab_being_hidden(server, new_context) -> None:
    context = phone(new_context)
    page, _ = open_page(server, context, "t-exit")
    page.wait_for_timeout(300)
    page.evaluate("""() => {
      Object.defineProperty(document, 'visibilityState', { value: 'hidden', configurable: true });
      document.dispatchEvent(new Event('visibilitychange'));
      Object.defineProperty(document, 'visibilityState', { value: 'visible', configurable: true });
    }""")
    expect(popup_named(page, "leaving")).to_be_visible()


def test_page_views_trigger_waits_for_the_third_page_of_the_visit(server, context) -> None:
    page, first = open_page(server, context, "t-views")
    page, second = open_page(server, context, "t-views", page)
    assert first["popups"] == [] and second["popups"] == []
    page, third = open_page(server, context, "t-views", page)
    assert [p["campaign"] for p in third["popups"]] == ["third-page"]
    expect(popup_named(page, "third-page")).to_be_visible()
    fragment = context.request.get(f"{server.url}/v1/fragments/popup?shop={SHOP}&page_type=t-views&_context=1").json()
    reasons = next(d for d in fragment["decisions"] if d["campaign"] == "third-page")["reasons"]
    assert any(r.startswith("ok: page ") and "wants page 3 on" in r for r in reasons), reasons


def test_add_to_cart_opens_it_from_the_data_layer_or_the_own_call(server, context, new_context) -> None:
    page, _ = open_page(server, context, "t-cart-add")
    page.wait_for_timeout(400)
    expect(page.locator(DIALOG)).to_have_count(0)
    page.evaluate("dataLayer.push({ event: 'add_to_cart', ecommerce: { items: [{ item_id: '22632', quantity: 1 }] } })")
    expect(popup_named(page, "added")).to_be_visible()

    other, _ = open_page(server, new_context(), "t-cart-add")
    other.wait_for_timeout(300)
    other.evaluate("vitrine('event', 'add_to_cart', { item_id: '22632' })")
    expect(popup_named(other, "added")).to_be_visible()


def test_inactivity_waits_for_seconds_without_input(server, context) -> None:
    page, _ = open_page(server, context, "t-idle")
    for x in range(5):  # moving the pointer keeps it away
        page.mouse.move(100 + 50 * x, 300)
        page.wait_for_timeout(400)
    expect(page.locator(DIALOG)).to_have_count(0)
    expect(popup_named(page, "idle")).to_be_visible()


def test_cart_page_trigger_is_the_cart_page_type(server, context) -> None:
    page, home = open_page(server, context, "home")
    assert home["popups"] == []
    page, cart = open_page(server, context, "cart", page)
    assert [p["campaign"] for p in cart["popups"]] == ["at-cart"]
    expect(popup_named(page, "at-cart")).to_be_visible()


def close(page: Page, campaign: str) -> None:
    expect(popup_named(page, campaign)).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator("[data-vitrine-popup]")).to_have_count(0)


def stays_shut(page: Page) -> None:
    page.wait_for_timeout(400)
    expect(page.locator(DIALOG)).to_have_count(0)


def test_per_session_cap(server, context, new_context) -> None:
    page, _ = open_page(server, context, "t-session")
    close(page, "once-a-session")
    page, again = open_page(server, context, "t-session", page)
    assert [p["campaign"] for p in again["popups"]] == ["once-a-session"]  # the server offers it; the browser counts
    stays_shut(page)
    fresh, _ = open_page(server, context, "t-session")  # a new tab is a new session
    expect(popup_named(fresh, "once-a-session")).to_be_visible()


def test_per_day_and_total_caps(server, context) -> None:
    page, _ = open_page(server, context, "t-daily")
    close(page, "daily")
    open_page(server, context, "t-daily", page)
    stays_shut(page)  # once a day
    page.evaluate(AGE, [f"vitrine:{SHOP}:pop:daily", 1.1])
    open_page(server, context, "t-daily", page)
    close(page, "daily")  # a day later: the second time
    page.evaluate(AGE, [f"vitrine:{SHOP}:pop:daily", 1.1])
    open_page(server, context, "t-daily", page)
    stays_shut(page)  # twice in all


def test_days_after_close(server, context) -> None:
    page, answer = open_page(server, context, "t-close")
    assert answer["popups"][0]["once_closed"] is False
    close(page, "after-close")
    open_page(server, context, "t-close", page)
    stays_shut(page)
    page.evaluate(AGE, [f"vitrine:{SHOP}:pop:after-close", 1.1])
    open_page(server, context, "t-close", page)
    expect(popup_named(page, "after-close")).to_be_visible()


def test_never_after_a_conversion(server, context) -> None:
    page, _ = open_page(server, context, "t-convert")
    expect(popup_named(page, "converts")).to_be_visible()
    page.get_by_role("button", name="Reveal my code").click()
    expect(page.locator('[data-vitrine-popup="converts"] .vitrine-code')).to_have_text("TAKE5")
    page.keyboard.press("Escape")
    open_page(server, context, "t-convert", page)
    stays_shut(page)


def test_shop_wide_per_session_cap(server, context) -> None:
    page, _ = open_page(server, context, "t-g1")
    close(page, "global-1")
    open_page(server, context, "t-g2", page)
    close(page, "global-2")
    page, third = open_page(server, context, "t-g3", page)
    assert third["popups"][0]["session_cap"] == 2
    stays_shut(page)


def test_two_step_sign_up_stores_the_lead_reveals_the_code_and_makes_a_prospect(server, context, watch, screenshot) -> None:
    page, answer = open_page(server, context, "t-signup")
    problems = watch(page)
    assert "JOIN10" not in answer["popups"][0]["html"]
    popup = popup_named(page, "join")
    expect(popup).to_be_visible()
    page.get_by_role("button", name="Yes please").click()
    email = page.get_by_role("textbox", name="E-mail")
    expect(email).to_be_focused()
    screenshot(page, "signup-form")

    email.fill("not an address")
    page.get_by_role("button", name="Sign me up").click()  # the browser's own check stops it
    assert server.query("SELECT count(*) FROM leads WHERE shop = ?", SHOP)[0][0] == 0
    email.fill("ann@example.com")
    page.get_by_label("Birthday").fill("1990-04-01")
    page.get_by_label("Lights").check()
    page.get_by_role("button", name="Sign me up").click()
    assert server.query("SELECT count(*) FROM leads WHERE shop = ?", SHOP)[0][0] == 0  # the opt-in is needed
    page.get_by_label("Yes, send me offers").check()
    page.get_by_role("button", name="Sign me up").click()
    expect(page.locator('[data-vitrine-popup="join"] .vitrine-code')).to_have_text("JOIN10")
    expect(page.get_by_text("Welcome aboard!")).to_be_visible()
    screenshot(page, "signup-done")

    visitor = server.signer.visitor_id(SHOP, page.evaluate(f"() => localStorage.getItem('vitrine:{SHOP}:token')"))
    [lead] = server.query("SELECT * FROM leads WHERE shop = ?", SHOP)
    assert (lead["visitor_id"], lead["email"], lead["birthday"], lead["interests"]) == (visitor, "ann@example.com", "1990-04-01", "Lights")
    signed = server.query("SELECT campaign FROM events WHERE shop = ? AND visitor_id = ? AND type = 'sign_up'", SHOP, visitor)
    assert [row["campaign"] for row in signed] == ["join"]
    page.keyboard.press("Escape")
    context_json = context.request.get(f"{server.url}/v1/fragments/popup?shop={SHOP}&page_type=t-signup&_context=1").json()
    assert "prospect" in context_json["visitor"]["audiences"]
    open_page(server, context, "t-signup", page)
    stays_shut(page)  # signed up: a conversion
    problems.assert_none()


def test_countdown_ticks_and_the_popup_goes_at_zero(server, context) -> None:
    page, answer = open_page(server, context, "t-countdown")
    assert '<time>0:06</time>' in answer["popups"][0]["html"]  # rendered by the server with the time left
    clock = page.locator('[data-vitrine-popup="hurry"] [data-vitrine-countdown] time')
    expect(clock).to_have_text(re.compile(r"^0:0[3-6]$"))
    first = clock.inner_text()
    expect(clock).not_to_have_text(first, timeout=2500)  # it ticks
    assert clock.inner_text() < first
    expect(page.locator("[data-vitrine-popup]")).to_have_count(0, timeout=8000)
    open_page(server, context, "t-countdown", page)
    stays_shut(page)  # the offer is over for this visitor


def test_without_consent_the_caps_count_in_this_session_only(server, context) -> None:
    page = context.new_page()
    # The shop's own consent call, queued before the script loads: no to everything.
    page.add_init_script("window.vitrine = { q: [['consent', { personalization: false, analytics: false }]] }")
    page, answer = open_page(server, context, "t-session", page)
    assert answer["consent"]["personalization"] is False and "token" not in answer
    close(page, "once-a-session")
    open_page(server, context, "t-session", page)
    stays_shut(page)
    assert page.evaluate("() => Object.keys(localStorage).filter(k => k.startsWith('vitrine'))") == []
    kept = page.evaluate("() => Object.keys(sessionStorage).filter(k => k.startsWith('vitrine-pop:')).sort()")
    assert kept == ["vitrine-pop:n", "vitrine-pop:n:once-a-session", "vitrine-pop:once-a-session"]
