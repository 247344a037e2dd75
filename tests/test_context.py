"""VisitorContext: visitor kind, QA overrides, client IP and scheme behind proxies, and no stored IP."""

from __future__ import annotations

import sqlite3
from datetime import datetime

import pytest
from starlette.requests import Request

from server.context import PageContext, VisitorContext, apply_overrides
from server.device import Device
from server.geo import Geo
from server.identity import Identity
from server.models import VisitorProfile
from server.traffic import TrafficSource

from conftest import UK_IP, US_IP, stored

T0 = datetime(2024, 11, 1, 12, 0)
DESKTOP_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"


def make_ctx(visits: int = 1, orders: int = 0, **kw) -> VisitorContext:
    profile = VisitorProfile(visitor_id="v1", first_seen=T0, last_seen=T0, visits=visits, orders=orders, page_views=3)
    values = dict(
        shop="demo", visitor_id="v1", is_new_token=False, profile=profile,
        device=Device("desktop", "Windows", "Chrome", False), geo=Geo("US", "United States"),
        source=TrafficSource("direct", ""), page=PageContext(type="home"),
    )
    return VisitorContext(**{**values, **kw})


def make_request(peer: str = "127.0.0.1", scheme: str = "http", **headers: str) -> Request:
    raw = [(k.lower().replace("_", "-").encode(), v.encode()) for k, v in headers.items()]
    return Request({
        "type": "http", "method": "GET", "scheme": scheme, "path": "/v1/page", "query_string": b"",
        "headers": [(b"host", b"vitrine.test")] + raw, "client": (peer, 5000), "server": ("vitrine.test", 80),
    })


# -- visitor kind ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    "visits, orders, kind",
    [(1, 0, "new"), (2, 0, "returning"), (9, 0, "returning"), (1, 1, "customer"), (5, 3, "customer")],
)
def test_visitor_kind(visits: int, orders: int, kind: str) -> None:
    assert make_ctx(visits, orders).visitor_kind == kind


def test_as_dict_is_plain_data_for_templates() -> None:
    data = make_ctx(visits=2).as_dict()
    assert data["kind"] == "returning" and data["visits"] == 2 and data["page_views"] == 3
    assert data["device"]["device_class"] == "desktop"
    assert data["geo"]["country"] == "US"
    assert data["source"]["medium"] == "direct"
    assert data["page"]["type"] == "home"
    assert data["first_seen"] == "2024-11-01T12:00:00"


# -- overrides ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "start, override, kind",
    [
        ((1, 0), "returning", "returning"), ((1, 0), "customer", "customer"),
        ((4, 2), "new", "new"), ((4, 2), "returning", "returning"), ((4, 0), "customer", "customer"),
    ],
)
def test_visitor_override_changes_the_kind(start: tuple[int, int], override: str, kind: str) -> None:
    ctx = make_ctx(*start)
    changed = apply_overrides(ctx, {"visitor": override})
    assert changed.visitor_kind == kind
    assert ctx.visitor_kind != kind  # the original is left alone


def test_country_device_and_source_overrides() -> None:
    changed = apply_overrides(make_ctx(), {"country": "gb", "device": "mobile", "source": "paid"})
    assert changed.geo.country == "GB"
    assert changed.device.device_class == "mobile"
    assert changed.device.browser == "Chrome"  # only the class is pretended
    assert changed.source.medium == "paid"


def test_no_overrides_and_unknown_values_change_nothing() -> None:
    ctx = make_ctx(visits=3)
    assert apply_overrides(ctx, {}) is ctx
    assert apply_overrides(ctx, {"visitor": "alien"}).visitor_kind == "returning"


def test_overrides_never_touch_stored_data(client, services) -> None:
    token = client.post("/v1/page?shop=demo", json={"shop": "demo"}).json()["token"]
    vid = services.signer.visitor_id("demo", token)
    r = client.get("/v1/fragments/banner?shop=demo&visitor=customer&_context=1", headers={"X-Visitor-Token": token})
    assert r.json()["visitor"]["kind"] == "customer"
    profile = stored(services).get_visitor("demo", vid)
    assert profile.orders == 0 and profile.visits == 1


# -- proxies: scheme and client IP ----------------------------------------------------------
def test_https_is_the_request_scheme(services) -> None:
    assert services.contexts.is_https(make_request(scheme="https", peer="203.0.113.9"))
    assert not services.contexts.is_https(make_request(scheme="http", peer="203.0.113.9"))


def test_forwarded_proto_counts_only_from_a_trusted_proxy(services) -> None:
    contexts = services.contexts
    assert contexts.is_https(make_request(peer="127.0.0.1", x_forwarded_proto="https"))
    assert contexts.is_https(make_request(peer="::1", x_forwarded_proto="HTTPS"))
    assert not contexts.is_https(make_request(peer="203.0.113.9", x_forwarded_proto="https"))
    assert not contexts.is_https(make_request(peer="127.0.0.1", x_forwarded_proto="http"))


