"""Exposures in Chromium: an impression counts once at least half of a fragment was in view
for a second, and the events of a fragment an experiment decided name its experiment and
variant, as the page call named them."""

from __future__ import annotations

import json
import time
import urllib.request

from playwright.sync_api import expect

from servers import demo_config_for_tests

from .conftest import wait_until

EXPERIMENT = """
[[campaigns]]
id = "hero-b"
widget = "banner"
placement = "home-hero"
enabled = false
title = "The B side of the hero"
link = "/demo/category/christmas"

[[experiments]]
id = "hero"
slot = "home-hero"
[[experiments.variants]]
id = "a"
campaign = "hero-new-this-week"
[[experiments.variants]]
id = "b"
campaign = "hero-b"
"""


def use_experiment(server, on: bool) -> None:
    """The demo config with the hero experiment (or without), once the server serves it."""
    (server.data_dir / "shops" / "demo.toml").write_text(demo_config_for_tests() + (EXPERIMENT if on else ""))
    url = f"{server.url}/v1/fragments/banner?shop=demo&slot=home-hero&_context=1"

    def served() -> bool:
        with urllib.request.urlopen(url) as response:
            return ("experiment" in json.load(response)) is on

    assert wait_until(served), "the server did not take the new config"


def test_impressions_wait_for_a_second_in_view_and_name_the_variant(vitrine_server, new_context, watch) -> None:
    use_experiment(vitrine_server, True)
    try:
        context = new_context(viewport={"width": 1280, "height": 500})
        page = context.new_page()
        problems = watch(page)
        with page.expect_response(lambda r: "/v1/page" in r.url) as answer:
            page.goto(f"{vitrine_server.url}/demo/")
        fragment = answer.value.json()["fragments"]["home-hero"]
        assert fragment["experiment"] == "hero" and fragment["variant"] in ("a", "b")
        expect(page.locator('[data-vitrine-slot="home-hero"][data-vitrine-filled]')).to_have_count(1)
        visitor = vitrine_server.visitor_id(page)
        views = vitrine_server.wait_for_events(visitor, "view_promotion")
        hero = [json.loads(e["props"]) for e in views if json.loads(e["props"]).get("creative_slot") == "home-hero"]
        assert hero and hero[0]["experiment"] == "hero" and hero[0]["variant"] == fragment["variant"]
        # The trending panel is below the fold: not seen, not counted, however long the page stays.
        time.sleep(2.5)
        lists = lambda: [json.loads(e["props"])["item_list_id"] for e in vitrine_server.events(visitor, "view_item_list")]  # noqa: E731
        assert "home-trending" not in lists()
        if page.locator('[data-vitrine-popup] dialog').count():
            page.keyboard.press("Escape")  # the welcome popup, if it opened, out of the way
        page.locator('[data-vitrine-slot="home-trending"]').scroll_into_view_if_needed()
        page.wait_for_timeout(400)  # in view, but not for a second yet
        assert "home-trending" not in lists()
        assert wait_until(lambda: "home-trending" in lists(), 6.0), "the panel in view was not counted"
        # A click names the variant too.
        page.evaluate("window.scrollTo(0, 0)")
        with page.expect_navigation():
            page.locator('[data-vitrine-slot="home-hero"] a').first.click()
        clicks = vitrine_server.wait_for_events(visitor, "select_promotion")
        assert json.loads(clicks[0]["props"])["variant"] == fragment["variant"]
        problems.assert_none()
    finally:
        use_experiment(vitrine_server, False)
