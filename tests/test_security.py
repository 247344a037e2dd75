"""Hardening: what an outsider sends at a running server gets nothing out of it (docs/security.md).

One test (or a few) per rule, through the real app: request text stays in its output
context, one place decides the shop, only web URLs are rendered, QA powers need the shop's
QA key, a slot fails alone, the work of a page call is capped, no query string is logged.
"""

from __future__ import annotations

import json
import logging
import os
import re
import stat

import pytest
from starlette.testclient import TestClient

from conftest import UK_IP, qa_headers
from server.models import CatalogItem
from server.settings import Settings

EVIL = "https://evil.example"
XSS = "zz---><img src=x onerror=alert(document.domain)>"


def write_shop(settings, shop: str, text: str) -> None:
    (settings.resolved_shops_dir / f"{shop}.toml").write_text(text)


def write_template(settings, name: str, text: str) -> None:
    folder = settings.resolved_data_dir / "templates"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def debug_json(html: str) -> dict:
    """The JSON of the `_debug=1` comment; the comment must be the last thing and closed once."""
    head, sep, comment = html.partition("<!-- vitrine debug\n")
    assert sep, html[-300:]
    body, end, rest = comment.partition("\n-->\n")
    assert end and rest == ""
    assert "<" not in body and ">" not in body  # nothing in it can end or nest the comment
    return json.loads(body)


# -- 1. request text never leaves its output context ------------------------------------
@pytest.mark.parametrize("params", [
    {"q": XSS},
    {"q": "a--!><svg onload=alert(1)>"},
    {"q": "<!--<script>alert(1)</script>"},
])
def test_search_text_cannot_close_the_debug_comment(client, params) -> None:
    r = client.get("/v1/fragments/search", params={"shop": "demo", "_debug": "1", **params})
    assert r.status_code == 200
    data = debug_json(r.text)
    assert data["search"]["query"] == " ".join(params["q"].split())  # the same text, as JSON


def test_nav_categories_and_overrides_cannot_close_the_debug_comment(client) -> None:
    r = client.get("/v1/fragments/nav", params={
        "shop": "demo", "_debug": "1", "categories": f"gifts,{XSS}", "device": XSS, "source": XSS,
    })
    assert r.status_code == 200
    debug_json(r.text)
    assert "<img" not in r.text.replace("&lt;img", "")


def test_the_debug_setting_without_a_qa_key_adds_no_comment(tmp_path, settings) -> None:
    from server.app import build_services, create_app

    write_shop(settings, "closed", 'origins = ["https://closed.example"]\n')
    services = build_services(Settings.load(environ={}, data_dir=settings.data_dir, secret_keys="test-key-1", debug=True))
    try:
        client = TestClient(create_app(services.settings, services), base_url="http://127.0.0.1:8000")
        r = client.get("/v1/fragments/search", params={"shop": "closed", "q": XSS})
        assert r.status_code == 200 and "vitrine debug" not in r.text
    finally:
        services.close()


# -- 2. one place decides the shop ----------------------------------------------------------
@pytest.mark.parametrize("method, path, body", [
    ("get", "/v1/fragments/banner?shop=evilshop&shop=demo&placement=top", None),
    ("get", "/v1/fragments/banner?shop=evilshop&shop=demo&placement=top&_context=1", None),
    ("post", "/v1/page?shop=evilshop&shop=demo", {"shop": "demo", "slots": [{"id": "top", "widget": "banner"}]}),
    ("post", "/v1/events?shop=evilshop&shop=demo", {"shop": "demo", "events": [{"event_id": "dup-shop-01", "type": "page_view"}]}),
    ("options", "/v1/page?shop=evilshop&shop=demo", None),
])
def test_a_request_naming_two_shops_is_400_without_cors(client, settings, services, method, path, body) -> None:
    write_shop(settings, "evilshop", f'origins = ["{EVIL}"]\n')
    headers = {"Origin": EVIL, "X-Forwarded-For": UK_IP}
    if method == "options":
        headers["Access-Control-Request-Method"] = "POST"
    kwargs = {"json": body} if body is not None else {}
    r = getattr(client, method)(path, headers=headers, **kwargs)
    assert r.status_code == 400, r.text
    assert "shop" in r.json()["error"] and "once" in r.json()["error"]
    assert "access-control-allow-origin" not in r.headers
    assert "x-visitor-token" not in r.headers
    assert services.store.count_events("demo") == 0


def test_any_repeated_parameter_is_400(client) -> None:
    r = client.get("/v1/fragments/recommendations?shop=demo&count=2&count=24")
    assert r.status_code == 400 and "'count'" in r.json()["error"]


