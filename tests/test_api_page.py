"""POST /v1/page: fragments, popups, identity, visits, and every way a caller can get it wrong."""

from __future__ import annotations

import json
import random
import shutil
import string
import time
from datetime import timedelta
from pathlib import Path

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.testclient import TestClient

from server.app import build_services, create_app
from server.identity import TOKEN_HEADER, VISITOR_SALT
from server.models import utcnow
from server.settings import Settings

from conftest import DEMO_CONFIG, UK_IP, US_IP, stored

TOP = {"id": "top", "widget": "banner", "attrs": {"placement": "top"}}
HERO = {"id": "hero", "widget": "banner", "attrs": {"placement": "home-hero"}}


def page_body(slots: list[dict] | None = None, token: str | None = None, **page: str) -> dict:
    body: dict = {"shop": "demo", "page": {"url": "http://127.0.0.1:8000/demo/", "type": "home", **page}}
    body["slots"] = [TOP] if slots is None else slots
    if token is not None:
        body["token"] = token
    return body


def post_page(client: TestClient, body: dict | None = None, ip: str = UK_IP, **headers: str):
    return client.post("/v1/page?shop=demo", json=page_body() if body is None else body,
                       headers={"X-Forwarded-For": ip, **headers})


def visitor_of(services, token: str) -> str:
    vid = services.signer.visitor_id("demo", token)
    assert vid, "the returned token must be valid for the shop"
    return vid


