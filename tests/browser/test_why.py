""""Why this?" in Chromium: the native <details> opens inside the widget's shadow root (by
click and by keyboard), and its "Turn off personalization" withdraws consent: the cookie
and the vitrine: keys go, the server holds nothing, and it stays off on the next page."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from .conftest import wait_until
from .test_events import close_welcome_popup
from .test_privacy import rows_naming
from .test_recommendations import UK, christmas_items

PICKS = '[data-vitrine-slot="home-recs"]'
KEPT = "() => Object.keys(localStorage).filter(k => k.startsWith('vitrine:demo:'))"


def cookie(context) -> list:
    return [c for c in context.cookies() if c["name"] == "vitrine_demo"]


def visitors(server) -> int:
    # The impressions of a visitor without a profile make no row either (server/store/sql.py).
    return server.query("SELECT count(*) FROM visitors WHERE shop = 'demo'")[0][0]


def me_status(page: Page, server, token: str) -> int:
    """GET /v1/me with this token, from the page (the shop's origin, as the script asks)."""
    return page.evaluate(
        "([url, token]) => fetch(url, {headers: {'X-Visitor-Token': token}}).then(r => r.status)",
        [f"{server.url}/v1/me?shop=demo", token],
    )


def test_why_this_opens_in_the_shadow_root_and_turns_personalization_off(vitrine_server, new_context, watch) -> None:
    context = new_context(extra_http_headers=UK)
    page = context.new_page()
    problems = watch(page)
    viewed = christmas_items(vitrine_server, 3)
    page.goto(f"{vitrine_server.url}/demo/product/{viewed[0]}")
    close_welcome_popup(page)
    for item in viewed[1:]:
        page.goto(f"{vitrine_server.url}/demo/product/{item}")
    page.goto(f"{vitrine_server.url}/demo/")
    token = page.evaluate("() => localStorage.getItem('vitrine:demo:token')")
    visitor = vitrine_server.visitor_id(page)
    assert me_status(page, vitrine_server, token) == 200 and cookie(context)

    why = page.locator(f"{PICKS} details.vitrine-why")
    expect(why).to_have_count(1)
    assert page.locator(PICKS).evaluate("el => !!el.shadowRoot.querySelector('details.vitrine-why')")
    reasons = why.locator("li")
    expect(reasons.first).to_be_hidden()  # closed until asked
    why.locator("summary").focus()
    page.keyboard.press("Enter")  # a native <details>: the keyboard opens it, no script needed
    expect(why).to_have_attribute("open", "")
    expect(reasons.first).to_have_text("Because you looked at items in Christmas")

    page.evaluate("() => document.addEventListener('vitrine:optout', () => { window.optedOut = true; })")
    why.get_by_role("button", name="Turn off personalization").click()
    assert wait_until(lambda: cookie(context) == [] and page.evaluate(KEPT) == [])
    assert page.evaluate("() => window.optedOut") is True  # the shop's banner can remember the no
    assert me_status(page, vitrine_server, token) == 404
    assert wait_until(lambda: rows_naming(vitrine_server, visitor) == [])
    # The page call ran again: the panel is no longer from their history, and says so.
    expect(page.locator(f"{PICKS} details.vitrine-why")).to_contain_text("Personalization is off")
    expect(page.locator(f"{PICKS} [data-vitrine-optout]")).to_have_count(0)
    # Nor does a popup follow the click (the welcome popup comes after a second for a
    # visitor the server does not know, which they now are): no popup while it is off.
    page.wait_for_timeout(1800)
    expect(page.locator("[data-vitrine-popup]")).to_have_count(0)

    # The next page keeps it off: no token, no cookie, no new visitor, no popup.
    stored = visitors(vitrine_server)
    page.goto(f"{vitrine_server.url}/demo/cart")
    expect(page.locator('[data-vitrine-slot="top-banner"][data-vitrine-filled]')).to_have_count(1)
    page.wait_for_timeout(1800)
    assert page.evaluate(KEPT) == [] and cookie(context) == [] and visitors(vitrine_server) == stored
    expect(page.locator("[data-vitrine-popup]")).to_have_count(0)
    assert page.evaluate("() => localStorage.getItem('vitrine-off:demo')") == "1"

    # Only the shop's own call turns it on again.
    page.evaluate("() => vitrine('consent', {personalization: true})")
    assert wait_until(lambda: "vitrine:demo:token" in page.evaluate(KEPT))
    assert page.evaluate("() => localStorage.getItem('vitrine-off:demo')") is None
    problems.assert_none()


def test_the_consent_demo_banner_remembers_the_turn_off(vitrine_server, context, watch) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/consent")
    banner = '[data-vitrine-slot="top-banner"]'
    expect(page.locator(f"{banner} details.vitrine-why")).to_contain_text("Personalization is off")
    expect(page.locator(f"{banner} [data-vitrine-optout]")).to_have_count(0)  # nothing to turn off
    page.get_by_role("button", name="Accept").click()
    assert wait_until(lambda: page.evaluate(
        "() => Object.keys(localStorage).some(k => k === 'vitrine:demo-consent:token')"))
    why = page.locator(f"{banner} details.vitrine-why")
    why.locator("summary").click()
    why.get_by_role("button", name="Turn off personalization").click()
    assert wait_until(lambda: page.evaluate(
        "() => !Object.keys(localStorage).some(k => k.startsWith('vitrine:demo-consent:'))"))
    assert page.evaluate("() => JSON.parse(localStorage.getItem('shop-consent'))") == {
        "personalization": False, "analytics": False}
    page.reload()
    expect(page.locator(f"{banner}[data-vitrine-filled]")).to_have_count(1)
    page.wait_for_timeout(800)
    assert not page.evaluate("() => Object.keys(localStorage).some(k => k.startsWith('vitrine:demo-consent:'))")
    assert [c for c in context.cookies() if c["name"] == "vitrine_demo-consent"] == []
    problems.assert_none()
