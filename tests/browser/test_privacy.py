"""The visitor's own data in Chromium: the demo shop's privacy page, whose "Download my data"
and "Forget me" are the snippet of docs/privacy.md over vitrine('me') and vitrine('forget')."""

from __future__ import annotations

import json
from pathlib import Path

from playwright.sync_api import expect

from .conftest import wait_until
from .test_events import close_welcome_popup

STATUS = "[data-vitrine-privacy-status]"
KEPT_IN_THE_BROWSER = """() => Object.keys(localStorage).filter(k => k.startsWith('vitrine:demo:'))"""


def rows_naming(server, text: str) -> list[tuple[str, str]]:
    """(table, column) of every column of every table of the server's database holding `text`."""
    found = []
    for (table,) in server.query("SELECT name FROM sqlite_master WHERE type = 'table'"):
        for column in server.query(f'PRAGMA table_info("{table}")'):
            name = column["name"]
            if server.query(f'SELECT 1 FROM "{table}" WHERE instr(CAST("{name}" AS TEXT), ?) LIMIT 1', text):
                found.append((table, name))
    return found


def counts(server) -> tuple[int, int]:
    """Events and visitors in the server's database."""
    return tuple(server.query("SELECT (SELECT count(*) FROM events), (SELECT count(*) FROM visitors)")[0])


def test_download_my_data_then_forget_me_leaves_nothing_on_the_server_or_in_the_browser(
    vitrine_server, context, watch,
) -> None:
    [(item_id,)] = vitrine_server.query("SELECT item_id FROM items WHERE shop = 'demo' ORDER BY item_id LIMIT 1")
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/product/{item_id}")
    close_welcome_popup(page)  # which sends the events queued so far
    page.locator('[data-vitrine-slot="product-similar"]').scroll_into_view_if_needed()
    page.wait_for_timeout(1300)  # a panel's impression: half of it in view for a second
    visitor = vitrine_server.visitor_id(page)
    assert vitrine_server.wait_for_events(visitor, "close_promotion")
    impressions = len(vitrine_server.events(visitor, "view_promotion"))
    page.get_by_role("link", name="Privacy: your data").click()
    # The privacy page's own banner impression is stored: nothing of this visitor is on its way.
    assert wait_until(lambda: len(vitrine_server.events(visitor, "view_promotion")) > impressions)
    assert ("visitors", "visitor_id") in rows_naming(vitrine_server, visitor)
    assert page.evaluate(KEPT_IN_THE_BROWSER) and any(c["name"] == "vitrine_demo" for c in context.cookies())

    with page.expect_download() as downloading:
        page.get_by_role("button", name="Download my data").click()
    data = json.loads(Path(downloading.value.path()).read_text())
    assert data["visitor_id"] == visitor and data["profile"]["page_views"] == 2
    assert {"page_view", "view_item_list", "view_promotion", "close_promotion"} <= {e["type"] for e in data["events"]}
    assert data["state"]["closed_campaigns"] == ["welcome"]
    expect(page.locator(STATUS)).to_contain_text("Your data is downloaded")

    # An event still queued when the visitor asks to be forgotten is never sent.
    page.evaluate("() => vitrine('event', 'select_promotion', {promotion_id: 'privacy', creative_slot: 'footer'})")
    page.get_by_role("button", name="Forget me").click()
    expect(page.locator(STATUS)).to_contain_text("is deleted")
    assert rows_naming(vitrine_server, visitor) == []
    assert page.evaluate(KEPT_IN_THE_BROWSER) == []
    assert [c for c in context.cookies() if c["name"].startswith("vitrine")] == []
    stored = counts(vitrine_server)

    page.evaluate("() => vitrine('flush')")  # as leaving the page would
    page.wait_for_timeout(2000)
    assert counts(vitrine_server) == stored  # no new visitor either
    assert rows_naming(vitrine_server, visitor) == []
    assert page.evaluate("() => vitrine('me')") is None
    page.get_by_role("button", name="Download my data").click()
    expect(page.locator(STATUS)).to_have_text("We hold no personalization data about this browser.")
    problems.assert_none()
