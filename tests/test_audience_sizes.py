"""Audience sizes counted by the store (SQLite and PostgreSQL) over a hand-made set of visitors
written through the store's own write paths, against the counts worked out by hand, and
against the request path's own evaluation of every one of those visitors."""

from __future__ import annotations

import json
import secrets
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from server.audiences import AudiencesConfig, Audiences, compile_audiences
from server.catalog.memory import ShopCatalog
from server.cli import main
from server.context import PageContext, VisitorContext
from server.device import Device
from server.geo import Geo
from server.models import CatalogItem, Event, utcnow
from server.store import open_store
from server.traffic import TrafficSource
from server.visitors.page_views import PageView


TIMEOUT_S = 30 * 60
SHOP = "shop"
ITEMS = [
    CatalogItem("tree", "Tree", category="Christmas > Trees", price=20.0),
    CatalogItem("star", "Star", category="Christmas", price=3.0),
    CatalogItem("bauble", "Bauble", category="Christmas > Baubles", price=1.5),
    CatalogItem("lantern", "Lantern", category="Candles and lights", price=3.39),
    CatalogItem("warmer", "Hand warmer", category="Gifts", price=1.85),
]
RULES = {
    "lapsed_days": 300,
    "cart_abandon_minutes": 60,
    "loyal": [{"tier": "bronze", "orders": 3}, {"tier": "gold", "orders": 5, "revenue": 900}],
    "custom": [
        {"id": "big_cart", "cart_value": {"min": 5}},
        {"id": "cart_gifts", "cart_categories": "Gifts"},
        {"id": "cart_warmer", "cart_items": ["warmer", "nothing"]},
        {"id": "cart_two", "cart_count": {"min": 2}},
        {"id": "xmas_viewers", "category_views": {"category": "christmas", "min": 3}},
        {"id": "saw_lantern", "viewed_items": "lantern"},
        {"id": "saw_candles", "viewed_categories": "Candles and lights"},
        {"id": "bag_searchers", "searches": {"contains": "BAG"}},
        {"id": "searched_tree", "searches": ["tree"]},
        {"id": "uk", "country": "gb"},
        {"id": "phones", "device": "mobile"},
        {"id": "spring_mail", "medium": "email", "campaign": "Spring"},
        {"id": "landed_sale", "landing_page": {"prefix": "/sale"}},
        {"id": "from_google", "referrer": "google.com"},
        {"id": "from_facebook", "source": "facebook"},
        {"id": "busy_visit", "visit_page_views": {"min": 2}},
        {"id": "back_after_a_week", "days_since_last_visit": {"min": 7}},
        {"id": "fresh_sign_up", "signed_up": True, "hours_since_sign_up": {"max": 48}},
        {"id": "known_a_while", "days_since_first_visit": {"min": 5}},
        {"id": "recent_buyer", "days_since_last_order": {"max": 30}},
        {"id": "spenders", "revenue": {"min": 100}, "visits": {"min": 1}, "page_views": {"max": 1000}},
        {"id": "lapsed_or_keen", "any": [{"audience": "lapsed"}, {"all": [{"orders": 0}, {"not": {"visits": 1}}]}]},
        {"id": "chrome", "browser": "Chrome"},
        {"id": "chrome_uk", "audience": ["chrome", "uk"]},
        {"id": "londoners", "city": "London"},
        {"id": "keen_on_xmas", "interest": {"category": "Christmas", "min": 0.5}},
    ],
}
NOT_SIZED = {"chrome", "chrome_uk", "londoners", "keen_on_xmas"}


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path):
    url = f"sqlite:///{tmp_path / 'store.db'}" if request.param == "sqlite" else request.getfixturevalue("postgres_url")
    store = open_store(url)
    store.migrate()
    store.upsert_items(SHOP, ITEMS)
    yield store
    store.close()


def book():
    found, problems = compile_audiences(AudiencesConfig.model_validate(RULES))
    assert not problems
    return found


