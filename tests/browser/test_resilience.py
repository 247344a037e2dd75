"""A shop page must keep working when Vitrine is down or slow: default content, no errors.

The shop here is another origin: a small HTTP server of the test's own serving a host page
and a copy of the embed script, and passing `/slow/v1/...` on to the real Vitrine server
two seconds late.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
from playwright.sync_api import Page, expect

from .conftest import ROOT, free_port

SCRIPT = ROOT / "static" / "vitrine.js"
PROXY_DELAY_S = 2.0
SLOT = '[data-vitrine-slot="top-banner"]'
DEFAULT_TEXT = "Our own default banner"
# Hop-by-hop headers a proxy must not pass on; the body is re-sent whole with its own length.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "content-length"}


def host_page(src: str, api: str | None, timeout: str | None) -> bytes:
    attrs = f' data-api="{escape(api)}"' if api else ""
    attrs += f' data-timeout="{escape(timeout)}"' if timeout else ""
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Another shop</title>
<script>window.dataLayer = window.dataLayer || [];</script>
<script async src="{escape(src)}" data-shop="demo"{attrs}></script>
</head><body data-vitrine-page="home">
<div data-vitrine-slot="top-banner" data-widget="banner" data-placement="top"><p class="mine">{DEFAULT_TEXT}</p></div>
<main><h1>Another shop</h1></main>
</body></html>""".encode()


@dataclass
class HostShop:
    url: str
    vitrine_url: str
    answered: list[float] = field(default_factory=list)  # when the slow proxy finished a page call

    def page_url(self, src: str, api: str | None = None, timeout: str | None = None) -> str:
        query = {"src": src, **({"api": api} if api else {}), **({"timeout": timeout} if timeout else {})}
        return f"{self.url}/page?{urlencode(query)}"


@pytest.fixture(scope="module")
def host_shop(vitrine_server) -> Iterator[HostShop]:
    port = free_port()
    shop = HostShop(url=f"http://127.0.0.1:{port}", vitrine_url=vitrine_server.url)
    target = urlsplit(vitrine_server.url)

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path.startswith("/slow/"):
                return self.proxy()
            path, _, query = self.path.partition("?")
            if path == "/page":
                params = {k: v[0] for k, v in parse_qs(query).items()}
                self.reply(200, "text/html; charset=utf-8", host_page(params["src"], params.get("api"), params.get("timeout")))
            elif path == "/static/vitrine.js":
                self.reply(200, "text/javascript; charset=utf-8", SCRIPT.read_bytes())
            else:
                self.reply(404, "text/plain", b"not found")

        def do_POST(self) -> None:
            if self.path.startswith("/slow/"):
                return self.proxy()
            self.reply(404, "text/plain", b"not found")

        def proxy(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            time.sleep(PROXY_DELAY_S)
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
            try:
                # Host stays this server's, so Vitrine sees the page's own origin calling it.
                conn.request(self.command, self.path.removeprefix("/slow"), body or None, dict(self.headers.items()))
                upstream = conn.getresponse()
                payload = upstream.read()
                self.send_response(upstream.status)
                for name, value in upstream.getheaders():
                    if name.lower() not in HOP_HEADERS:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the browser gave up waiting and closed the connection: that is the point
            finally:
                conn.close()
                if self.path.startswith("/slow/v1/page"):
                    shop.answered.append(time.monotonic())

        def reply(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield shop
    finally:
        server.shutdown()
        server.server_close()


def slot_state(page: Page) -> dict:
    return page.locator(SLOT).evaluate(
        """el => ({
          shadow: !!el.shadowRoot,
          filled: el.hasAttribute('data-vitrine-filled'),
          defaultShown: !!el.querySelector('.mine') && el.querySelector('.mine').getClientRects().length > 0,
        })"""
    )


KEPT_DEFAULT = {"shadow": False, "filled": False, "defaultShown": True}


def test_script_that_cannot_load_leaves_the_page_alone(host_shop: HostShop, context, watch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    page = context.new_page()
    problems = watch(page)
    with page.expect_event("requestfailed", lambda r: r.url.endswith("/v1/vitrine.js")):
        page.goto(host_shop.page_url(f"{dead}/v1/vitrine.js"))
    page.wait_for_load_state("load")
    expect(page.get_by_text(DEFAULT_TEXT)).to_be_visible()
    assert slot_state(page) == KEPT_DEFAULT
    assert page.evaluate("() => typeof window.vitrine") == "undefined"
    problems.assert_none()


def test_api_that_is_down_keeps_default_content_and_throws_nothing(host_shop: HostShop, context, watch) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    page = context.new_page()
    problems = watch(page)
    with page.expect_event("requestfailed", lambda r: r.url.startswith(f"{dead}/v1/page")):
        page.goto(host_shop.page_url(f"{host_shop.url}/static/vitrine.js", api=dead))
    assert page.evaluate("() => window.vitrine && window.vitrine.loaded") == 1  # the script did run
    # The shop keeps reporting to GA4 as usual; the script queues and beacons to nowhere, quietly.
    page.evaluate(
        """() => { dataLayer.push({event: 'add_to_cart', ecommerce: {currency: 'GBP', value: 2,
                     items: [{item_id: '85123A', price: 2, quantity: 1}]}});
                   vitrine('event', 'search', {search_term: 'lantern'}); vitrine('flush'); }"""
    )
    page.wait_for_timeout(300)
    expect(page.get_by_text(DEFAULT_TEXT)).to_be_visible()
    assert slot_state(page) == KEPT_DEFAULT
    problems.assert_none()


def test_api_slower_than_the_budget_is_abandoned(host_shop: HostShop, context, watch) -> None:
    page = context.new_page()
    problems = watch(page)
    host_shop.answered.clear()
    started = time.monotonic()
    with page.expect_event("requestfailed", lambda r: "/slow/v1/page" in r.url) as failed:
        page.goto(host_shop.page_url(f"{host_shop.url}/static/vitrine.js", api=f"{host_shop.url}/slow", timeout="300"))
    assert time.monotonic() - started < PROXY_DELAY_S, "the page call was not cut off at its 300 ms budget"
    assert "ABORTED" in (failed.value.failure or "")
    # Let the late answer arrive anyway: it must not fill the slot after the budget.
    deadline = time.monotonic() + PROXY_DELAY_S + 3
    while not host_shop.answered and time.monotonic() < deadline:
        page.wait_for_timeout(100)
    assert host_shop.answered, "the proxy never finished the page call"
    page.wait_for_timeout(300)
    expect(page.get_by_text(DEFAULT_TEXT)).to_be_visible()
    assert slot_state(page) == KEPT_DEFAULT
    problems.assert_none()


def test_api_within_the_budget_fills_the_slot_through_the_same_slow_path(host_shop: HostShop, context, watch) -> None:
    # The control for the test above: the same delay with a longer budget does fill the slot.
    page = context.new_page()
    problems = watch(page)
    page.goto(host_shop.page_url(f"{host_shop.url}/static/vitrine.js", api=f"{host_shop.url}/slow", timeout="5000"))
    expect(page.locator(f"{SLOT} .vitrine-banner")).to_be_visible(timeout=PROXY_DELAY_S * 1000 + 4000)
    assert slot_state(page) == {"shadow": True, "filled": True, "defaultShown": False}
    problems.assert_none()
