"""What an attacker's link does in a real browser: nothing. The payloads would open a dialog
and set a flag if they ran; neither may happen on the Vitrine origin or on a shop page."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from playwright.sync_api import Page

# No quotes or backslashes: JSON would escape them and spoil the payload instead of the
# escaping under test doing its job.
PAYLOAD = "zz---><img src=x onerror=window.__pwned=1;alert(document.domain)>"


def visit(page: Page, url: str) -> list[str]:
    dialogs: list[str] = []

    def on_dialog(dialog) -> None:
        dialogs.append(dialog.message)
        dialog.dismiss()

    page.on("dialog", on_dialog)
    response = page.goto(url)
    assert response is not None and response.status == 200, url
    page.wait_for_timeout(300)
    return dialogs


@pytest.mark.parametrize("kind, params", [
    ("search", {"q": PAYLOAD}),
    ("search", {"q": "a--!><svg onload=window.__pwned=1;alert(1)>"}),
    ("nav", {"categories": f"gifts,{PAYLOAD}"}),
    ("banner", {"placement": "top", "device": PAYLOAD, "source": PAYLOAD, "country": "gb"}),
    ("recommendations", {"strategy": "trending", "title": PAYLOAD}),
])
def test_debug_fragments_do_not_run_request_text(vitrine_server, context, kind, params) -> None:
    page = context.new_page()
    query = urlencode({"shop": "demo", "_debug": "1", **params})
    dialogs = visit(page, f"{vitrine_server.url}/v1/fragments/{kind}?{query}")
    assert dialogs == []
    assert page.evaluate("() => window.__pwned") is None
    assert page.locator("img[src='x']").count() == 0
    assert "vitrine debug" in page.content()


def test_a_search_on_the_shop_page_does_not_run_the_query(vitrine_server, context) -> None:
    page = context.new_page()
    dialogs = visit(page, f"{vitrine_server.url}/demo/search?" + urlencode({"q": PAYLOAD}))
    page.wait_for_timeout(1200)  # the search slot's fragment has arrived by now
    assert dialogs == []
    assert page.evaluate("() => window.__pwned") is None


def test_the_server_log_holds_no_query_string_and_no_address(vitrine_server, context) -> None:
    page = context.new_page()
    visit(page, f"{vitrine_server.url}/demo/search?" + urlencode({"q": "my very private search"}))
    page.wait_for_timeout(1200)
    log = (vitrine_server.data_dir / "server.log").read_text()
    assert "GET /demo/search 200" in log  # Vitrine's own access line: method, path, status
    assert "POST /v1/page 200" in log
    assert "private" not in log
    assert "127.0.0.1:" not in log.replace(vitrine_server.url, "")  # uvicorn's "ADDRESS:PORT - GET ..." lines
