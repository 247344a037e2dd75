"""Personalized search in Chromium on the demo shop: the results slot, and suggestions under
the header box as the visitor types."""

from __future__ import annotations

import json
import re
import urllib.request

from playwright.sync_api import Page, expect

from .conftest import wait_until
from .test_events import close_welcome_popup

UK = {"X-Forwarded-For": "81.2.69.160"}
RESULTS = '[data-vitrine-slot="search-results"] section.vitrine-search li[data-item-id]'


def results(page: Page) -> list[str]:
    """The item ids of the search slot's results, once Vitrine has filled it."""
    expect(page.locator('[data-vitrine-slot="search-results"][data-vitrine-filled]')).to_have_count(1)
    items = page.locator(RESULTS)
    expect(items.first).to_be_visible()
    return [items.nth(i).get_attribute("data-item-id") for i in range(items.count())]


def categories(server, item_ids: list[str]) -> list[str]:
    marks = ",".join("?" * len(item_ids))
    rows = server.query(f"SELECT item_id, category FROM items WHERE shop = 'demo' AND item_id IN ({marks})", *item_ids)
    category = {r["item_id"]: r["category"] for r in rows}
    return [category[i] for i in item_ids]


def christmas_decorations(server, n: int) -> list[str]:
    """Best-selling Christmas items that are not bags: what the visitor views before searching."""
    rows = server.query(
        "SELECT i.item_id FROM items i JOIN events e ON e.item_id = i.item_id AND e.shop = i.shop "
        "WHERE i.shop = 'demo' AND i.category = 'Christmas' AND lower(i.title) NOT LIKE '%bag%' "
        "AND e.type = 'purchase' GROUP BY i.item_id ORDER BY count(*) DESC LIMIT ?", n)
    return [r["item_id"] for r in rows]


def plain_text_ranking(server, query: str) -> list[str]:
    with urllib.request.urlopen(f"{server.url}/v1/fragments/search?shop=demo&q={query}&_context=1") as response:
        debug = json.load(response)["search"]
    assert debug["ranking"] == "text"
    return [r["item_id"] for r in debug["results"]]


def test_bag_for_a_new_visitor_then_after_viewing_christmas_items(vitrine_server, new_context, watch, screenshot) -> None:
    page = new_context(extra_http_headers=UK).new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/search?q=bag")
    close_welcome_popup(page)
    before = results(page)
    screenshot(page, "search-bag-new-visitor")
    assert before == plain_text_ranking(vitrine_server, "bag")[: len(before)]
    assert "Christmas" not in categories(vitrine_server, before[:8])
    visitor = vitrine_server.visitor_id(page)
    searches = vitrine_server.wait_for_events(visitor, "search")
    assert [json.loads(s["props"])["search_term"] for s in searches] == ["bag"]

    for item in christmas_decorations(vitrine_server, 4):
        page.goto(f"{vitrine_server.url}/demo/product/{item}")
        expect(page.locator("h1")).to_be_visible()
    page.goto(f"{vitrine_server.url}/demo/search?q=bag")
    after = results(page)
    screenshot(page, "search-bag-after-christmas")
    assert categories(vitrine_server, after[:6]) == ["Christmas"] * 6, categories(vitrine_server, after[:6])
    titles = page.locator(f"{RESULTS} .vitrine-title").all_inner_texts()
    assert {"Jumbo Bag 50's Christmas", "Jumbo Bag Vintage Christmas"} <= set(titles[:6]), titles[:6]

    # A click on a result is a select_item from the search list: it feeds the visitor's profile.
    target = after[0]
    page.locator(f'{RESULTS}[data-item-id="{target}"] a').click()
    expect(page).to_have_url(f"{vitrine_server.url}/demo/product/{target}")
    clicks = wait_until(lambda: [c for c in vitrine_server.events(visitor, "select_item") if c["item_id"] == target], 6)
    assert [c["campaign"] for c in clicks] == ["search-results"]
    problems.assert_none()


def test_zero_results_page_offers_a_spelling_and_trending_items(vitrine_server, new_context, watch, screenshot) -> None:
    page = new_context(extra_http_headers=UK).new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/search?q=lantrnn%20chrsitmsa")
    close_welcome_popup(page)
    slot = page.locator('[data-vitrine-slot="search-results"] section.vitrine-search')
    expect(slot.locator(".vitrine-empty")).to_be_visible()
    screenshot(page, "search-zero-results")
    link = slot.locator(".vitrine-did-you-mean a")
    expect(link).to_have_text("lantern christmas")
    expect(slot.locator("li[data-item-id]")).to_have_count(4)  # trending
    link.click()
    expect(page).to_have_url(re.compile(r"/demo/search\?q=lantern\+christmas$"))
    assert results(page)
    problems.assert_none()


def test_suggestions_appear_under_the_header_box_as_you_type(vitrine_server, new_context, watch, screenshot) -> None:
    page = new_context(extra_http_headers=UK).new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    close_welcome_popup(page)
    box = page.locator("form.search .search-suggestions")
    page.locator("form.search input[name=q]").click()
    expect(box).to_be_visible()  # an empty box: popular searches (or the largest categories)
    expect(box.locator("[data-suggestion]").first).to_be_visible()

    page.keyboard.type("chri", delay=60)
    expect(box.locator('[data-suggestion="christmas"]')).to_be_visible()
    products = box.locator("li[data-item-id]")
    expect(products.first).to_be_visible()
    assert 1 <= products.count() <= 4
    screenshot(page, "search-suggestions")
    # The suggestions sit under the box, over the page, without moving it.
    input_box, list_box = page.locator("form.search input").bounding_box(), box.bounding_box()
    assert list_box["y"] >= input_box["y"] + input_box["height"] and list_box["x"] <= input_box["x"] + 1

    page.keyboard.press("Escape")
    expect(box).to_be_hidden()
    page.keyboard.type("s", delay=60)  # typing on opens them again
    expect(box.locator('[data-suggestion="christmas"]')).to_be_visible()
    page.keyboard.press("ArrowDown")
    expect(box.locator("a").first).to_be_focused()
    page.keyboard.press("Enter")
    expect(page).to_have_url(re.compile(r"/demo/search\?q=christmas$"))
    assert set(categories(vitrine_server, results(page)[:4])) == {"Christmas"}
    problems.assert_none()
