"""The demo's popups as a visitor meets them in Chromium: exit intent after the welcome, the
two-step sign-up on a returning visitor's second page, the cart reminder on the next visit,
the social visitor's one-minute countdown, and the scheduled cart banner (screenshots with
VITRINE_SCREENSHOTS)."""

from __future__ import annotations

import json
import re
import sqlite3
from datetime import datetime, timedelta

from playwright.sync_api import Page, expect

from .conftest import wait_until


def popup(page: Page, campaign: str):
    return page.locator(f'[data-vitrine-popup="{campaign}"] dialog')


def visit_ended_long_ago(server, page: Page, hours: float = 2) -> None:
    """Move this visitor's last page view (and what their cart holds) `hours` back, as if they
    had left then: their next page starts a new visit, as a returning visitor."""
    visitor = server.visitor_id(page)
    assert wait_until(lambda: server.query("SELECT 1 FROM visitors WHERE shop = 'demo' AND visitor_id = ?", visitor))
    conn = sqlite3.connect(server.data_dir / "vitrine.db", timeout=10)
    try:
        row = conn.execute("SELECT last_seen, state FROM visitors WHERE shop = 'demo' AND visitor_id = ?", (visitor,)).fetchone()
        state = json.loads(row[1]) if row[1] else None
        if state and state.get("cart"):
            state["cart"] = [[i, q, p, at - hours * 3600] for i, q, p, at in state["cart"]]
        earlier = datetime.fromisoformat(str(row[0])) - timedelta(hours=hours)
        conn.execute("UPDATE visitors SET last_seen = ?, visits = max(visits, 2), state = ? WHERE shop = 'demo' AND visitor_id = ?",
                     (earlier.isoformat(sep=" "), json.dumps(state) if state else row[1], visitor))
        conn.commit()
    finally:
        conn.close()


def test_exit_intent_after_the_welcome(vitrine_server, context, watch, screenshot) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    expect(popup(page, "welcome")).to_be_visible()
    page.keyboard.press("Escape")
    page.goto(f"{vitrine_server.url}/demo/category/christmas")
    page.wait_for_timeout(1500)
    expect(page.locator("[data-vitrine-popup]")).to_have_count(0)  # the welcome stays closed
    page.mouse.move(600, 200)
    page.mouse.move(600, -10, steps=3)
    expect(popup(page, "before-you-go")).to_be_visible()
    screenshot(page, "demo-exit-intent")
    page.get_by_role("button", name="Show me the code").click()
    expect(page.locator('[data-vitrine-popup="before-you-go"] .vitrine-code')).to_have_text("FREESHIP")
    problems.assert_none()


def test_the_sign_up_on_a_returning_visitors_second_page(vitrine_server, context, watch, screenshot) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    expect(popup(page, "welcome")).to_be_visible()
    page.keyboard.press("Escape")
    visit_ended_long_ago(vitrine_server, page)
    page.goto(f"{vitrine_server.url}/demo/")  # back another day: the first page of a new visit
    page.wait_for_timeout(800)
    expect(page.locator("[data-vitrine-popup]")).to_have_count(0)
    page.goto(f"{vitrine_server.url}/demo/category/christmas")
    expect(popup(page, "newsletter")).to_be_visible()
    assert "HELLO-" not in page.content() and "HELLO-" not in page.evaluate(
        "() => document.querySelector('[data-vitrine-popup]').shadowRoot.innerHTML")
    screenshot(page, "demo-signup-step1")
    page.get_by_role("button", name="Yes please").click()
    page.get_by_role("textbox", name="E-mail").fill("ann@example.com")
    interests = page.locator('[data-vitrine-popup="newsletter"] input[name=interests]')
    assert interests.count() >= 3  # the catalog's largest categories
    interests.first.check()
    page.get_by_label("Yes, send me the Gift Shop letter").check()
    screenshot(page, "demo-signup-step2")
    page.get_by_role("button", name="Send me the code").click()
    expect(page.locator('[data-vitrine-popup="newsletter"] .vitrine-code')).to_have_text(re.compile(r"^HELLO-\w{8}$"))
    screenshot(page, "demo-signup-done")
    [lead] = vitrine_server.query("SELECT * FROM leads WHERE shop = 'demo' AND email = 'ann@example.com'")
    assert lead["visitor_id"] == vitrine_server.visitor_id(page)
    problems.assert_none()


def test_the_cart_reminder_on_the_next_visit(vitrine_server, context, watch, screenshot) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    expect(popup(page, "welcome")).to_be_visible()
    page.keyboard.press("Escape")
    product = page.locator("[data-vitrine-slot=home-recs] [data-item-id]").first.get_attribute("data-item-id")
    page.goto(f"{vitrine_server.url}/demo/product/{product}")
    page.locator("[data-add-to-cart]").click()
    visitor = vitrine_server.visitor_id(page)
    assert vitrine_server.wait_for_events(visitor, "add_to_cart")
    visit_ended_long_ago(vitrine_server, page)
    page.goto(f"{vitrine_server.url}/demo/")
    dialog = popup(page, "cart-reminder")
    expect(dialog).to_be_visible()
    expect(page.locator(f'[data-vitrine-popup="cart-reminder"] .vitrine-cart [data-item-id="{product}"]')).to_be_visible()
    screenshot(page, "demo-cart-reminder")
    problems.assert_none()


def test_a_social_first_visit_gets_a_one_minute_countdown(vitrine_server, context, watch, screenshot) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/?utm_source=facebook&utm_medium=social")
    expect(popup(page, "social-minute")).to_be_visible()
    clock = page.locator('[data-vitrine-popup="social-minute"] [data-vitrine-countdown] time')
    expect(clock).to_have_text("0:59", timeout=3000)
    screenshot(page, "demo-countdown")
    problems.assert_none()


def test_the_scheduled_cart_banner_previewed_with_now(vitrine_server, context, screenshot) -> None:
    page = context.new_page()
    base = f"{vitrine_server.url}/v1/fragments/banner?shop=demo&placement=cart-notice"
    page.goto(base + "&now=2026-12-07T10:00")  # a Monday morning in London
    expect(page.get_by_text("Order by 2 pm for same-day dispatch")).to_be_visible()
    screenshot(page, "demo-scheduled-banner")
    page.goto(base + "&now=2026-12-06T10:00")  # a Sunday
    expect(page.get_by_text("Order by 2 pm")).to_have_count(0)
