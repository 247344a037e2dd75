"""Attribution rules on hand-made event sequences, the rollup job over a real store (counted
once however often it runs, on SQLite and PostgreSQL), and the report end to end: visitors
with known conversion rates per variant through the HTTP API, then `vitrine report`."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from server.cli import main
from server.audiences import AudiencesConfig, compile_audiences
from server.measure.attribution import Credit, Window, cart_credits, credits
from server.measure.experiments import EXPOSURE
from server.models import Event, utcnow
from server.store import open_store
from server.visitors.page_views import PageView

from servers import demo_experiments

from conftest import UK_IP, stored

T0 = datetime(2026, 11, 2, 12, 0, 0)


def ev(kind: str, minutes: float, **kw) -> Event:
    return Event(event_id=f"{kind}-{minutes}-{kw.get('campaign', '')}", type=kind, ts=T0 + timedelta(minutes=minutes), **kw)


def purchase(minutes: float, value: float = 20.0, order: str = "o1") -> Event:
    return ev("purchase", minutes, value=value, currency="GBP", order_id=order)


# -- attribution rules -------------------------------------------------------------------
def test_a_click_credits_orders_for_seven_days_and_a_view_only_in_its_visit() -> None:
    banner_click = ev("select_promotion", 0, campaign="xmas", props={"creative_slot": "home-hero"})
    panel_view = ev("view_item_list", 10, campaign="home-recs",
                    props={"item_list_id": "home-recs", "item_list_name": "top_picks", "experiment": "recs", "variant": "b"})
    page = ev("page_view", 20)
    # Bought 25 minutes later, in the visit of the panel view (no gap over 30 minutes).
    assert credits(purchase(45), [banner_click, panel_view, page]) == [
        Credit("campaign", "xmas", "click"), Credit("slot", "home-hero", "click"), Credit("slot", "home-recs", "view"),
        Credit("strategy", "top_picks", "view"), Credit("variant", "recs:b", "view"),
    ]
    # Bought the next day: the view was in another visit; the click still counts.
    assert credits(purchase(60 * 24), [banner_click, panel_view, page]) == [
        Credit("campaign", "xmas", "click"), Credit("slot", "home-hero", "click")]
    # Eight days on, nothing; with a 10-day click window, the click again.
    assert credits(purchase(60 * 24 * 8), [banner_click, panel_view, page]) == []
    assert credits(purchase(60 * 24 * 8), [banner_click], Window(click=timedelta(days=10))) == [
        Credit("campaign", "xmas", "click"), Credit("slot", "home-hero", "click")]


def test_a_click_outranks_a_view_and_what_came_after_counts_not() -> None:
    seen = ev("view_promotion", 0, campaign="xmas", props={"creative_slot": "top"})
    clicked = ev("select_promotion", 5, campaign="xmas", props={"creative_slot": "top"})
    later = ev("select_promotion", 50, campaign="other", props={"creative_slot": "top"})
    assert credits(purchase(10), [seen, clicked, later]) == [Credit("campaign", "xmas", "click"), Credit("slot", "top", "click")]
    # A visit is a run without gaps over the timeout: views two long gaps back are out of it.
    chain = [ev("view_promotion", 0, campaign="early", props={}), ev("page_view", 40), ev("page_view", 65)]
    assert credits(purchase(90), chain) == []
    assert credits(purchase(90), chain, Window(visit_timeout=timedelta(minutes=45))) == [Credit("campaign", "early", "view")]


def test_an_add_to_cart_is_credited_to_the_clicks_of_the_click_window_before_it() -> None:
    clicked = ev("select_promotion", 0, campaign="xmas", props={"creative_slot": "home-hero", "experiment": "hero",
                                                                 "variant": "b"})
    panel = ev("select_item", 3, campaign="home-recs", props={"item_list_id": "home-recs", "item_list_name": "top_picks"})
    seen = ev("view_promotion", 4, campaign="seen", props={"creative_slot": "top"})
    add = ev("add_to_cart", 5)
    assert cart_credits(add, [clicked, panel, seen, ev("select_promotion", 6, campaign="later", props={})]) == [
        ("campaign", "xmas"), ("slot", "home-hero"), ("slot", "home-recs"), ("strategy", "top_picks"),
        ("variant", "hero:b")]
    # A view credits no cart; eight days on the click is out of the window, unless it is wider.
    assert cart_credits(ev("add_to_cart", 10), [seen]) == []
    late = ev("add_to_cart", 60 * 24 * 8)
    assert cart_credits(late, [clicked]) == []
    assert cart_credits(late, [clicked], Window(click=timedelta(days=10))) == [
        ("campaign", "xmas"), ("slot", "home-hero"), ("variant", "hero:b")]


# -- the rollup job ------------------------------------------------------------------------
def _history(store, shop: str = "demo") -> None:
    """Two visitors: one exposed to variant b of "hero", who clicks the hero and buys twice;
    one in the control, who only looks."""
    now = (utcnow() - timedelta(days=1)).replace(hour=10, minute=0, second=0, microsecond=0)  # yesterday 10:00
    at = lambda m: now + timedelta(minutes=m)  # noqa: E731
    exposure = lambda v: Event(f"x-{v}", EXPOSURE, at(0), props={"experiment": "hero", "variant": v, "slot": "home-hero"})  # noqa: E731
    store.record_events(shop, "alice", [
        Event("pv-a1", "page_view", at(0)), exposure("b"),
        Event("vp-a1", "view_promotion", at(1), campaign="new-in", props={"creative_slot": "home-hero", "experiment": "hero", "variant": "b"}),
        Event("sp-a1", "select_promotion", at(2), campaign="new-in", props={"creative_slot": "home-hero", "experiment": "hero", "variant": "b"}),
        Event("pu-a1", "purchase", at(5), value=30.0, currency="GBP", order_id="A1"),
        Event("pu-a2", "purchase", at(65), value=10.0, currency="GBP", order_id="A2"),
    ])
    store.record_events(shop, "bob", [Event("pv-b1", "page_view", at(3)), exposure("control")])


def _windows(shop: str) -> Window:
    return Window()


def test_the_rollups_count_every_event_once_however_often_they_run(services) -> None:
    store = services.store
    _history(store)
    first = store.roll_up(_windows, utcnow(), lag_s=0)
    assert (first.events, first.orders, first.exposures) == (8, 2, 2)
    again = store.roll_up(_windows, utcnow(), lag_s=0)
    assert again.events == 0
    day = (utcnow() - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = {(r["dimension"], r["key"]): r for r in store.rollups("demo", "day", day, day + timedelta(days=1))}
    total = rows[("total", "")]
    assert (total["page_views"], total["impressions"], total["clicks"], total["orders"], total["revenue"], total["visitors"]) \
        == (2, 1, 1, 2, 40.0, 2)
    hours = store.rollups("demo", "hour", day, day + timedelta(days=1), dimension="total")
    assert [(h["start"].hour, h["orders"]) for h in hours] == [(10, 1), (11, 1)]
    assert rows[("campaign", "new-in")]["orders"] == 2 and rows[("campaign", "new-in")]["revenue"] == 40.0
    assert rows[("variant", "hero:b")]["clicks"] == 1
    totals = {r["variant"]: r for r in store.experiment_totals("demo", "hero")}
    assert totals["b"]["visitors"] == 1 and totals["b"]["conversions"] == 1 and totals["b"]["orders"] == 2
    assert totals["b"]["revenue"] == 40.0 and totals["b"]["revenue_sq"] == pytest.approx(1600.0)
    assert totals["control"]["visitors"] == 1 and totals["control"]["conversions"] == 0
    # A later order is added to what was counted, once.
    store.record_events("demo", "bob", [Event("pu-b1", "purchase", utcnow() - timedelta(minutes=5), value=5.0, order_id="B1")])
    assert store.roll_up(_windows, utcnow(), lag_s=0).events == 1
    assert store.roll_up(_windows, utcnow(), lag_s=0).events == 0
    totals = {r["variant"]: r for r in store.experiment_totals("demo", "hero")}
    assert (totals["control"]["conversions"], totals["control"]["revenue"], totals["control"]["revenue_sq"]) == (1, 5.0, 25.0)


def test_events_younger_than_the_lag_wait_for_the_next_run(services) -> None:
    store = services.store
    store.record_events("demo", "carol", [Event("pv-c1", "page_view", utcnow())])
    assert store.roll_up(_windows, utcnow(), lag_s=60).events == 0
    assert store.roll_up(_windows, utcnow() + timedelta(seconds=61), lag_s=60).events == 1


def test_two_rollups_at_once_on_postgresql_count_once(postgres_url) -> None:
    store = open_store(postgres_url)
    try:
        store.migrate()
        _history(store)
        runs = []
        threads = [threading.Thread(target=lambda: runs.append(store.roll_up(_windows, utcnow(), lag_s=0))) for _ in range(3)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r.events for r in runs) == 8
        totals = {r["variant"]: r for r in store.experiment_totals("demo", "hero")}
        assert totals["b"]["orders"] == 2 and totals["b"]["revenue"] == 40.0
    finally:
        store.close()


# -- end to end ----------------------------------------------------------------------------
EXPERIMENT = demo_experiments()  # the demo's A/B test on its hero
TRUE_RATES = {"control": 0.10, "new-this-week": 0.25}


def test_visitors_with_known_rates_through_the_api_give_a_report_that_covers_the_truth(client, settings, services) -> None:
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text("holdout = 0.1\n" + path.read_text() + EXPERIMENT)
    seen = {"control": 0, "new-this-week": 0}
    bought = dict.fromkeys(seen, 0)
    held = 0
    body = {"shop": "demo", "page": {"type": "home", "url": "http://127.0.0.1:8000/demo/"},
            "slots": [{"id": "home-hero", "widget": "banner", "attrs": {}}]}
    for n in range(500):
        client.cookies.clear()
        answer = client.post("/v1/page?shop=demo", json=body, headers={"X-Forwarded-For": UK_IP}).json()
        if answer["holdout"]:
            held += 1
            continue
        variant = answer["experiments"]["hero"]
        seen[variant] += 1
        # Exactly the true share of each variant's visitors buy: the k-th does when k * rate
        # passes a whole number.
        k, rate = seen[variant], TRUE_RATES[variant]
        if int(k * rate) > int((k - 1) * rate):
            bought[variant] += 1
            client.cookies.clear()
            r = client.post("/v1/events?shop=demo", headers={"X-Forwarded-For": UK_IP}, json={
                "shop": "demo", "token": answer["token"],
                "events": [{"event_id": f"order-{n:05d}", "type": "purchase", "transaction_id": f"T{n}", "value": 25.0}]})
            assert r.status_code == 202
    assert held > 0 and min(seen.values()) > 100
    stored(services)
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "report", "--shop", "demo", "--json",
                                       "--engine", "frequentist"], env={"VITRINE_ROLLUP_LAG_S": "0",
                                                                        "VITRINE_SECRET_KEYS": "test-key-1"})
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    (hero,) = report["experiments"]
    control, variant = hero["variants"]
    assert (control["id"], control["visitors"], control["conversions"]) == ("control", seen["control"], bought["control"])
    assert (variant["visitors"], variant["conversions"]) == (seen["new-this-week"], bought["new-this-week"])
    assert control["uplift"] is None and variant["revenue"] == 25.0 * bought["new-this-week"]
    truth = TRUE_RATES["new-this-week"] / TRUE_RATES["control"] - 1
    assert variant["uplift"]["ci_low"] < truth < variant["uplift"]["ci_high"]
    assert variant["uplift"]["ci_low"] > 0  # a real difference, found
    assert hero["srm_p_value"] > 0.001
    holdout = report["holdout"]
    assert holdout["visitors"] == held and holdout["personalized"]["visitors"] == sum(seen.values())
    # The text report says the same.
    text = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "report", "--shop", "demo", "--no-roll-up"],
                              env={"VITRINE_SECRET_KEYS": "test-key-1"})
    assert text.exit_code == 0, text.output
    assert "Experiment hero (slot home-hero):" in text.output and "Hold-out (10% of visitors" in text.output
    unknown = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "report", "--shop", "demo", "--experiment", "nope"],
                                 env={"VITRINE_SECRET_KEYS": "test-key-1"})
    assert unknown.exit_code != 0 and "has no experiment 'nope'" in unknown.output


def test_simulated_traffic_goes_through_the_real_split_and_is_labelled(settings, services) -> None:
    from server.demo.simulate import World, simulate
    from server.measure.report import build_report

    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text("holdout = 0.1\n" + path.read_text() + EXPERIMENT)
    shop = services.shops.get("demo")
    world = World(days=3, visitors_per_day=60, buy_rate=0.2)
    done = simulate(services.store, shop, services.store.list_items("demo"), world)
    assert done.visitors == 180 and done.orders > 0
    services.store.roll_up(_windows, utcnow(), lag_s=0)
    since = utcnow() - timedelta(days=5)
    days = [r for r in services.store.rollups("demo", "day", since, utcnow() + timedelta(days=1), dimension="total")]
    real = sum(r["page_views"] for r in days if r["key"] == "")
    assert real == sum(r["page_views"] for r in days if r["key"] == "simulated") > 180  # all of it simulated
    report = build_report(services.store, shop)
    (hero,) = report["experiments"]
    counted = sum(v["visitors"] for v in hero["variants"])
    assert counted + report["holdout"]["visitors"] == 180
    assert 0 < report["holdout"]["visitors"] < 60
    assert sum(v["conversions"] for v in hero["variants"]) + report["holdout"]["conversions"] <= done.orders
    # The same seed makes the same visitors: a second run adds nothing.
    assert simulate(services.store, shop, services.store.list_items("demo"), world).events == 0


def test_a_purchase_stored_before_its_buyers_exposure_still_counts(services) -> None:
    """An exposure is written behind the page call: an order sent at once can be stored first."""
    store = services.store
    at = utcnow() - timedelta(hours=1)
    store.record_events("demo", "dora", [Event("pu-d1", "purchase", at + timedelta(seconds=5), value=12.0, order_id="D1")])
    assert store.roll_up(_windows, utcnow(), lag_s=0).orders == 1  # read before the exposure is stored
    store.record_events("demo", "dora", [Event("x-dora", EXPOSURE, at, props={"experiment": "hero", "variant": "b"})])
    store.roll_up(_windows, utcnow(), lag_s=0)
    (b,) = store.experiment_totals("demo", "hero")
    assert (b["visitors"], b["conversions"], b["orders"], b["revenue"], b["revenue_sq"]) == (1, 1, 1, 12.0, 144.0)
    store.roll_up(_windows, utcnow(), lag_s=0)  # and only once
    assert store.experiment_totals("demo", "hero")[0]["orders"] == 1


# -- add to carts and audiences, on both stores ---------------------------------------------
@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request: pytest.FixtureRequest, tmp_path):
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.migrate()
    yield store
    store.close()


def _yesterday(hour: int = 10) -> datetime:
    return (utcnow() - timedelta(days=1)).replace(hour=hour, minute=0, second=0, microsecond=0)


def _sums(store, dimension: str, days: int = 12) -> dict[str, dict]:
    since = (utcnow() - timedelta(days=days)).replace(hour=0, minute=0, second=0, microsecond=0)
    return {r["key"]: r for r in store.rollup_sums("demo", "day", since, utcnow() + timedelta(days=1), [dimension])}


def test_add_to_carts_are_counted_and_credited_to_the_clicks_before_them(any_store) -> None:
    store = any_store
    start = _yesterday() - timedelta(days=9)
    at = lambda m: start + timedelta(minutes=m)  # noqa: E731
    hero = {"creative_slot": "home-hero"}
    store.record_events("demo", "cara", [
        Event("c-pv", "page_view", at(0)),
        Event("c-vp", "view_promotion", at(1), campaign="xmas", props=hero),
        Event("c-sp", "select_promotion", at(2), campaign="xmas", props=hero),
        Event("c-a1", "add_to_cart", at(5), item_id="tree"),
        Event("c-a2", "add_to_cart", at(6), item_id="star"),
        Event("c-pu", "purchase", at(10), value=25.0, order_id="C1"),
        Event("c-a3", "add_to_cart", at(60 * 24 * 8), item_id="star"),  # eight days on: out of the window
    ])
    # Saw the banner and added to the cart without a click: a cart, credited to nothing.
    store.record_events("demo", "dan", [Event("d-vp", "view_promotion", at(0), campaign="xmas", props=hero),
                                        Event("d-a1", "add_to_cart", at(1), item_id="tree")])
    assert store.roll_up(_windows, utcnow(), lag_s=0, batch=3).events == 9
    assert store.roll_up(_windows, utcnow(), lag_s=0).events == 0
    total, campaign, slot = _sums(store, "total")[""], _sums(store, "campaign"), _sums(store, "slot")
    credited = _sums(store, "credited")[""]
    assert (total["impressions"], total["clicks"], total["carts"], total["orders"]) == (2, 1, 4, 1)
    assert (campaign["xmas"]["impressions"], campaign["xmas"]["clicks"], campaign["xmas"]["carts"],
            campaign["xmas"]["orders"]) == (2, 1, 2, 1)
    assert slot["home-hero"]["carts"] == 2 and credited["carts"] == 2 and credited["orders"] == 1
    # With a ten-day click window the late cart is credited too (a shop's own window).
    store.record_events("demo", "cara", [Event("c-a4", "add_to_cart", at(60 * 24 * 8 + 1), item_id="tree")])
    store.roll_up(lambda shop: Window(click=timedelta(days=10)), utcnow(), lag_s=0)
    assert _sums(store, "campaign")["xmas"]["carts"] == 3 and _sums(store, "total")[""]["carts"] == 5


AUDIENCES = AudiencesConfig.model_validate({"custom": [{"id": "uk", "country": "gb"}, {"id": "buyers", "orders": {"min": 1}},
                                                       {"id": "chrome", "browser": "Chrome"}]})


def _view(visitor: str, at: datetime, country: str, n: int) -> PageView:
    return PageView("demo", visitor, at, 1800, country=country, event=Event(f"pv-{visitor}-{n}", "page_view", at))


def test_the_rollups_count_each_audience_by_what_its_visitors_were_in_when_read(any_store) -> None:
    store = any_store
    book, problems = compile_audiences(AUDIENCES)
    assert not problems
    audiences = lambda shop: book  # noqa: E731
    at = lambda m: _yesterday() + timedelta(minutes=m)  # noqa: E731
    store.record_page_views([_view("ann", at(0), "GB", 1), _view("ann", at(70), "GB", 2), _view("ben", at(5), "FR", 1)])
    store.record_events("demo", "ann", [Event("a-pu", "purchase", at(75), value=30.0, order_id="A1")])
    # No row: a visitor the store forgot (or simulated traffic, stored as it is) is in no audience.
    store.add_measurement_events("demo", [("nobody", Event("n-pu", "purchase", at(8), value=9.0, order_id="N1"))])
    assert store.roll_up(_windows, utcnow(), lag_s=0, audiences=audiences).events == 5
    rows = _sums(store, "audience", days=3)
    assert (rows["uk"]["page_views"], rows["uk"]["visitors"], rows["uk"]["orders"], rows["uk"]["revenue"]) == (2, 1, 1, 30.0)
    assert (rows["buyers"]["page_views"], rows["buyers"]["visitors"], rows["buyers"]["orders"]) == (2, 1, 1)
    assert "chrome" not in rows  # known only during a request: not counted, as it is not sized
    # Built in: Ann's two page views 70 minutes apart are two visits, so only Ben is new.
    assert (rows["new"]["visitors"], rows["new"]["page_views"]) == (1, 1)
    hours = {r["start"].hour: r for r in store.rollups("demo", "hour", at(0), at(120), "audience") if r["key"] == "uk"}
    assert (hours[10]["page_views"], hours[11]["page_views"], hours[11]["orders"]) == (1, 1, 1)
    # Ben buys later the same day: from then on he is a buyer. His page view is counted in
    # `buyers`, his visit of that day is not (his day's first page view was read when he was not).
    store.record_page_views([_view("ben", at(120), "FR", 2)])
    store.record_events("demo", "ben", [Event("b-pu", "purchase", at(121), value=5.0, order_id="B1")])
    store.roll_up(_windows, utcnow(), lag_s=0, audiences=audiences)
    store.roll_up(_windows, utcnow(), lag_s=0, audiences=audiences)  # and nothing twice
    rows = _sums(store, "audience", days=3)
    assert (rows["buyers"]["page_views"], rows["buyers"]["visitors"], rows["buyers"]["orders"], rows["buyers"]["revenue"]) \
        == (3, 1, 2, 35.0)
    assert (rows["uk"]["page_views"], rows["uk"]["visitors"], rows["uk"]["orders"]) == (2, 1, 1)
    # The total still counts everyone, once a day.
    total = _sums(store, "total", days=3)[""]
    assert (total["page_views"], total["orders"], total["revenue"]) == (4, 3, 44.0)
