"""Events in Chromium: the shop's GA4 dataLayer pushes reach the store, and the visitor is kept without cookies."""

from __future__ import annotations

import json

from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import Page, expect

from .conftest import wait_until

POPUP = '[data-vitrine-popup="welcome"]'


def close_welcome_popup(page: Page) -> None:
    # A new visitor's welcome popup is modal: it has to go before the page can be used.
    expect(page.locator(f"{POPUP} dialog")).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator(POPUP)).to_have_count(0)


def test_view_item_add_to_cart_and_purchase_from_the_data_layer_are_stored(vitrine_server, context, watch) -> None:
    item_id, price = vitrine_server.query(
        "SELECT item_id, price FROM items WHERE shop = 'demo' AND price > 1 ORDER BY item_id LIMIT 1"
    )[0]
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/product/{item_id}")
    close_welcome_popup(page)
    page.locator("button[data-add-to-cart]").click()
    expect(page.locator(".added")).to_be_visible()

    page.goto(f"{vitrine_server.url}/demo/cart")  # leaving the page flushes the queued events
    page.locator("[data-checkout]").click()
    order_id = page.locator("[data-order-id]").inner_text()
    assert order_id.startswith("D")
    visitor = vitrine_server.visitor_id(page)

    views = vitrine_server.wait_for_events(visitor, "view_item")
    assert [(e["item_id"], e["value"], e["currency"]) for e in views] == [(item_id, price, "GBP")]
    carts = vitrine_server.wait_for_events(visitor, "add_to_cart")
    assert [(e["item_id"], e["value"]) for e in carts] == [(item_id, price)]
    purchases = vitrine_server.wait_for_events(visitor, "purchase")  # batched, ~1 s
    assert [(e["order_id"], e["value"], e["currency"]) for e in purchases] == [(order_id, price, "GBP")]
    assert [line["item_id"] for line in json.loads(purchases[0]["props"])["items"]] == [item_id]

    customer = vitrine_server.query("SELECT orders, revenue FROM visitors WHERE shop = 'demo' AND visitor_id = ?", visitor)
    assert [tuple(r) for r in customer] == [(1, price)]
    problems.assert_none()


def test_visitor_is_recognised_from_local_storage_when_cookies_are_gone(vitrine_server, context, watch) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    close_welcome_popup(page)
    visitor = vitrine_server.visitor_id(page)
    assert vitrine_server.wait_for_events(visitor, "close_promotion")

    # As a browser blocking third-party cookies would have it: none kept, none set again (a
    # beacon sent as the page goes would otherwise bring one back before the next page call).
    context.clear_cookies()

    def without_cookies(route) -> None:
        try:
            response = route.fetch()
            route.fulfill(response=response, headers={k: v for k, v in response.headers.items() if k.lower() != "set-cookie"})
        except PlaywrightError:  # a beacon of a page already left: its answer is gone, nothing to strip
            pass

    page.route(f"{vitrine_server.url}/v1/**", without_cookies)
    with page.expect_response(lambda r: r.url.startswith(f"{vitrine_server.url}/v1/page")) as answer:
        page.goto(f"{vitrine_server.url}/demo/cart")
    request_headers = answer.value.request.all_headers()
    assert "cookie" not in request_headers
    assert vitrine_server.signer.visitor_id("demo", request_headers.get("x-visitor-token")) == visitor
    body = answer.value.json()
    assert vitrine_server.signer.visitor_id("demo", body["token"]) == visitor
    # The server itself remembers the popup this visitor closed (exit intent is still to come).
    assert [p["campaign"] for p in body["popups"]] == ["before-you-go"]
    assert body["visitor"]["visits"] == 1 and body["visitor"]["new_visit"] is False

    rows = wait_until(  # page views are written behind the answer
        lambda: [r for r in vitrine_server.query(
            "SELECT visitor_id, visits, page_views FROM visitors WHERE visitor_id = ?", visitor) if r[2] == 2]
    )
    assert [tuple(r) for r in rows] == [(visitor, 1, 2)]
    problems.assert_none()