def test_location_from_forwarded_for_only_from_a_trusted_proxy(services) -> None:
    contexts = services.contexts
    assert contexts.locate(make_request(peer="127.0.0.1", x_forwarded_for=UK_IP)).country == "GB"
    assert contexts.locate(make_request(peer="127.0.0.1", x_forwarded_for=f"{US_IP}, {UK_IP}")).country == "GB"
    assert contexts.locate(make_request(peer="203.0.113.9", x_forwarded_for=UK_IP)).country == ""
    assert contexts.locate(make_request(peer=US_IP, x_forwarded_for=UK_IP)).country == "US"


def test_build_reads_device_geo_and_source(services) -> None:
    request = make_request(x_forwarded_for=UK_IP, user_agent=DESKTOP_UA)
    page = PageContext(url="https://shop.example/?utm_medium=email&utm_source=news", type="home")
    ctx = services.contexts.build(request, "demo", Identity("visitor-ctx-1", is_new=True), page)
    assert ctx.geo.country == "GB"
    assert ctx.device.device_class == "desktop"
    assert ctx.source.medium == "email"
    assert ctx.is_new_token and ctx.visitor_kind == "new"
    # Without a page view nothing is written: QA looking at fragments leaves no trace.
    assert services.store.get_visitor("demo", "visitor-ctx-1") is None


def test_the_client_ip_is_never_stored(client, services, settings) -> None:
    headers = {"X-Forwarded-For": UK_IP, "User-Agent": DESKTOP_UA}
    page = {"shop": "demo", "page": {"url": "http://127.0.0.1:8000/demo/", "referrer": "https://www.google.com/", "type": "home"},
            "slots": [{"id": "top", "widget": "banner"}]}
    token = client.post("/v1/page?shop=demo", json=page, headers=headers).json()["token"]
    events = {"shop": "demo", "token": token, "events": [
        {"event_id": "ip-check-01", "type": "view_item", "item_id": "22632"},
        {"event_id": "ip-check-02", "type": "purchase", "transaction_id": "T-9", "value": 3.5},
    ]}
    assert client.post("/v1/events?shop=demo", json=events, headers=headers).status_code == 202
    client.get("/v1/fragments/banner?shop=demo", headers=headers)
    vid = services.signer.visitor_id("demo", token)
    assert stored(services).get_visitor("demo", vid).country == "GB"

    db = sqlite3.connect(settings.resolved_data_dir / "vitrine.db")
    try:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert {"visitors", "events"} <= set(tables)
        dump = "\n".join(db.iterdump())
    finally:
        db.close()
    assert vid in dump and "GB" in dump  # the dump does hold this visitor's rows
    assert UK_IP not in dump
    assert "81.2.69" not in dump  # not even a truncated prefix
    # Nor is the city (the context has it; the store must not).
    city = services.geo.lookup(UK_IP).city
    assert city and city not in dump


# -- what lasts across a visitor's requests ------------------------------------------------
def test_lasting_values_are_reused_while_the_state_and_visitor_stay_the_same() -> None:
    from server.context import VisitorMemo
    from server.visitors.state import EMPTY
    from server.models import Event

    clock = [0.0]
    memo = VisitorMemo(max_visitors=2, ttl_s=30, clock=lambda: clock[0])
    viewed = EMPTY.add([Event("e1", "view_item", T0, item_id="i1")])
    calls: list[str] = []

    def ctx(state=viewed, **kw) -> VisitorContext:
        kw.setdefault("profile", VisitorProfile(visitor_id="v1", first_seen=T0, last_seen=T0, visits=2, state=state))
        return make_ctx(memo=memo, **kw)

    def value(c: VisitorContext, key: str = "k") -> str:
        return c.derive(key, lambda: calls.append(key) or f"{key}-{len(calls)}", lasting=True)

    first = value(ctx())
    assert value(ctx()) == first and calls == ["k"]  # the next request reuses it
    # Anything it may depend on makes it anew: another event, country, device, kind, consent.
    changed = [
        ctx(state=viewed.add([Event("e2", "add_to_cart", T0, item_id="i2")])),
        ctx(geo=Geo("GB", "United Kingdom")),
        ctx(device=Device("mobile", "iOS", "Safari", True)),
        ctx(profile=VisitorProfile(visitor_id="v1", first_seen=T0, last_seen=T0, visits=2, orders=1, state=viewed)),
    ]
    assert len({value(c) for c in changed} | {first}) == 5 and len(calls) == 5
    # A visitor without a valid token (an id made for this request) is not kept.
    value(ctx(is_new_token=True)), value(ctx(is_new_token=True))
    assert len(calls) == 7
    # Not kept past its time, and only the last max_visitors fingerprints are.
    clock[0] = 31.0
    assert value(ctx()) != first and len(calls) == 8
    assert len(memo) <= 2
    # Not lasting: once per request only.
    c = ctx()
    c.derive("once", lambda: calls.append("once"))
    c.derive("once", lambda: calls.append("once"))
    ctx().derive("once", lambda: calls.append("once"))
    assert calls.count("once") == 2
