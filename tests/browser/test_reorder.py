"""The B2B demo in Chromium: logged in as the trade customer Bea, the business welcome opens,
her account page lists her usual items with their last quantities, one click puts that many
of an item in the demo's cart, and the product cards show the wholesale prices and tiers."""

from __future__ import annotations

from playwright.sync_api import expect

REORDER = '[data-vitrine-slot="account-reorder"]'


def test_a_trade_customer_reorders_her_usual_items_in_one_click(vitrine_server, context, watch) -> None:
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/account?as=90001")
    expect(page.locator("[data-demo-logged-in]")).to_have_attribute("data-demo-logged-in", "90001")
    welcome = page.locator('[data-vitrine-popup="trade-welcome"] dialog')
    expect(welcome).to_be_visible()
    expect(welcome).to_contain_text("Welcome, trade buyer!")
    page.keyboard.press("Escape")

    slot = page.locator(f"{REORDER}[data-vitrine-filled]")
    expect(slot).to_have_count(1)
    lines = page.locator(f"{REORDER} .vitrine-reorder li")
    # Her three orders: the cake cases in all three (36 the last time), the bird ornaments in two.
    expect(lines).to_have_count(5)
    expect(lines.nth(0)).to_have_attribute("data-item-id", "21212")
    expect(lines.nth(0)).to_contain_text("Last time: 36 × £0.40")
    expect(lines.nth(1)).to_have_attribute("data-item-id", "84879")
    button = lines.nth(0).get_by_role("link", name="Add 36 to cart")
    expect(button).to_have_attribute("href", f"{vitrine_server.url}/demo/cart?add=21212&qty=36")
    button.click()
    page.wait_for_url(f"{vitrine_server.url}/demo/cart")  # the query gone: a reload adds nothing more
    expect(page.locator("[data-cart-lines] li[data-item-id='21212']")).to_contain_text("36 × Pack of 72 Retrospot Cake Cases")
    expect(page.locator("[data-cart-count]").first).to_have_text("36")

    page.goto(f"{vitrine_server.url}/demo/search?q=hanging+heart")
    card = page.locator('[data-vitrine-filled] .vitrine-cards li[data-item-id="85123A"]').first  # in the fragment
    expect(card.locator("[data-vitrine-group-price]")).to_contain_text("£2.50")
    expect(card.locator("[data-vitrine-tiers]")).to_have_text("from 12: £2.30 · from 64: £2.10")
    problems.assert_none()