def test_the_origin_of_one_shop_cannot_read_another(client, settings) -> None:
    write_shop(settings, "evilshop", f'origins = ["{EVIL}"]\n')
    r = client.post("/v1/page?shop=evilshop", json={"shop": "demo", "slots": []}, headers={"Origin": EVIL})
    assert r.status_code == 400 and "differ" in r.json()["error"]
    r = client.get("/v1/fragments/banner?shop=demo", headers={"Origin": EVIL})
    assert r.status_code == 403 and "access-control-allow-origin" not in r.headers


# -- 3. only web URLs are rendered ---------------------------------------------------------
BAD_URLS = ["javascript:alert(document.domain)", " JavaScript:alert(1)", "data:text/html,<script>alert(1)</script>",
            "//evil.example/x", "/\\evil.example", "vbscript:msgbox(1)"]


def test_stored_items_with_non_web_urls_render_without_them(client, services) -> None:
    # Rows stored before imports checked URLs: the store and the templates both drop them.
    items = [CatalogItem(f"bad{n}", f"Bad link {n}", category="Gifts", price=1.0, currency="GBP", url=u, image_url=u)
             for n, u in enumerate(BAD_URLS)]
    services.store.upsert_items("demo", items)
    r = client.get("/v1/fragments/category", params={"shop": "demo", "category": "gifts", "sort": "bestsellers", "per_page": "24"})
    assert r.status_code == 200, r.text
    assert "bad0" in r.text
    hrefs = re.findall(r'(?:href|src)="([^"]*)"', r.text)
    assert hrefs and all(h == "#" or h.startswith(("/", "?", "http://", "https://")) and not h.startswith("//") for h in hrefs), hrefs
    for bad in ("javascript", "data:", "evil.example", "vbscript"):
        assert bad not in r.text.lower()


@pytest.mark.parametrize("search_url", ["//evil.example/s", "/\\evil.example/s", "javascript:alert(1)//", "https:evil"])
def test_a_search_url_that_is_not_a_web_url_is_ignored(client, search_url) -> None:
    r = client.get("/v1/fragments/search", params={"shop": "demo", "q": "zzzzqqq", "suggest": "1", "search_url": search_url})
    assert r.status_code == 200
    r = client.get("/v1/fragments/search", params={"shop": "demo", "q": "warmer", "search_url": search_url})
    assert r.status_code == 200
    assert "evil" not in r.text and "javascript" not in r.text


# -- 4. QA powers need the shop's QA key ------------------------------------------------------
CLOSED_SHOP = """
origins = ["https://closed.example"]
[[campaigns]]
id = "members"
widget = "banner"
placement = "top"
title = "Members only"
code = "SECRET25"
body = "Use SECRET25 at checkout"
[campaigns.audience]
visitor = ["customer"]
"""


@pytest.fixture
def closed(settings, services):
    write_shop(settings, "closed", CLOSED_SHOP)
    return services


def test_without_the_key_overrides_are_ignored(closed, client) -> None:
    r = client.get("/v1/fragments/banner", params={"shop": "closed", "placement": "top", "visitor": "customer"})
    assert r.status_code == 200
    assert "SECRET25" not in r.text and "Members only" not in r.text


@pytest.mark.parametrize("flag", ["_context", "_debug"])
def test_without_the_key_context_and_debug_are_403_naming_the_key(closed, client, flag) -> None:
    r = client.get("/v1/fragments/banner", params={"shop": "closed", "placement": "top", flag: "1"})
    assert r.status_code == 403
    error = r.json()["error"]
    assert "QA key" in error and "X-Vitrine-QA-Key" in error and "_qa_key" in error and "vitrine shops qa-key closed" in error
    wrong = client.get("/v1/fragments/banner", params={"shop": "closed", flag: "1"}, headers={"X-Vitrine-QA-Key": "guess"})
    assert wrong.status_code == 403


def test_with_the_key_qa_sees_any_visitor(closed, client) -> None:
    headers = qa_headers(client, "closed")
    r = client.get("/v1/fragments/banner", params={"shop": "closed", "placement": "top", "visitor": "customer"}, headers=headers)
    assert r.status_code == 200 and "Members only" in r.text
    key = headers["X-Vitrine-QA-Key"]
    r = client.get("/v1/fragments/banner", params={"shop": "closed", "visitor": "customer", "_context": "1", "_qa_key": key})
    assert r.status_code == 200 and r.json()["visitor"]["kind"] == "customer"


def test_a_configured_qa_key_replaces_the_derived_one(settings, services, client) -> None:
    derived = qa_headers(client, "demo")
    write_shop(settings, "closed", CLOSED_SHOP + '\n[qa]\nkey = "qa-for-closed-2026"\n')
    ok = client.get("/v1/fragments/banner", params={"shop": "closed", "_context": "1", "_qa_key": "qa-for-closed-2026"})
    assert ok.status_code == 200
    assert qa_headers(client, "closed")["X-Vitrine-QA-Key"] == "qa-for-closed-2026"
    other = client.get("/v1/fragments/banner", params={"shop": "closed", "_context": "1"}, headers=derived)
    assert other.status_code == 403  # another shop's key is no key


