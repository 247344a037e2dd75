"""Recommendation panels in Chromium on the demo shop, with the model `vitrine demo` trained."""

from __future__ import annotations

from collections import Counter

from playwright.sync_api import Page, expect

from .conftest import wait_until
from .test_events import close_welcome_popup

UK = {"X-Forwarded-For": "81.2.69.160"}


def panel(page: Page, slot: str) -> tuple[str, list[str]]:
    """The strategy that served a slot's panel and its item ids, once it is filled."""
    section = page.locator(f'[data-vitrine-slot="{slot}"] section.vitrine-recs')
    expect(section).to_be_visible()
    items = section.locator("li[data-item-id]")
    expect(items.first).to_be_visible()
    return section.get_attribute("data-vitrine-strategy"), [
        items.nth(i).get_attribute("data-item-id") for i in range(items.count())
    ]


def categories(server, item_ids: list[str]) -> Counter:
    marks = ",".join("?" * len(item_ids))
    rows = server.query(f"SELECT item_id, category FROM items WHERE shop = 'demo' AND item_id IN ({marks})", *item_ids)
    return Counter(r["category"] for r in rows)


def christmas_items(server, n: int) -> list[str]:
    rows = server.query(
        "SELECT i.item_id FROM items i JOIN events e ON e.item_id = i.item_id AND e.shop = i.shop "
        "WHERE i.shop = 'demo' AND i.category = 'Christmas' AND e.type = 'purchase' "
        "GROUP BY i.item_id ORDER BY count(*) DESC LIMIT ?", n)
    return [r["item_id"] for r in rows]


def test_top_picks_follow_what_the_visitor_views(vitrine_server, new_context, watch, screenshot) -> None:
    page = new_context(extra_http_headers=UK).new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    close_welcome_popup(page)
    # The first page of a first visit: the demo's [[slots]] show what sells.
    strategy, bestsellers = panel(page, "home-recs")
    assert strategy == "bestsellers" and len(bestsellers) == 4
    expect(page.locator('[data-vitrine-slot="home-recs"] h2')).to_have_text("Our bestsellers")
    page.reload()  # the second page: the page's own top picks, for what the model knows of them
    strategy, before = panel(page, "home-recs")
    assert strategy == "top_picks" and len(before) == 4
    expect(page.locator('[data-vitrine-slot="home-recs"] h2')).to_have_text("Top picks for you")

    viewed = christmas_items(vitrine_server, 4)
    for item in viewed:
        page.goto(f"{vitrine_server.url}/demo/product/{item}")
        expect(page.locator("h1")).to_be_visible()
    page.goto(f"{vitrine_server.url}/demo/")
    strategy, after = panel(page, "home-recs")
    screenshot(page, "top-picks-after-christmas")
    assert strategy == "top_picks" and after != before
    assert categories(vitrine_server, after)["Christmas"] >= 3, categories(vitrine_server, after)
    problems.assert_none()


def test_product_page_panels_and_a_click_on_an_item(vitrine_server, new_context, watch) -> None:
    page = new_context(extra_http_headers=UK).new_page()
    problems = watch(page)
    first, second = christmas_items(vitrine_server, 2)
    page.goto(f"{vitrine_server.url}/demo/product/{first}")
    close_welcome_popup(page)
    page.goto(f"{vitrine_server.url}/demo/product/{second}")

    strategy, similar = panel(page, "product-similar")
    assert strategy == "similar" and second not in similar
    assert categories(vitrine_server, similar)["Christmas"] >= 2
    strategy, together = panel(page, "product-together")
    assert strategy in ("bought_together", "similar") and not set(together) & set(similar)
    strategy, recent = panel(page, "product-recent")
    assert (strategy, recent) == ("recently_viewed", [first])

    visitor = vitrine_server.visitor_id(page)
    # A panel's impression counts once half of it was in view for a second: look at each.
    for slot in ("product-recent", "product-together", "product-similar"):
        page.locator(f'[data-vitrine-slot="{slot}"]').scroll_into_view_if_needed()
        page.wait_for_timeout(1300)
    target = similar[0]
    page.locator(f'[data-vitrine-slot="product-similar"] li[data-item-id="{target}"] a').click()
    expect(page).to_have_url(f"{vitrine_server.url}/demo/product/{target}")
    clicks = vitrine_server.wait_for_events(visitor, "select_item")
    assert [(c["item_id"], c["campaign"]) for c in clicks] == [(target, "product-similar")]
    lists = vitrine_server.wait_for_events(visitor, "view_item_list")
    assert {row["campaign"] for row in lists} >= {"product-similar", "product-together", "product-recent"}
    problems.assert_none()


def test_category_cart_and_trending_near_you(vitrine_server, new_context, watch) -> None:
    page = new_context(extra_http_headers=UK).new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/category/kitchen")
    close_welcome_popup(page)
    strategy, best = panel(page, "category-best")
    assert strategy == "bestsellers" and set(categories(vitrine_server, best)) == {"Kitchen"}
    expect(page.locator('[data-vitrine-slot="category-best"] h2')).to_have_text("Bestsellers in Kitchen")

    page.goto(f"{vitrine_server.url}/demo/")
    strategy, near = panel(page, "home-trending")
    assert strategy == "trending_near_you" and len(near) == 4

    item = near[0]
    page.goto(f"{vitrine_server.url}/demo/product/{item}")
    page.locator("button[data-add-to-cart]").click()
    page.goto(f"{vitrine_server.url}/demo/cart")
    strategy, picks = panel(page, "cart-recs")
    assert strategy == "top_picks" and item not in picks
    page.locator("[data-checkout]").click()
    visitor = vitrine_server.visitor_id(page)
    wait_until(lambda: vitrine_server.events(visitor, "purchase"), 6)
    page.goto(f"{vitrine_server.url}/demo/cart")
    strategy, again = panel(page, "cart-again")
    assert (strategy, again) == ("buy_again", [item])
    problems.assert_none()
