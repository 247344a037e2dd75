"""No layout shift when slots fill: the demo shop's cumulative layout shift (CLS) in Chromium.

Every demo page, on a desktop and on a phone, for a new visitor and for a returning one
(welcome popup closed, Christmas products viewed, back after a break: the home page's
banner for returning visitors, recently viewed items and the reordered menu appear), and
the heights the embed script reserves on a page whose defaults are too small. CLS is
summed the way Chrome reports it: every `layout-shift` entry without recent input.
"""

from __future__ import annotations

import re
import sqlite3
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Route, expect

from .conftest import ROOT
from .test_events import close_welcome_popup
from .test_recommendations import UK, christmas_items

# Google counts up to 0.1 as good: Vitrine may take at most half of a shop's allowance.
CLS_BUDGET = 0.05
# After the page call has answered: the slots fill, their images load (lazily, but
# sized), and a shift caused by any of it is reported.
SETTLE_MS = 1200
# Every request takes this long, as on a good mobile connection: locally the page call could
# answer before the first paint, when nothing can shift, which no visitor sees.
LATENCY_MS = 100
DEVICES = {
    "desktop": {"viewport": {"width": 1280, "height": 800}},
    # A phone's user agent, so Vitrine targets a phone. Not Playwright's is_mobile: Chromium
    # then reports the shifts of the first second as after input, and they would not count.
    "phone": {
        "viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "has_touch": True,
        "user_agent": "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
                      "Chrome/124.0.0.0 Mobile Safari/537.36",
    },
}
PAGES = ["home", "category", "product", "cart", "search"]
# Installed before any of the page's scripts: buffered, so shifts before it ran count too.
MEASURE_CLS = """
(() => {
  const shifts = window.__layoutShifts = [];
  const name = (node) => {
    const el = node && (node.nodeType === 1 ? node : node.parentElement);
    if (!el) return "?";
    const slot = el.closest("[data-vitrine-slot]");
    const cls = typeof el.className == "string" && el.className ? "." + el.className.split(" ")[0] : "";
    return el.tagName.toLowerCase() + cls + (slot ? " in slot " + slot.dataset.vitrineSlot : "");
  };
  const take = (entries) => entries.forEach((e) => {
    if (e.hadRecentInput) return;
    shifts.push({value: e.value, at: Math.round(e.startTime), sources: (e.sources || []).map((s) => name(s.node))});
  });
  const observer = new PerformanceObserver((list) => take(list.getEntries()));
  observer.observe({type: "layout-shift", buffered: true});
  window.__takeLayoutShifts = () => { take(observer.takeRecords()); return shifts; };
})();
"""


def page_urls(server) -> dict[str, str]:
    product = christmas_items(server, 1)[0]
    return {
        "home": "/demo/", "category": "/demo/category/christmas", "product": f"/demo/product/{product}",
        "cart": "/demo/cart", "search": "/demo/search?q=bag",
    }


def open_context(browser: Browser, device: str) -> BrowserContext:
    context = browser.new_context(extra_http_headers=UK, **DEVICES[device])
    context.set_default_timeout(8000)
    context.add_init_script(MEASURE_CLS)
    return context


def slow_network(page: Page) -> None:
    cdp = page.context.new_cdp_session(page)
    cdp.send("Network.enable")
    cdp.send("Network.emulateNetworkConditions",
             {"offline": False, "latency": LATENCY_MS, "downloadThroughput": -1, "uploadThroughput": -1})


def layout_shift(page: Page, url: str) -> tuple[float, list[dict], dict]:
    """The page's CLS once the page call has answered and the slots have filled, its shifts, the answer."""
    slow_network(page)
    with page.expect_response(lambda r: "/v1/page" in r.url and r.request.method == "POST") as answer:
        page.goto(url)
    body = answer.value.json()
    page.wait_for_load_state("load")
    page.wait_for_timeout(SETTLE_MS)
    assert page.locator("[data-vitrine-filled]").count() == len(body["fragments"]) > 0
    if body["popups"]:  # measured opened too: a <dialog> in the top layer moves nothing
        expect(page.locator("[data-vitrine-popup] dialog")).to_be_visible()
    shifts = page.evaluate("window.__takeLayoutShifts()")
    return round(sum(s["value"] for s in shifts), 4), shifts, body