def test_the_demo_shop_is_open_for_qa(client) -> None:
    r = client.get("/v1/fragments/banner", params={"shop": "demo", "placement": "home-hero", "visitor": "customer", "_context": "1"})
    assert r.status_code == 200 and r.json()["visitor"]["kind"] == "customer"


# -- 6. a slot fails alone --------------------------------------------------------------------
PAGE = {"shop": "demo", "page": {"type": "home"}, "slots": [
    {"id": "top", "widget": "banner", "attrs": {"placement": "top"}},
    {"id": "recs", "widget": "recommendations", "attrs": {"strategy": "bestsellers"}},
    {"id": "find", "widget": "search", "attrs": {"query": "warmer"}},
]}


def page_call(client, body=PAGE):
    client.cookies.clear()
    return client.post("/v1/page?shop=demo", json=body, headers={"X-Forwarded-For": UK_IP})


def test_a_broken_override_template_fails_its_slot_alone_and_is_logged_once(settings, client, caplog) -> None:
    write_template(settings, "recommendations-demo.html", "{% for item in items %}{{ item.title }")
    caplog.set_level(logging.ERROR, logger="vitrine.widgets")
    for _ in range(3):
        r = page_call(client)
        assert r.status_code == 200, r.text
        body = r.json()
        assert "Free UK delivery" in body["fragments"]["top"]["html"]
        assert "recs" not in body["fragments"]
        assert "could not be rendered" in body["errors"]["recs"]
    failures = [rec for rec in caplog.records if "recommendations slot failed" in rec.getMessage()]
    assert len(failures) == 1
    r = client.get("/v1/fragments/recommendations", params={"shop": "demo"})
    assert r.status_code == 503 and "could not be rendered" in r.json()["error"]


def test_a_broken_search_index_fails_the_search_slot_alone(settings, services, client) -> None:
    services.search.close()
    index_dir = settings.resolved_data_dir / "search" / "demo"
    index_dir.mkdir(parents=True, exist_ok=True)
    for path in index_dir.iterdir():
        if path.is_file():
            path.write_bytes(b"\x00garbage")
    (index_dir / "meta.json").write_text("{ not json")
    services.search._indexes.clear()
    r = page_call(client)
    assert r.status_code == 200
    body = r.json()
    assert "Free UK delivery" in body["fragments"]["top"]["html"]
    assert "recs" in body["fragments"]
    assert "find" not in body["fragments"] and body["errors"]["find"]


def test_a_corrupt_model_pointer_leaves_every_slot_working(settings, client) -> None:
    shop_models = settings.resolved_data_dir / "models" / "demo"
    shop_models.mkdir(parents=True)
    (shop_models / "CURRENT").write_bytes(b"\xff\xfe\x00not a version")
    slots = [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}},
             {"id": "recs", "widget": "recommendations", "attrs": {"strategy": "bestsellers", "count": "2"}},
             {"id": "picks", "widget": "recommendations", "attrs": {"strategy": "top_picks", "count": "2"}}]
    body = {"shop": "demo", "slots": slots}
    r = page_call(client, body)
    assert r.status_code == 200
    assert set(r.json()["fragments"]) >= {"top", "recs", "picks"}
    (shop_models / "CURRENT").unlink()
    (shop_models / "CURRENT").mkdir()  # a directory where the pointer file should be
    r = client.get("/v1/fragments/recommendations", params={"shop": "demo", "strategy": "top_picks"})
    assert r.status_code == 200


# -- 8. inputs that made a 500 ----------------------------------------------------------------
@pytest.mark.parametrize("path", ["/demo/category/gifts?page=99999999999999999999", "/demo/search?q=warmer&page=99999999999999999999",
                                  "/demo/category/gifts?page=-5", "/demo/search?q=a&page=1e9"])
def test_demo_pages_take_any_page_number(client, path) -> None:
    r = client.get(path)
    assert r.status_code == 200


# -- 9. the work of a page call is capped -----------------------------------------------------
def test_thirty_category_slots_are_422_before_any_work(client, services) -> None:
    slots = [{"id": f"grid{n}", "widget": "category", "attrs": {"category": "gifts", "per_page": "96"}} for n in range(30)]
    before = services.store.count_events("demo")
    r = page_call(client, {"shop": "demo", "slots": slots})
    assert r.status_code == 422
    assert "items" in r.json()["error"] and "150" in r.json()["error"]
    assert services.store.count_events("demo") == before  # refused before the page view was recorded


