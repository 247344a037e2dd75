"""The welcome popup on the demo shop, in Chromium: shown once, accessible, and its close reaches the server."""

from __future__ import annotations

import re

from playwright.sync_api import BrowserContext, Page, expect

POPUP = '[data-vitrine-popup="welcome"]'
DIALOG = f"{POPUP} dialog"  # CSS locators pierce open shadow roots
TITLE = "Welcome to the Gift Shop!"
# Where focus is, seen through the popup's shadow root: "page:<tag>", "dialog:<text>" or "none".
FOCUS = """() => {
  const host = document.querySelector('[data-vitrine-popup]');
  const inner = host && host.shadowRoot.activeElement;
  if (inner) return host.shadowRoot.querySelector('dialog').contains(inner)
    ? 'dialog:' + (inner.getAttribute('aria-label') || inner.textContent.trim()) : 'shadow-outside-dialog';
  const active = document.activeElement;
  return !active || active === document.body ? 'none' : 'page:' + active.outerHTML.slice(0, 80);
}"""


def open_home_with_popup(page: Page, server) -> None:
    page.goto(f"{server.url}/demo/")
    expect(page.locator(DIALOG)).to_be_visible()  # after the 1 s delay trigger


def page_call(page: Page, server, url: str) -> dict:
    with page.expect_response(lambda r: r.url.startswith(f"{server.url}/v1/page")) as response:
        page.goto(url)
    return response.value.json()


def test_welcome_popup_on_first_visit_is_an_accessible_modal_dialog(vitrine_server, context: BrowserContext, watch, screenshot) -> None:
    page = context.new_page()
    problems = watch(page)
    open_home_with_popup(page, vitrine_server)
    screenshot(page, "home-popup")

    dialog = page.locator(DIALOG)
    assert dialog.evaluate("d => d.open && d.matches(':modal')"), "the popup is not a modal <dialog>"
    labelled_by = dialog.evaluate(
        "d => { const t = d.getRootNode().getElementById(d.getAttribute('aria-labelledby')); return t && t.textContent }"
    )
    assert labelled_by == TITLE
    expect(page.get_by_role("dialog", name=TITLE)).to_be_visible()
    assert page.evaluate(FOCUS).startswith("dialog:"), "focus did not move into the dialog"

    page.get_by_role("button", name="Reveal my code").click()
    # The visitor's own single-use code, issued to them as they revealed it.
    expect(page.locator(f"{POPUP} .vitrine-code")).to_have_text(re.compile(r"^WELCOME-[2-9A-HJKMNP-Z]{8}$"))
    shown = page.locator(f"{POPUP} .vitrine-code").text_content()
    assert [tuple(r) for r in vitrine_server.query("SELECT pool, code FROM coupon_issues WHERE visitor_id = ?",
                                                    vitrine_server.visitor_id(page))] == [("welcome", shown.replace("-", ""))]
    expect(page.get_by_role("button", name="Reveal my code")).to_be_hidden()
    assert page.evaluate(FOCUS) == "dialog:Start shopping"

    page.keyboard.press("Escape")
    expect(page.locator(POPUP)).to_have_count(0)
    assert page.evaluate(FOCUS) == "none"  # focus went back where it was before the popup
    screenshot(page, "home")
    problems.assert_none()


def test_closed_popup_stays_closed_for_this_visitor_and_the_server_knows(
    vitrine_server, new_context, watch
) -> None:
    context = new_context()
    page = context.new_page()
    problems = watch(page)
    first = page_call(page, vitrine_server, f"{vitrine_server.url}/demo/")
    assert [p["campaign"] for p in first["popups"]] == ["welcome", "before-you-go"]
    trigger = first["popups"][0]["trigger"]
    assert (trigger["on"], trigger["seconds"]) == ("delay", 1)
    expect(page.locator(DIALOG)).to_be_visible()
    page.keyboard.press("Escape")
    expect(page.locator(POPUP)).to_have_count(0)

    visitor = vitrine_server.visitor_id(page)
    closes = vitrine_server.wait_for_events(visitor, "close_promotion")
    assert [row["campaign"] for row in closes] == ["welcome"]
    # The server, not only this browser's localStorage, stops offering it.
    fragment = context.request.get(f"{vitrine_server.url}/v1/fragments/popup?shop=demo")
    assert fragment.ok and 'data-vitrine-campaign="welcome"' not in fragment.text()

    for url in (f"{vitrine_server.url}/demo/", f"{vitrine_server.url}/demo/cart"):
        again = page_call(page, vitrine_server, url)
        assert [p["campaign"] for p in again["popups"]] == ["before-you-go"]  # waits for exit intent
        page.wait_for_timeout(1500)  # past the 1 s trigger delay, counted from the page call
        expect(page.locator(POPUP)).to_have_count(0)
    problems.assert_none()

    # Someone else (a fresh browser) still gets the welcome.
    open_home_with_popup(new_context().new_page(), vitrine_server)


def test_tab_keeps_focus_in_the_popup_and_the_page_behind_is_inert(vitrine_server, context: BrowserContext) -> None:
    page = context.new_page()
    open_home_with_popup(page, vitrine_server)

    seen = [page.evaluate(FOCUS)]
    for key in ["Tab"] * 6 + ["Shift+Tab"] * 4:
        page.keyboard.press(key)
        seen.append(page.evaluate(FOCUS))
    # Past the last control focus leaves the document (the browser's own UI: "none"), then
    # comes back to the dialog; it never lands on the shop page behind.
    assert not [s for s in seen if not (s.startswith("dialog:") or s == "none")], seen
    assert {"dialog:Close", "dialog:Reveal my code"} <= set(seen)
    assert seen.count("none") < len(seen) / 2, seen

    assert not page.evaluate(
        "() => { const i = document.querySelector('input[name=q]'); i.focus(); return document.activeElement === i }"
    ), "the search box behind the modal popup took focus"
    hit = page.evaluate(
        "() => { const r = document.querySelector('.logo').getBoundingClientRect();"
        " return document.elementFromPoint(r.x + 5, r.y + 5).getAttribute('data-vitrine-popup') }"
    )
    assert hit == "welcome", "a click on the page behind the popup would reach the page"