def view(visitor: str, at: datetime, path: str = "/", medium: str = "direct", **kw) -> PageView:
    return PageView(SHOP, visitor, at, TIMEOUT_S, source=medium, path=path,
                    event=Event(f"pv:{secrets.token_hex(6)}", "page_view", at, props={"path": path}), **kw)


def ev(type: str, at: datetime, item: str | None = None, **kw) -> Event:
    return Event(f"e:{secrets.token_hex(8)}", type, at, item_id=item, **kw)


def line(item: str, quantity: float = 1, price: float | None = None) -> dict:
    return {"items": [{"item_id": item, "quantity": quantity, **({"price": price} if price is not None else {})}]}


def make_visitors(store, now: datetime) -> None:
    """Each visitor is written the way the server writes them: page views, then event batches."""
    day, hour = timedelta(days=1), timedelta(hours=1)
    store.record_page_views([
        view("new", now, country="GB", device_class="mobile"),
        view("back", now - 10 * day, country="FR"),
        view("back", now - timedelta(minutes=5), path="/sale/winter", medium="organic", referrer_domain="google.com"),
        view("back", now - timedelta(minutes=4), path="/sale/winter/2", medium="internal"),
        view("mailed", now, path="/spring", medium="email", source_name="newsletter", campaign="spring"),
        view("social", now, medium="social", source_name="facebook", referrer_domain="m.facebook.com"),
        view("gone", now - 2 * hour, device_class="desktop"),  # a visit that is over
        view("gone", now - 2 * hour + timedelta(minutes=5)),
    ])
    store.record_events(SHOP, "signed", [ev("sign_up", now - 3 * hour)])
    store.record_events(SHOP, "buyer", [ev("purchase", now - 20 * day, value=120.0, order_id="o1")])
    store.record_events(SHOP, "lapsed", [ev("purchase", now - 400 * day, value=10.0, order_id="l1"),
                                         ev("purchase", now - 350 * day, value=10.0, order_id="l2")])
    store.record_events(SHOP, "loyal", [ev("purchase", now - n * day, value=200.0, order_id=f"y{n}") for n in range(1, 6)])
    store.record_events(SHOP, "bronze", [ev("purchase", now - n * day, value=1.0, order_id=f"b{n}") for n in range(1, 4)])
    store.record_events(SHOP, "abandoner", [
        ev("add_to_cart", now - 2 * hour, props=line("warmer", 2, 1.85)),
        ev("add_to_cart", now - 3 * hour, "tree"),  # no price: the catalog's
    ])
    store.record_events(SHOP, "fresh_cart", [ev("add_to_cart", now - timedelta(minutes=10), "star")])
    store.record_events(SHOP, "bought_it", [ev("add_to_cart", now - 3 * hour, "tree"),
                                            ev("purchase", now - 2 * hour, value=20.0, order_id="t1")])
    store.record_events(SHOP, "changed_mind", [ev("add_to_cart", now - 3 * hour, "lantern"),
                                               ev("remove_from_cart", now - 2 * hour, "lantern")])
    store.record_events(SHOP, "browser", [
        ev("view_item", now - 3 * hour, "tree"), ev("view_item", now - 2 * hour, "star"),
        ev("view_item", now - 2 * hour, "star"), ev("view_item", now - hour, "bauble"),
        ev("view_item", now - hour, "lantern"), ev("search", now - hour, props={"search_term": " Gift Bags "}),
    ])
    store.record_events(SHOP, "two_views", [ev("view_item", now - hour, "tree"), ev("view_item", now - hour, "star"),
                                            ev("search", now - hour, props={"search_term": "tree"})])