@pytest.mark.parametrize("widget, attrs, word", [
    ("recommendations", {"count": "500"}, "count 500"),
    ("category", {"category": "gifts", "per_page": "100000"}, "per_page 100000"),
    ("search", {"query": "bag", "count": "49"}, "count 49"),
    ("nav", {"categories": ",".join(f"c{n}" for n in range(61))}, "61 menu entries"),
])
def test_a_slot_asking_for_too_much_is_422_naming_it(client, widget, attrs, word) -> None:
    r = page_call(client, {"shop": "demo", "slots": [{"id": "big", "widget": widget, "attrs": attrs}]})
    assert r.status_code == 422 and "'big'" in r.json()["error"] and word in r.json()["error"]
    r = client.get(f"/v1/fragments/{widget}", params={"shop": "demo", **attrs})
    assert r.status_code == 422 and word in r.json()["error"]


def test_a_page_too_far_is_the_slots_own_error(client) -> None:
    r = client.get("/v1/fragments/category", params={"shop": "demo", "category": "gifts", "page": "99999999999999999999"})
    assert r.status_code == 422 and "page" in r.json()["error"]


def test_the_home_page_of_the_demo_fits_the_cap(client) -> None:
    slots = [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}},
             {"id": "picks", "widget": "recommendations", "attrs": {"strategy": "top_picks", "count": "8"}},
             {"id": "grid", "widget": "category", "attrs": {"category": "gifts"}}]
    r = page_call(client, {"shop": "demo", "slots": slots, "nav": ["gifts", "bags", "christmas"]})
    assert r.status_code == 200 and not r.json()["errors"]


# -- 12. no query string or address in the logs -----------------------------------------------
def test_the_access_log_has_the_path_but_no_query_or_address(client, caplog) -> None:
    caplog.set_level(logging.INFO, logger="vitrine.access")
    client.get("/v1/fragments/search", params={"shop": "demo", "q": "my secret search"}, headers={"X-Forwarded-For": UK_IP})
    lines = [rec.getMessage() for rec in caplog.records if rec.name == "vitrine.access"]
    assert any(line.startswith("GET /v1/fragments/search 200 ") for line in lines), lines
    assert not any("secret" in line or UK_IP in line or "127.0.0.1" in line or "?" in line for line in lines)


# -- 13. small ones -------------------------------------------------------------------------
def test_the_demo_page_never_reflects_the_host_header(client) -> None:
    r = client.get("/demo/", headers={"Host": "evil.example"})
    assert r.status_code == 200
    assert "evil.example" not in r.text
    assert 'src="/v1/vitrine.js"' in r.text


@pytest.mark.parametrize("method, path, kwargs", [
    ("get", "/v1/fragments/banner?shop=demo", {}),
    ("post", "/v1/page?shop=demo", {"json": {"shop": "demo", "slots": []}}),
    ("post", "/v1/events?shop=demo", {"content": b"{"}),
    ("get", "/v1/fragments/nope?shop=demo", {}),
    ("get", "/demo/", {}),
    ("get", "/v1/vitrine.js", {}),
])
def test_every_response_says_nosniff(client, method, path, kwargs) -> None:
    r = getattr(client, method)(path, **kwargs)
    assert r.headers["x-content-type-options"] == "nosniff"


def test_the_signing_key_file_is_never_readable_by_others(tmp_path, monkeypatch) -> None:
    import server.settings as settings_module

    seen: list[int] = []
    real = settings_module.secrets.token_urlsafe

    def key(n: int) -> str:  # when the key is made, the file it goes into already exists, 0600
        seen.extend(stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.name.startswith("secret_key"))
        return real(n)

    old = os.umask(0)
    try:
        monkeypatch.setattr(settings_module.secrets, "token_urlsafe", key)
        Settings.load(environ={}, data_dir=tmp_path).signing_keys()
    finally:
        os.umask(old)
    assert seen == [0o600]
    assert stat.S_IMODE((tmp_path / "secret_key").stat().st_mode) == 0o600


@pytest.mark.parametrize("method, path, kwargs", [
    ("get", "/demo/product/a%00b", {}),
    ("get", "/v1/fragments/recommendations?shop=demo&strategy=similar&item=a%00b", {}),
    ("get", "/demo/search?q=bag%00", {}),
    ("post", "/v1/events?shop=demo", {"content": b'{"shop":"demo","events":[{"event_id":"nul-000001","type":"view_item","item_id":"a\\u0000b"}]}'}),
    ("post", "/v1/page?shop=demo", {"content": b'{"shop":"demo","page":{"item_id":"a\\u0000"},"slots":[]}'}),
])
def test_a_nul_character_anywhere_is_400(client, services, method, path, kwargs) -> None:
    r = getattr(client, method)(path, **kwargs)
    assert r.status_code == 400 and "NUL" in r.json()["error"], r.text
    assert services.store.count_events("demo") == 0
