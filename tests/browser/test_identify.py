"""vitrine('identify') in Chromium: the demo's log-in page signs a customer's id as a shop's
backend would, the embed script sends it with the page call, and the browser is that
customer (their imported orders and first name) until vitrine('identify', false)."""

from __future__ import annotations

from playwright.sync_api import expect

from .conftest import wait_until

HERO = '[data-vitrine-slot="home-hero"] .vitrine-banner'


def identified_as(vitrine_server, visitor_id: str):
    rows = vitrine_server.query("SELECT identified_as FROM visitors WHERE shop = 'demo' AND visitor_id = ?", visitor_id)
    return rows[0]["identified_as"] if rows else None


def test_logging_in_and_out_on_the_demo(vitrine_server, context, watch) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    expect(page.locator('[data-vitrine-slot="top-banner"][data-vitrine-filled]')).to_have_count(1)
    visitor = vitrine_server.visitor_id(page)
    assert identified_as(vitrine_server, visitor) is None

    page.goto(f"{vitrine_server.url}/demo/account")
    page.get_by_role("link", name="Log in as Alan").click()
    expect(page.locator("[data-demo-logged-in]")).to_have_attribute("data-demo-logged-in", "12713")
    assert wait_until(lambda: identified_as(vitrine_server, visitor) == "u:12713")
    assert vitrine_server.visitor_id(page) == visitor  # the same browser, its history kept

    page.goto(f"{vitrine_server.url}/demo/")
    expect(page.locator(HERO)).to_contain_text("Thanks for shopping with us, Alan")

    page.goto(f"{vitrine_server.url}/demo/account?logout=1")
    assert wait_until(lambda: identified_as(vitrine_server, visitor) is None)
    page.goto(f"{vitrine_server.url}/demo/")
    expect(page.locator('[data-vitrine-slot="top-banner"][data-vitrine-filled]')).to_have_count(1)
    expect(page.locator(HERO, has_text="Alan")).to_have_count(0)
    problems.assert_none()


def test_identify_after_the_page_call_runs_it_again(vitrine_server, context, watch) -> None:
    """A single-page shop that learns who the visitor is after its page loaded: the script
    runs the page call again with the identify."""
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/account?as=17850")
    expect(page.locator('[data-vitrine-slot="top-banner"][data-vitrine-filled]')).to_have_count(1)
    visitor = vitrine_server.visitor_id(page)
    assert wait_until(lambda: identified_as(vitrine_server, visitor) == "u:17850")
    page.goto(f"{vitrine_server.url}/demo/account?logout=1")
    assert wait_until(lambda: identified_as(vitrine_server, visitor) is None)
    page.goto(f"{vitrine_server.url}/demo/cart")
    expect(page.locator('[data-vitrine-slot="top-banner"][data-vitrine-filled]')).to_have_count(1)
    signature = page.evaluate("() => fetch('/demo/account?as=17850').then(r => r.text())"
                              ".then(t => JSON.parse(t.match(/vitrine\\(\"identify\", (.*)\\);/)[1]))")
    page.evaluate("s => vitrine('identify', s)", signature)
    assert wait_until(lambda: identified_as(vitrine_server, visitor) == "u:17850")
    problems.assert_none()