EXPECTED = {
    # built in
    "new": {"new", "mailed", "social", "gone", "signed", "abandoner", "fresh_cart", "changed_mind", "browser",
            "two_views"},
    "returning": {"back"},
    "prospect": {"signed"},
    "first_time_customer": {"buyer", "bought_it"},
    "repeat_customer": {"lapsed", "loyal", "bronze"},
    "loyal": {"loyal", "bronze"},
    "loyal_bronze": {"bronze"},
    "loyal_gold": {"loyal"},
    "lapsed": {"lapsed"},
    "cart_abandoner": {"abandoner"},
    # the shop's own
    "big_cart": {"abandoner"},  # 2 x 1.85 + 20.00 (the catalog's price); the star alone is 3.00
    "cart_gifts": {"abandoner"},
    "cart_warmer": {"abandoner"},
    "cart_two": {"abandoner"},
    "xmas_viewers": {"browser"},  # three different Christmas items (the star twice counts once)
    "saw_lantern": {"browser"},
    "saw_candles": {"browser"},
    "bag_searchers": {"browser"},
    "searched_tree": {"two_views"},
    "uk": {"new"},
    "phones": {"new"},
    "spring_mail": {"mailed"},
    "landed_sale": {"back"},
    "from_google": {"back"},
    "from_facebook": {"social"},
    "busy_visit": {"back"},
    "back_after_a_week": {"back"},
    "fresh_sign_up": {"signed"},
    "known_a_while": {"back"},  # a visitor made by an event batch is first seen when it is written
    "recent_buyer": {"buyer", "loyal", "bronze", "bought_it"},
    "spenders": {"buyer", "loyal"},
    "lapsed_or_keen": {"lapsed", "back"},
}


def test_every_size_is_counted_by_the_store_as_worked_out_by_hand(store) -> None:
    now = utcnow()
    make_visitors(store, now)
    sizes = store.audience_sizes(SHOP, book(), now, TIMEOUT_S)
    assert sizes.visitors == 16
    assert {a: sizes.sizes[a] for a in EXPECTED} == {a: len(members) for a, members in EXPECTED.items()}
    assert {a for a, size in sizes.sizes.items() if size is None} == NOT_SIZED
    assert "browser" in sizes.not_sized["chrome"] and "during a request" in sizes.not_sized["chrome"]
    assert "chrome, which is not sized" in sizes.not_sized["chrome_uk"]
    assert "decays" in sizes.not_sized["keen_on_xmas"]


def test_each_size_is_the_number_of_visitors_the_request_path_puts_in_it(store) -> None:
    """The SQL and the request path are two spellings of one rule: for every stored visitor,
    the page's evaluation (from their row and state, as a page call reads them) agrees."""
    now = utcnow()
    make_visitors(store, now)
    audiences = book()
    sizes = store.audience_sizes(SHOP, audiences, now, TIMEOUT_S)
    catalog = ShopCatalog.build(1, ITEMS)
    counted = dict.fromkeys(audiences.ids(), 0)
    members: dict[str, set[str]] = {a: set() for a in audiences.ids()}
    for visitor_id in store.visitor_attributes(SHOP):
        profile = store.get_visitor(SHOP, visitor_id)
        ctx = VisitorContext(
            shop=SHOP, visitor_id=visitor_id, is_new_token=False, profile=profile,
            device=Device(profile.device_class or "other", "", "", False), geo=Geo(profile.country, profile.country),
            source=TrafficSource(profile.source, profile.source_name, profile.utm_campaign), page=PageContext(),
        )
        source = Audiences(OneShop(catalog), None, TIMEOUT_S).for_shop(audiences)
        for audience in source(ctx).ids:
            counted[audience] += 1
            members[audience].add(visitor_id)
    for audience, members_expected in EXPECTED.items():
        assert members[audience] == members_expected, audience
    assert {a: n for a, n in sizes.sizes.items() if n is not None} == {
        a: n for a, n in counted.items() if a not in NOT_SIZED}


class OneShop:
    """The catalog service of one shop's items (what the request path reads categories and prices from)."""

    def __init__(self, catalog: ShopCatalog) -> None:
        self.catalog = catalog

    def shop(self, shop: str) -> ShopCatalog:
        return self.catalog


