"""The dashboard in Chromium: a `vitrine serve` whose store holds a simulated month of traffic,
rolled up; sign in, read the overview and experiments pages at desktop and phone width (and
save screenshots when VITRINE_SCREENSHOTS is set)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Page, expect

from server.admin.auth import hash_password
from server.demo.simulate import World, simulate
from server.shops import parse_shop_config
from server.measure.attribution import Window
from server.models import CatalogItem, utcnow
from server.store import open_store

from servers import demo_experiments

from .conftest import running, server_env, with_demo_shop

EMAIL, PASSWORD = "ann@shop.example", "correct horse battery"
EXPERIMENT = demo_experiments()  # the demo's A/B test on its hero
PHONE = {"width": 390, "height": 844}


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    data_dir = with_demo_shop(tmp_path_factory.mktemp("dashboard"))
    config = data_dir / "shops" / "demo.toml"
    config.write_text("holdout = 0.05\n" + config.read_text() + EXPERIMENT)
    store = open_store(f"sqlite:///{data_dir / 'vitrine.db'}")
    try:
        store.migrate()
        items = [CatalogItem(f"i{n}", f"Item {n}", category="Gifts", price=2.5 + n, currency="GBP") for n in range(20)]
        store.upsert_items("demo", items)
        simulate(store, parse_shop_config("demo", config), items, World(days=30, visitors_per_day=25))
        store.roll_up(lambda shop: Window(), utcnow(), lag_s=0)
        store.save_admin_user(EMAIL, hash_password(PASSWORD), "demo", utcnow())
    finally:
        store.close()
    env = server_env(VITRINE_SECRET_KEYS="browser-test-key")
    with running("serve", data_dir, env, data_dir / "server.log") as serving:
        yield serving.url


def sign_in(page: Page, url: str) -> None:
    page.goto(f"{url}/admin/demo/experiments")
    expect(page).to_have_url(re.compile(r"/admin/login\?next="))
    page.get_by_label("Email").fill(EMAIL)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{url}/admin/demo/experiments")


def no_sideways_scroll(page: Page) -> None:
    width = page.evaluate("() => [document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1], f"the page is wider than the screen: {width}"


@pytest.mark.parametrize("viewport", [{"width": 1280, "height": 900}, PHONE], ids=["desktop", "phone"])
def test_the_dashboard_signs_in_and_shows_the_overview_and_experiments(dashboard, new_context, watch, screenshot,
                                                                       viewport) -> None:
    page = new_context().new_page()
    page.set_viewport_size(viewport)
    problems = watch(page)
    sign_in(page, dashboard)
    name = "desktop" if viewport["width"] > 600 else "phone"
    # Experiments: both variants side by side, the interval bar, and the hold-out.
    expect(page.get_by_role("heading", name=re.compile("^hero"))).to_be_visible()
    rows = page.locator("table.results").first.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("th")).to_have_text("control")
    expect(rows.nth(1).locator("th")).to_have_text("new-this-week")
    expect(rows.nth(1).locator("svg.interval")).to_have_count(1)
    expect(page.get_by_role("heading", name=re.compile("^Hold-out"))).to_be_visible()
    no_sideways_scroll(page)
    page.wait_for_timeout(100)
    screenshot(page, f"dashboard-experiments-{name}")
    # The overview: numbers and six charts by day, for the last 30 days.
    page.get_by_role("link", name="Overview").click()
    expect(page.get_by_role("heading", name="Overview", level=1)).to_be_visible()
    expect(page.get_by_role("note")).to_contain_text("Simulated traffic")
    visitors = page.locator(".cards div", has_text="Visitors").locator("dd")
    assert int(visitors.inner_text().replace(",", "")) > 500
    charts = page.locator("svg.chart")
    expect(charts).to_have_count(6)
    box = charts.first.bounding_box()
    assert box and box["width"] > 250 and box["height"] > 100, box
    assert box["x"] + box["width"] <= viewport["width"]
    expect(charts.first.locator("rect.bar")).to_have_count(30)
    no_sideways_scroll(page)
    screenshot(page, f"dashboard-overview-{name}")
    # The 7-day preset.
    page.get_by_role("link", name="7 days").click()
    expect(charts.first.locator("rect.bar")).to_have_count(7)
    # Signing out: the pages are gone.
    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(f"{dashboard}/admin/login")
    page.goto(f"{dashboard}/admin/demo/")
    expect(page).to_have_url(re.compile(r"/admin/login"))
    problems.assert_none()