def assert_json_error(response, status: int, *words: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    message = response.json()["error"]
    for word in words:
        assert word in message, f"{word!r} not in {message!r}"


# -- fragments and popups ---------------------------------------------------------------
def test_uk_visitor_gets_the_uk_delivery_banner(client) -> None:
    r = post_page(client, ip=UK_IP)
    assert r.status_code == 200
    top = r.json()["fragments"]["top"]
    assert top["campaigns"] == ["uk-delivery"]
    assert "Free UK delivery" in top["html"]
    assert top["shadow"] is True
    assert r.json()["errors"] == {}


def test_us_visitor_gets_the_international_banner_naming_the_country(client) -> None:
    r = post_page(client, ip=US_IP)
    top = r.json()["fragments"]["top"]
    assert top["campaigns"] == ["international-delivery"]
    assert "We deliver to United States" in top["html"]
    assert "Free UK delivery" not in top["html"]


def test_new_visitor_gets_the_welcome_popup_with_its_trigger(client) -> None:
    data = post_page(client).json()
    assert data["visitor"] == {"kind": "new", "visits": 1, "new_visit": True}
    # The welcome first; exit intent next, in case the welcome is capped in the browser.
    popup, exit_intent = data["popups"]
    assert popup["id"] == popup["campaign"] == "welcome"
    assert exit_intent["campaign"] == "before-you-go" and exit_intent["trigger"] == {"on": "exit"}
    assert popup["trigger"]["on"] == "delay" and popup["trigger"]["seconds"] == 1
    # Its code is the visitor's own, fetched when they reveal it: none in the page call.
    assert "data-vitrine-issue" in popup["html"] and "WELCOME-" not in popup["html"] and "<dialog" in popup["html"]


def test_no_welcome_popup_after_the_visitor_closed_it(client, services) -> None:
    token = post_page(client).json()["token"]
    closed = client.post("/v1/events?shop=demo", json={
        "shop": "demo", "token": token,
        "events": [{"event_id": "close-welcome-1", "type": "close_promotion", "promotion_id": "welcome"}],
    })
    assert closed.status_code == 202
    again = post_page(client, page_body(token=token)).json()
    assert visitor_of(services, again["token"]) == visitor_of(services, token)
    assert again["visitor"]["kind"] == "new"  # still qualifies, but closed it
    assert [p["campaign"] for p in again["popups"]] == ["before-you-go"]  # the welcome no more
    assert again["fragments"]["top"]["campaigns"] == ["uk-delivery"]  # other campaigns unaffected


def test_unknown_widget_in_one_slot_is_an_error_entry_and_the_rest_renders(client) -> None:
    slots = [TOP, {"id": "mystery", "widget": "carousel-of-doom"}, {"id": "pop", "widget": "popup"}]
    data = post_page(client, page_body(slots)).json()
    assert "carousel-of-doom" in data["errors"]["mystery"]
    assert "pop" in data["errors"]  # popups come in `popups`, never as a slot
    assert data["fragments"]["top"]["campaigns"] == ["uk-delivery"]
    assert set(data["fragments"]) == {"top"}


def test_slot_without_a_matching_campaign_is_left_out(client) -> None:
    # A new visitor has no home-hero banner: the slot keeps its default content.
    data = post_page(client, page_body([TOP, HERO])).json()
    assert set(data["fragments"]) == {"top"}
    assert data["errors"] == {}


# -- the token: body, header, cookie ----------------------------------------------------
def test_token_in_body_header_and_lax_cookie_over_http(client, services) -> None:
    r = post_page(client)
    token = r.json()["token"]
    assert r.headers[TOKEN_HEADER] == token
    assert r.headers["cache-control"] == "no-store"
    [cookie] = r.headers.get_list("set-cookie")
    assert cookie.startswith(f"vitrine_demo={token};")
    attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert "httponly" in attrs and "samesite=lax" in attrs
    assert "secure" not in attrs and "partitioned" not in attrs
    visitor_of(services, token)


def test_cookie_over_https_is_cross_site_secure_and_partitioned(app) -> None:
    https = TestClient(app, base_url="https://127.0.0.1:8000", client=("127.0.0.1", 40000))
    r = https.post("/v1/page?shop=demo", json=page_body())
    assert r.status_code == 200, r.text
    [cookie] = r.headers.get_list("set-cookie")
    attrs = {a.strip().lower() for a in cookie.split(";")[1:]}
    assert {"httponly", "samesite=none", "secure", "partitioned"} <= attrs


def test_forwarded_proto_https_from_a_trusted_proxy_gives_the_secure_cookie(client) -> None:
    r = post_page(client, **{"X-Forwarded-Proto": "https"})
    attrs = {a.strip().lower() for a in r.headers["set-cookie"].split(";")[1:]}
    assert {"samesite=none", "secure", "partitioned"} <= attrs


def test_forwarded_proto_from_an_untrusted_peer_is_ignored(app) -> None:
    stranger = TestClient(app, base_url="http://127.0.0.1:8000", client=("203.0.113.9", 1))
    r = stranger.post("/v1/page?shop=demo", json=page_body(), headers={"X-Forwarded-Proto": "https"})
    attrs = {a.strip().lower() for a in r.headers["set-cookie"].split(";")[1:]}
    assert "samesite=lax" in attrs and "secure" not in attrs


@pytest.mark.parametrize("carrier", ["body", "header", "cookie"])
def test_renewed_token_keeps_the_same_visitor(app, services, carrier: str) -> None:
    first = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
    token = post_page(first).json()["token"]
    vid = visitor_of(services, token)
    later = TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
    body, headers = page_body(), {}
    if carrier == "body":
        body["token"] = token
    elif carrier == "header":
        headers[TOKEN_HEADER] = token
    else:
        later.cookies.set("vitrine_demo", token)
    r = post_page(later, body, **headers)
    assert visitor_of(services, r.json()["token"]) == vid
    assert stored(services).get_visitor("demo", vid).page_views == 2


def test_a_request_without_any_token_is_a_new_visitor(client, services) -> None:
    a = post_page(client).json()["token"]
    client.cookies.clear()
    b = post_page(client).json()["token"]
    assert visitor_of(services, a) != visitor_of(services, b)


def _old_token(shop: str, visitor_id: str, key: str, age_s: int) -> str:
    """A genuine token for `visitor_id`, signed `age_s` seconds ago."""

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age_s

    serializer = URLSafeTimedSerializer(key, salt=VISITOR_SALT, signer=PastSigner)
    return serializer.dumps({"s": shop, "v": visitor_id})


def _make_other_shop(settings: Settings) -> None:
    (settings.resolved_shops_dir / "other.toml").write_text('name = "Other shop"\n')


@pytest.mark.parametrize("kind", ["tampered", "expired", "foreign-shop", "garbage", "other-key"])
def test_bad_token_silently_gives_a_new_visitor(client, services, settings, kind: str) -> None:
    known = "known-visitor-0001"
    services.store.touch_visitor("demo", known, utcnow(), 1800, page_view=False)
    good = services.signer.sign("demo", known)
    if kind == "tampered":
        payload, stamp, sig = good.split(".")
        token = f"{payload}.{stamp}.{'z' if sig[0] != 'z' else 'A'}{sig[1:]}"
    elif kind == "expired":
        token = _old_token("demo", known, "test-key-1", age_s=settings.token_max_age_days * 86400 + 60)
        # The same construction with a fresh stamp is accepted: only the age differs.
        assert services.signer.visitor_id("demo", _old_token("demo", known, "test-key-1", age_s=60)) == known
    elif kind == "foreign-shop":
        _make_other_shop(settings)
        token = services.signer.sign("other", known)
        assert client.post("/v1/page?shop=other", json={**page_body(), "shop": "other"}).status_code == 200
        client.cookies.clear()
    elif kind == "garbage":
        token = "not-a-token-at-all"
    else:
        token = URLSafeTimedSerializer("someone-elses-key", salt=VISITOR_SALT).dumps({"s": "demo", "v": known})
    for headers, body in (({TOKEN_HEADER: token}, page_body()), ({}, page_body(token=token))):
        client.cookies.clear()
        r = post_page(client, body, **headers)
        assert r.status_code == 200, r.text
        data = r.json()
        assert visitor_of(services, data["token"]) != known
        assert data["visitor"]["kind"] == "new"
    assert stored(services).get_visitor("demo", known).page_views == 0


def test_overlong_token_is_a_new_visitor_not_an_error(client, services) -> None:
    r = post_page(client, **{TOKEN_HEADER: "x" * 5000})
    assert r.status_code == 200
    visitor_of(services, r.json()["token"])


# -- visits and recorded data -----------------------------------------------------------
def test_visits_count_up_after_the_visit_timeout(client, services) -> None:
    vid = "visitor-from-last-week"
    services.store.touch_visitor("demo", vid, utcnow() - timedelta(days=7), 1800)
    token = services.signer.sign("demo", vid)
    data = post_page(client, page_body(token=token)).json()
    assert data["visitor"] == {"kind": "returning", "visits": 2, "new_visit": True}
    # Within the timeout the visit goes on.
    data = post_page(client, page_body(token=token)).json()
    assert data["visitor"] == {"kind": "returning", "visits": 2, "new_visit": False}
    assert stored(services).get_visitor("demo", vid).page_views == 3  # last week's view, then two


def test_zero_visit_timeout_makes_every_page_view_a_visit(tmp_path: Path) -> None:
    (tmp_path / "shops").mkdir()
    shutil.copyfile(DEMO_CONFIG, tmp_path / "shops" / "demo.toml")
    settings = Settings.load(environ={}, data_dir=tmp_path, secret_keys="k", visit_timeout_minutes=0)
    services = build_services(settings)
    try:
        client = TestClient(create_app(settings, services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 1))
        first = post_page(client).json()
        time.sleep(0.002)
        second = post_page(client).json()
        assert first["visitor"]["visits"] == 1
        assert second["visitor"] == {"kind": "returning", "visits": 2, "new_visit": True}
        assert visitor_of(services, second["token"]) == visitor_of(services, first["token"])
    finally:
        services.close()


def test_the_page_view_is_recorded_as_an_event(client, services) -> None:
    before = stored(services).count_events("demo", "page_view")
    data = post_page(client, page_body(type="product", item_id="22632", url="http://127.0.0.1:8000/demo/p/22632")).json()
    assert stored(services).count_events("demo", "page_view") == before + 1
    [event] = services.store.visitor_events("demo", visitor_of(services, data["token"]))
    assert event.type == "page_view"
    assert event.event_id == f"pv:{data['page_view_id']}"
    assert event.item_id == "22632"
    assert event.props["page_type"] == "product"
    assert event.props["path"] == "/demo/p/22632"


def test_country_is_stored_for_the_visitor(client, services) -> None:
    data = post_page(client, ip=UK_IP).json()
    assert stored(services).get_visitor("demo", visitor_of(services, data["token"])).country == "GB"


def test_forwarded_for_is_ignored_from_an_untrusted_peer(app, services) -> None:
    stranger = TestClient(app, base_url="http://127.0.0.1:8000", client=("203.0.113.9", 1))
    r = stranger.post("/v1/page?shop=demo", json=page_body(), headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200
    top = r.json()["fragments"]["top"]
    assert top["campaigns"] == ["international-delivery"]  # located by 203.0.113.9: unknown
    assert stored(services).get_visitor("demo", visitor_of(services, r.json()["token"])).country == ""


# -- errors: 4xx with JSON, never a 500 -------------------------------------------------
def test_malformed_json_is_400(client) -> None:
    r = client.post("/v1/page?shop=demo", content=b'{"shop": "demo", "slots": [', headers={"content-type": "application/json"})
    assert_json_error(r, 400, "invalid JSON")


def test_empty_body_is_400(client) -> None:
    r = client.post("/v1/page?shop=demo", content=b"", headers={"content-type": "application/json"})
    assert_json_error(r, 400, "empty")


@pytest.mark.parametrize(
    "body, field",
    [
        ({"shop": "demo", "slots": "top"}, "slots"),
        ({"shop": "demo", "slots": [{"id": "top", "widget": 7}]}, "slots.0.widget"),
        ({"shop": "demo", "page": {"url": ["x"]}}, "page.url"),
        ({"shop": 12}, "shop"),
        ({"shop": "demo", "token": {"v": "x"}}, "token"),
        ({"shop": "demo", "slots": [{"id": "a", "widget": "banner", "attrs": {"placement": 3}}]}, "slots.0.attrs.placement"),
        ({"shop": "demo", "surprise": True}, "surprise"),
    ],
)
def test_wrong_types_are_422_naming_the_field(client, body: dict, field: str) -> None:
    assert_json_error(client.post("/v1/page?shop=demo", json=body), 422, field)


def test_too_many_slots_is_422(client, settings) -> None:
    slots = [{"id": f"s{i}", "widget": "banner"} for i in range(settings.max_slots_per_page + 1)]
    assert_json_error(client.post("/v1/page?shop=demo", json=page_body(slots)), 422, "too many slots")
    ok = [{"id": f"s{i}", "widget": "banner"} for i in range(settings.max_slots_per_page)]
    assert client.post("/v1/page?shop=demo", json=page_body(ok)).status_code == 200


def test_body_over_the_limit_is_413(client, settings) -> None:
    big = json.dumps(page_body(title="x" * settings.max_body_bytes)).encode()
    r = client.post("/v1/page?shop=demo", content=big, headers={"content-type": "application/json"})
    assert_json_error(r, 413, "too large")


def test_streamed_body_over_the_limit_is_413_without_a_length(client, settings) -> None:
    def chunks():
        yield b'{"shop": "demo", "page": {"title": "'
        for _ in range(settings.max_body_bytes // 1000 + 2):
            yield b"y" * 1000
        yield b'"}}'

    r = client.post("/v1/page?shop=demo", content=chunks(), headers={"content-type": "application/json"})
    assert_json_error(r, 413, "too large")


@pytest.mark.parametrize("content_type", ["application/xml", "multipart/form-data; boundary=x", "image/png"])
def test_wrong_content_type_is_415(client, content_type: str) -> None:
    r = client.post("/v1/page?shop=demo", content=json.dumps(page_body()).encode(), headers={"content-type": content_type})
    assert_json_error(r, 415, "JSON")


def test_text_plain_body_is_accepted(client) -> None:
    r = client.post("/v1/page?shop=demo", content=json.dumps(page_body()).encode(), headers={"content-type": "text/plain;charset=UTF-8"})
    assert r.status_code == 200 and "top" in r.json()["fragments"]


def test_unknown_shop_is_404(client) -> None:
    r = client.post("/v1/page?shop=nosuchshop", json={**page_body(), "shop": "nosuchshop"})
    assert_json_error(r, 404, "nosuchshop")


def test_missing_shop_is_a_clear_4xx(client) -> None:
    body = page_body()
    del body["shop"]
    r = client.post("/v1/page", json=body)
    assert r.status_code in (400, 422)
    assert "shop" in r.json()["error"]


def test_shop_in_url_and_body_must_agree(client, settings) -> None:
    _make_other_shop(settings)
    r = client.post("/v1/page?shop=other", json=page_body())
    assert_json_error(r, 400, "differ")


def test_broken_shop_config_is_503_not_500(client, settings) -> None:
    (settings.resolved_shops_dir / "broken.toml").write_text("campaigns = [[[")
    r = client.post("/v1/page?shop=broken", json={**page_body(), "shop": "broken"})
    assert_json_error(r, 503, "broken")


def test_get_is_405_json(client) -> None:
    assert_json_error(client.get("/v1/page?shop=demo"), 405, "GET")


def _junk_value(rng: random.Random, depth: int = 0):
    choices = [
        lambda: None, lambda: rng.choice([True, False]), lambda: rng.randint(-10**20, 10**20),
        lambda: rng.uniform(-1e300, 1e300), lambda: "".join(rng.choice(string.printable + "é☃\u202e\x00") for _ in range(rng.randint(0, 40))),
        lambda: "x" * rng.choice([0, 1, 63, 64, 65, 600, 5000]),
    ]
    if depth < 3:
        choices += [
            lambda: [_junk_value(rng, depth + 1) for _ in range(rng.randint(0, 4))],
            lambda: {rng.choice(["id", "widget", "attrs", "url", "type", "shop", "token", "slots", "page", "zz"]): _junk_value(rng, depth + 1) for _ in range(rng.randint(0, 4))},
        ]
    return rng.choice(choices)()


def _junk_body(rng: random.Random) -> bytes:
    shape = rng.randrange(5)
    if shape == 0:
        return bytes(rng.randrange(256) for _ in range(rng.randint(1, 200)))
    if shape == 1:
        return json.dumps(_junk_value(rng)).encode()
    body = page_body()
    if shape == 2:
        body["page"] = _junk_value(rng)
    elif shape == 3:
        body["slots"] = [_junk_value(rng) for _ in range(rng.randint(0, 5))]
    else:
        body["slots"] = [{"id": _junk_value(rng), "widget": rng.choice(["banner", "popup", _junk_value(rng)]),
                          "attrs": {"placement": rng.choice(["top", "home-hero", "", "\x00"])}}]
        body["token"] = rng.choice([None, "a.b.c", "..", "é" * 10])
    text = json.dumps(body)
    if rng.random() < 0.3:  # cut it short
        text = text[: rng.randint(1, len(text))]
    return text.encode()


def test_junk_bodies_never_give_a_500(client) -> None:
    rng = random.Random(20241123)
    statuses = set()
    for _ in range(250):
        raw = _junk_body(rng)
        content_type = rng.choice(["application/json", "text/plain", ""])
        r = client.post("/v1/page?shop=demo", content=raw, headers={"content-type": content_type, "X-Forwarded-For": rng.choice([UK_IP, US_IP, "junk", "::1"])})
        assert r.status_code < 500, (raw, r.text)
        if r.status_code >= 400:
            assert r.json()["error"], raw
        statuses.add(r.status_code)
    assert {200, 400, 422} <= statuses  # the generator reaches every branch