def come_back_later(server, visitor_id: str) -> None:
    """Move the visitor's last page view two hours back: their next one starts a second visit."""
    time.sleep(0.3)  # page views are written 50 ms behind the answer (page_view_flush_ms)
    conn = sqlite3.connect(server.data_dir / "vitrine.db", timeout=10)
    try:
        (last_seen,) = conn.execute(
            "SELECT last_seen FROM visitors WHERE shop = 'demo' AND visitor_id = ?", (visitor_id,)
        ).fetchone()
        earlier = datetime.fromisoformat(str(last_seen)) - timedelta(hours=2)
        with conn:
            conn.execute(
                "UPDATE visitors SET last_seen = ? WHERE shop = 'demo' AND visitor_id = ?",
                (earlier.isoformat(sep=" "), visitor_id),
            )
    finally:
        conn.close()


@pytest.fixture(scope="module")
def returning_visitor(vitrine_server, browser: Browser) -> Iterator[dict[str, BrowserContext]]:
    """Per device, a context whose visitor closed the welcome popup, viewed Christmas items and came back."""
    contexts: dict[str, BrowserContext] = {}
    for device in DEVICES:
        context = contexts[device] = open_context(browser, device)
        page = context.new_page()
        page.goto(f"{vitrine_server.url}/demo/")
        close_welcome_popup(page)
        for item in christmas_items(vitrine_server, 4):
            page.goto(f"{vitrine_server.url}/demo/product/{item}")
            page.wait_for_load_state("networkidle")
        come_back_later(vitrine_server, vitrine_server.visitor_id(page))
        page.close()
    yield contexts
    for context in contexts.values():
        context.close()


@pytest.mark.parametrize("page_name", PAGES)
@pytest.mark.parametrize("visitor", ["new", "returning"])
@pytest.mark.parametrize("device", list(DEVICES))
def test_slots_fill_without_layout_shift(
    vitrine_server, browser, returning_visitor, watch, device: str, visitor: str, page_name: str
) -> None:
    context = returning_visitor[device] if visitor == "returning" else open_context(browser, device)
    page = context.new_page()
    problems = watch(page)
    try:
        cls, shifts, body = layout_shift(page, vitrine_server.url + page_urls(vitrine_server)[page_name])
        print(f"CLS {page_name} {device} {visitor}: {cls}")
        assert body["visitor"]["kind"] == visitor
        assert cls <= CLS_BUDGET, f"CLS {cls} on {page_name} ({device}, {visitor} visitor); shifts: {shifts}"
        problems.assert_none()
    finally:
        page.close()
        if visitor == "new":
            context.close()


# A shop page whose slots' defaults are much smaller than their panels: only reserved heights
# keep it still. `?sync=1` makes the script tag synchronous, so that the script runs before
# the first paint every time, as a cached `async` one does (routing a page turns the
# browser's cache off); `?snippet=1` adds the inline snippet of docs/embedding.md.
LAB_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Reserved heights</title>
{snippet}<script {mode} src="/v1/vitrine.js" data-shop="demo"></script>
</head><body data-vitrine-page="home" style="margin: 0">
<div data-vitrine-slot="lab-picks" data-widget="recommendations" data-strategy="bestsellers">
  <p style="margin: 0">Our picks</p></div>
<p style="height: 1500px; margin: 0">The shop's own page.</p>
<div data-vitrine-slot="lab-below" data-widget="recommendations" data-strategy="trending">
  <p style="margin: 0">More</p></div>