def test_the_rollups_classify_a_batchs_visitors_as_the_sizes_count_them(store) -> None:
    """audience_members (the rollup job's read of a batch's visitors) puts each visitor in the
    audiences the sizes count them in, whether asked for all visitors or a few at a time."""
    from server.store.audience_sql import audience_members

    now = utcnow()
    make_visitors(store, now)
    audiences = book()
    sizes = store.audience_sizes(SHOP, audiences, now, TIMEOUT_S)
    visitor_ids = sorted(store.visitor_attributes(SHOP)) + ["never-seen"]
    with store.engine.begin() as conn:
        every = audience_members(conn, store.dialect, SHOP, audiences, now, TIMEOUT_S, visitor_ids)
        few = audience_members(conn, store.dialect, SHOP, audiences, now, TIMEOUT_S, ["browser", "abandoner", "never-seen"])
    assert "never-seen" not in every
    for audience, members in EXPECTED.items():
        assert {v for v, ids in every.items() if audience in ids} == set(members), audience
    assert {a: sum(a in ids for ids in every.values()) for a in sizes.sizes if sizes.sizes[a] is not None} == \
        {a: n for a, n in sizes.sizes.items() if n is not None}
    assert not NOT_SIZED & {a for ids in every.values() for a in ids}
    assert few == {v: every[v] for v in ("browser", "abandoner") if v in every}


def test_an_empty_shop_has_every_audience_empty(store) -> None:
    sizes = store.audience_sizes("nobody", book(), utcnow(), TIMEOUT_S)
    assert sizes.visitors == 0
    assert all(sizes.sizes[a] == 0 for a in sizes.sizes if a not in NOT_SIZED)


# -- the command ---------------------------------------------------------------------------
@pytest.fixture
def shop_dir(tmp_path: Path) -> Path:
    (tmp_path / "shops").mkdir()
    (tmp_path / "shops" / "shop.toml").write_text(
        'name = "Shop"\n[audiences]\ncart_abandon_minutes = 30\n'
        '[[audiences.custom]]\nid = "uk"\ncountry = "GB"\n'
        '[[audiences.custom]]\nid = "chrome"\nbrowser = "Chrome"\n'
    )
    return tmp_path


def run(shop_dir: Path, *args: str):
    return CliRunner().invoke(main, ["--data-dir", str(shop_dir), *args], env={"VITRINE_SECRET_KEYS": "k"},
                              catch_exceptions=False)


def test_vitrine_audiences_prints_each_size_and_why_one_is_not_sized(shop_dir: Path) -> None:
    store = open_store(f"sqlite:///{shop_dir / 'vitrine.db'}")
    store.migrate()
    now = utcnow()
    store.record_page_views([view("a", now, country="GB"), view("b", now, country="FR")])
    store.record_events(SHOP, "c", [ev("add_to_cart", now - timedelta(minutes=45), "x")])
    store.close()
    result = run(shop_dir, "audiences", "--shop", "shop")
    assert result.exit_code == 0, result.output
    lines = {line.split()[0]: line.split()[1] for line in result.output.splitlines()[1:] if line.strip()}
    assert lines["new"] == "3" and lines["uk"] == "1" and lines["cart_abandoner"] == "1" and lines["returning"] == "0"
    assert lines["chrome"] == "-" and "browser" in result.output and "3 visitors" in result.output.splitlines()[0]
    as_json = run(shop_dir, "audiences", "--shop", "shop", "--json")
    assert as_json.exit_code == 0
    sizes = json.loads(as_json.stdout)
    assert sizes["new"] == 3 and sizes["uk"] == 1 and sizes["cart_abandoner"] == 1 and sizes["chrome"] is None
    assert list(sizes)[:3] == ["new", "returning", "prospect"]


def test_vitrine_audiences_for_an_unknown_shop_is_a_one_line_error(shop_dir: Path) -> None:
    result = run(shop_dir, "audiences", "--shop", "nope")
    assert result.exit_code == 2
    assert "unknown shop 'nope'" in result.output
