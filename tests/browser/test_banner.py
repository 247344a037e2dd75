"""Slots filled from their fragments in Chromium: the top banner by country, in a shadow root."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

SLOT = '[data-vitrine-slot="top-banner"]'
BANNER = f"{SLOT} .vitrine-banner"  # CSS locators pierce open shadow roots
UK_IP = "81.2.69.160"
US_IP = "8.8.8.8"


@pytest.mark.parametrize(
    ("forwarded_for", "campaign", "title"),
    [
        (None, "international-delivery", "We deliver to your country"),  # 127.0.0.1: no country
        (UK_IP, "uk-delivery", "Free UK delivery"),
        (US_IP, "international-delivery", "We deliver to United States"),
    ],
)
def test_top_banner_is_filled_per_country_in_a_shadow_root(
    vitrine_server, new_context, watch, forwarded_for: str | None, campaign: str, title: str
) -> None:
    context = new_context()
    if forwarded_for:
        # The server's peer is 127.0.0.1, a trusted proxy, so it believes this header.
        context.set_extra_http_headers({"X-Forwarded-For": forwarded_for})
    page = context.new_page()
    problems = watch(page)
    page.goto(f"{vitrine_server.url}/demo/cart")  # no popup trigger matters here: only the slot

    banner = page.locator(BANNER)
    expect(banner).to_be_visible()
    expect(banner.locator("strong")).to_have_text(title)
    expect(banner).to_have_attribute("data-vitrine-campaign", campaign)

    slot = page.locator(SLOT)
    state = slot.evaluate(
        """el => {
          const fallback = el.querySelector(':scope > .default-banner');
          return {
            shadow: !!el.shadowRoot && !!el.shadowRoot.querySelector('.vitrine-banner'),
            filled: el.hasAttribute('data-vitrine-filled'),
            defaultInLightDom: !!fallback && fallback.textContent.includes('Gifts for every occasion'),
            defaultRendered: !!fallback && fallback.getClientRects().length > 0,
          };
        }"""
    )
    assert state == {"shadow": True, "filled": True, "defaultInLightDom": True, "defaultRendered": False}
    problems.assert_none()


def test_host_page_css_does_not_reach_the_banner(vitrine_server, context) -> None:
    page = context.new_page()
    page.goto(f"{vitrine_server.url}/demo/cart")
    banner = page.locator(BANNER)
    expect(banner).to_be_visible()

    body_font = page.evaluate("() => getComputedStyle(document.body).fontFamily")
    assert "Georgia" in body_font  # the demo shop's own serif, so the comparison below means something
    banner_style = banner.evaluate("el => { const s = getComputedStyle(el); return [s.fontFamily, s.fontSize] }")
    assert banner_style[0].startswith("system-ui") and "Georgia" not in banner_style[0], banner_style
    assert banner_style[1] == "15px"