<p>The end.</p>
</body></html>"""
# The slots' heights when the page is parsed, before the page call answers.
RECORD_SLOTS_AT_LOAD = """
document.addEventListener("DOMContentLoaded", () => {
  window.slotsAtLoad = Object.fromEntries([...document.querySelectorAll("[data-vitrine-slot]")].map(
    (el) => [el.dataset.vitrineSlot, el.offsetHeight]));
});
"""
SLOTS_NOW = """() => Object.fromEntries([...document.querySelectorAll("[data-vitrine-slot]")].map(
  (el) => [el.dataset.vitrineSlot, [el.offsetHeight, getComputedStyle(el).minHeight]]))"""
STORED = """() => Object.fromEntries(["lab-picks", "lab-below"].map(
  (id) => [id, localStorage.getItem("vitrine:demo:h:" + id)]))"""
RESERVE_700 = """() => ["lab-picks", "lab-below"].forEach(
  (id) => localStorage.setItem("vitrine:demo:h:" + id, "1280:700"))"""


def inline_snippet() -> str:
    """The inline snippet as docs/embedding.md gives it, for the demo shop."""
    blocks = re.findall(r"```html\n(.*?)```", (ROOT / "docs" / "embedding.md").read_text(), re.S)
    (snippet,) = [block for block in blocks if "data-vitrine-h" in block]
    assert '"vitrine:myshop:h:"' in snippet
    return snippet.replace('"vitrine:myshop:h:"', '"vitrine:demo:h:"')


@pytest.fixture
def lab(vitrine_server, browser: Browser) -> Iterator[tuple[Page, str]]:
    """A page on a desktop and the lab page's URL (on Vitrine's origin, served by the test)."""
    context = open_context(browser, "desktop")
    context.add_init_script(RECORD_SLOTS_AT_LOAD)
    url = f"{vitrine_server.url}/lab/reserved-heights"

    def serve(route: Route) -> None:
        query = parse_qs(urlsplit(route.request.url).query)
        snippet = inline_snippet() if "snippet" in query else ""
        body = LAB_PAGE.format(mode="" if "sync" in query else "async", snippet=snippet)
        route.fulfill(body=body, content_type="text/html; charset=utf-8")

    context.route(lambda u: u.startswith(url), serve)
    try:
        yield context.new_page(), url
    finally:
        context.close()


def test_the_script_reserves_each_slots_last_height(lab, watch) -> None:
    page, url = lab
    url += "?sync=1"
    problems = watch(page)

    # First view: nothing reserved, so the panel pushes the page down, and its height is kept.
    cls, shifts, _ = layout_shift(page, url)
    assert cls > CLS_BUDGET, shifts  # what the reserve is for
    filled = {id: h for id, (h, _) in page.evaluate(SLOTS_NOW).items()}
    assert page.evaluate(STORED) == {id: f"1280:{h}" for id, h in filled.items()}
    assert filled["lab-picks"] > 250

    # Next view: the slot has its panel's height before the page call answers; nothing moves,
    # and once filled, the slot has its own height again (the script's min-height is gone).
    cls, shifts, _ = layout_shift(page, url)
    assert page.evaluate("window.slotsAtLoad") == filled
    assert cls <= CLS_BUDGET, shifts
    assert page.evaluate(SLOTS_NOW) == {id: [h, "0px"] for id, h in filled.items()}

    # A reserve taller than the panel: the slot in view keeps it for this page view (shrinking
    # would move the page), the one below the fold gets its own height; both are remembered.
    page.evaluate(RESERVE_700)
    cls, shifts, _ = layout_shift(page, url)
    assert page.evaluate("window.slotsAtLoad") == {"lab-picks": 700, "lab-below": 700}
    assert cls <= CLS_BUDGET, shifts
    assert page.evaluate(SLOTS_NOW) == {"lab-picks": [700, "700px"], "lab-below": [filled["lab-below"], "0px"]}
    assert page.evaluate(STORED) == {id: f"1280:{h}" for id, h in filled.items()}
    problems.assert_none()


def test_an_async_script_after_the_first_paint_reserves_only_with_the_inline_snippet(lab, watch) -> None:
    page, url = lab
    problems = watch(page)
    layout_shift(page, url)  # the heights are stored
    filled = {id: h for id, (h, _) in page.evaluate(SLOTS_NOW).items()}

    # The script arrives after the first paint (not cached here): a reserve would itself be a
    # shift, so it adds none, and the panel moves the page as on a first visit.
    cls, shifts, _ = layout_shift(page, url)
    assert page.evaluate("window.slotsAtLoad") != filled
    assert cls > CLS_BUDGET, shifts

    # The inline snippet reserves the heights while the page is parsed; the script releases them.
    cls, shifts, _ = layout_shift(page, url + "?snippet=1")
    assert page.evaluate("window.slotsAtLoad") == filled
    assert cls <= CLS_BUDGET, shifts
    assert page.evaluate(SLOTS_NOW) == {id: [h, "0px"] for id, h in filled.items()}
    problems.assert_none()
