"""The demo shop's menu reordered for a visitor, and its category page sorted by Vitrine, in Chromium."""

from __future__ import annotations

import json
import urllib.request

from playwright.sync_api import Page, expect

from .test_events import close_welcome_popup
from .test_recommendations import UK, christmas_items

SHOP_ORDER = ["bags", "candles-and-lights", "cards-and-wrap", "christmas", "garden", "home-decor", "kids",
              "kitchen", "gifts"]
# Taken at DOMContentLoaded, before the page call can answer: the menu as the shop served it.
RECORD_MENU_AT_LOAD = """
document.addEventListener("DOMContentLoaded", () => {
  const nav = document.querySelector("[data-vitrine-nav]");
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
  window.menuAtLoad = {
    box: box(nav),
    order: [...nav.querySelectorAll("[data-category]")].map((a) => a.dataset.category),
    widths: Object.fromEntries([...nav.querySelectorAll("[data-category]")].map((a) => [a.dataset.category, box(a)[2]])),
  };
});
"""
MENU_NOW = """() => {
  const nav = document.querySelector("[data-vitrine-nav]");
  const box = (el) => { const r = el.getBoundingClientRect(); return [r.x, r.y, r.width, r.height]; };
  return {
    box: box(nav),
    order: [...nav.querySelectorAll("[data-category]")].map((a) => a.dataset.category),
    widths: Object.fromEntries([...nav.querySelectorAll("[data-category]")].map((a) => [a.dataset.category, box(a)[2]])),
  };
}"""


def menu_order(page: Page) -> list[str]:
    return page.locator("[data-vitrine-nav] [data-category]").evaluate_all("els => els.map(e => e.dataset.category)")


def test_menu_puts_christmas_first_after_christmas_views_in_place(vitrine_server, new_context, watch, screenshot) -> None:
    context = new_context(extra_http_headers=UK)
    context.add_init_script(RECORD_MENU_AT_LOAD)
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/")
    close_welcome_popup(page)
    page.wait_for_load_state("networkidle")
    assert menu_order(page) == SHOP_ORDER  # a new visitor: the shop's own order
    screenshot(page, "nav-before")

    for item in christmas_items(vitrine_server, 4):
        page.goto(f"{vitrine_server.url}/demo/product/{item}")
        expect(page.locator("h1")).to_be_visible()
    page.goto(f"{vitrine_server.url}/demo/")
    first = page.locator("[data-vitrine-nav] [data-category]").first
    expect(first).to_have_attribute("data-category", "christmas")
    screenshot(page, "nav-after")

    at_load, now = page.evaluate("window.menuAtLoad"), page.evaluate(MENU_NOW)
    # The page arrived in the shop's order and was reordered in place: the same entries,
    # each its own size, in a menu that did not move or change size.
    assert at_load["order"] == SHOP_ORDER
    assert sorted(now["order"]) == sorted(SHOP_ORDER) and now["order"][-1] == "gifts"  # pinned in demo.toml
    assert now["box"] == at_load["box"]
    assert now["widths"] == at_load["widths"]
    expect(page.locator("[data-vitrine-nav]")).to_be_visible()
    # The entries are still the shop's links, and they work.
    first.click()
    expect(page).to_have_url(f"{vitrine_server.url}/demo/category/christmas")
    problems.assert_none()


def test_category_page_sorted_by_vitrine(vitrine_server, new_context, watch, screenshot) -> None:
    page = new_context(extra_http_headers=UK).new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/category/kitchen")
    close_welcome_popup(page)
    page.locator("[data-sort-control] a", has_text="Bestsellers").click()
    expect(page).to_have_url(f"{vitrine_server.url}/demo/category/kitchen?sort=bestsellers")

    grid = page.locator('[data-vitrine-slot="category-grid"] section.vitrine-category')
    expect(grid).to_be_visible()
    url = f"{vitrine_server.url}/v1/fragments/category?shop=demo&category=kitchen&sort=bestsellers&format=json"
    with urllib.request.urlopen(url, timeout=5) as response:
        expected = json.load(response)
    ids = grid.locator("li[data-item-id]").evaluate_all("els => els.map(e => e.dataset.itemId)")
    assert ids == expected["items"] and len(ids) == 24
    screenshot(page, "category-bestsellers")

    grid.locator("a[rel=next]").click()
    expect(page).to_have_url(f"{vitrine_server.url}/demo/category/kitchen?sort=bestsellers&page=2")
    expect(grid.locator("li[data-item-id]").first).to_have_attribute("data-item-id", expected_page_2(vitrine_server))
    problems.assert_none()


def expected_page_2(server) -> str:
    url = f"{server.url}/v1/fragments/category?shop=demo&category=kitchen&sort=bestsellers&format=json&page=2"
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)["items"][0]
