"""Generated requests to every public endpoint: nothing a caller sends may produce a 5xx.

Hypothesis sends about 3,800 requests (1,900 on each store, SQLite and PostgreSQL) with
random bodies, query strings and headers through the real app. The `client` fixture
re-raises an exception the server did not handle, so a 500 fails with the server's own
traceback (and Hypothesis reports each distinct one); any other 5xx fails the status check.
A JSON error must carry `error`. Each `@example` is a request that once got a 5xx.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from urllib.parse import quote, urlencode

import pytest
from hypothesis import HealthCheck, example, given, note, settings as hypothesis_settings, strategies as st

from server.demo.site import MENU

from conftest import SMALL_CATALOG, UK_IP, US_IP

KINDS = ("banner", "popup", "recommendations", "search", "nav", "category")
EVENT_TYPES = (
    "page_view", "view_item", "view_item_list", "select_item", "add_to_cart", "remove_from_cart",
    "begin_checkout", "purchase", "search", "view_promotion", "select_promotion", "close_promotion",
)
STRATEGIES = (
    "top_picks", "similar", "bought_together", "recently_viewed", "buy_again", "trending",
    "trending_near_you", "bestsellers",
)
OWN_ORIGINS = ("http://127.0.0.1:8000", "http://localhost:8000")  # demo.toml's origins
FOREIGN_ORIGIN = "https://evil.example"
ITEM_IDS = tuple(item.item_id for item in SMALL_CATALOG)
SLUGS = tuple(slug for slug, _ in MENU)
XSS = "zz---><img src=x onerror=alert(1)>"


def fuzz(examples: int):
    """Hypothesis settings for one endpoint's test: its share of the request budget."""
    return hypothesis_settings(
        max_examples=examples, deadline=None,
        # One app per test and store (the conftest fixtures), shared by its examples: each
        # example clears the client's cookies and sends its own.
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow, HealthCheck.data_too_large],
    )


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(settings, request):
    """Each test on both stores: PostgreSQL refuses what SQLite takes (NUL characters, `Infinity` in JSON).

    Like tests/test_store.py, this needs the test PostgreSQL, and fails rather than skips without it.
    """
    if request.param == "sqlite":
        return settings
    return dataclasses.replace(settings, database_url=request.getfixturevalue("postgres_url"))


# -- values --------------------------------------------------------------------------
def mostly(common, rare, times: int = 3):
    """`common`, and one time in `times + 1` `rare`: most requests should get past the first check.

    (A weighted draw: `st.one_of(common, common, rare)` does not weigh, Hypothesis spreads
    its draws over what it has not tried yet.)
    """
    return st.sampled_from((True,) * times + (False,)).flatmap(lambda is_common: common if is_common else rare)


@dataclass(frozen=True)
class Raw:
    """A literal written into the JSON text as is: `Infinity`, `NaN`, `1e999`, deep nesting."""

    text: str


@dataclass(frozen=True)
class Token:
    """A visitor token to make once the signer is known: valid, another shop's, tampered or cut short.

    Only the server signs tokens, so `visitor` is an id it could have issued.
    """

    kind: str  # valid | other_shop | tampered | truncated
    visitor: str = "fuzz-visitor-000000000"


TOKEN_KINDS = ("valid", "other_shop", "tampered", "truncated")
NASTY = (
    "-->", "<script>alert(1)</script>", XSS, "'\"><svg onload=alert(1)>", "{{ 7*7 }}", "{% raw %}",
    "%", "%zz", "%00", "\x00", "\u202e", "🛍️", "ｇｉｆｔｓ", "..", "../../etc/passwd", "\\", "null", " ", "\t\n",
    "NaN", "Infinity", "-Infinity", "1e400", "-1", "0", "-0", "0x10", "1_000", " 7 ", "+3", "١٢", "²", "9" * 30,
    "99999999999999999999", "-99999999999999999999", "1e308", "1.5", ",,,", "sort,pages", "Gifts", "gifts",
)


def odd_text(min_size: int = 0, max_size: int = 30):
    """Text with half its characters from the troublesome few: NUL (PostgreSQL refuses it in
    text), control characters, markup, a right-to-left override, an emoji; the rest from
    anywhere but the surrogates. (`st.text(alphabet)` would draw the few almost never.)"""
    odd = st.sampled_from("\x00\x01\n<>&\"'-%\\\u202e\u00e9\U0001f6cd")
    character = mostly(odd, st.characters(codec="utf-8"), times=1)
    return st.lists(character, min_size=min_size, max_size=max_size).map("".join)


url_text = odd_text()
nasty = st.sampled_from(NASTY)
# At most 1,000 characters: nine of them, percent-encoded, stay under the client's 64 KB URL limit.
long_text = st.builds(lambda c, n: c * n, st.sampled_from("x-<é9 "), st.integers(100, 1000))
huge_number = st.one_of(
    st.integers(-(10**30), 10**30).map(str), st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.sampled_from(("99999999999999999999", "1e999", "-1e999", "nan", "inf", str(2**63), str(-(2**63) - 1))),
)
param_value = st.one_of(url_text, nasty, huge_number, long_text)

PARAM_VALUES = {
    "page": huge_number, "count": huge_number, "per_page": huge_number, "price_min": huge_number,
    "price_max": huge_number, "visitor": st.sampled_from(("new", "returning", "customer", "", "admin")),
    "country": st.sampled_from(("GB", "gb", "US", "XX", "", "GBR", "🇬🇧")),
    "device": st.sampled_from(("mobile", "desktop", "tablet", "bot", "")),
    "source": st.sampled_from(("paid", "email", "social", "organic", "referral", "direct", "internal", "")),
    "strategy": st.sampled_from(STRATEGIES + ("", "nope")),
    "sort": st.sampled_from(("personal", "bestsellers", "trending", "", "price")),
    "category": st.sampled_from(SLUGS + ("Gifts", "", "nope")), "item": st.sampled_from(ITEM_IDS + ("", "nope")),
    "item_id": st.sampled_from(ITEM_IDS), "format": st.just("json"), "q": st.sampled_from(("bag", "heart", XSS)),
    "_context": st.sampled_from(("1", "0", "")), "_debug": st.sampled_from(("1", "0", "")),
    "suggest": st.sampled_from(("1", "0", "false", "")), "controls": st.sampled_from(("sort,pages", "sort", "", ",x,")),
    "categories": st.lists(st.sampled_from(SLUGS + ("sale", "", " ")), max_size=8).map(",".join),
    "url": st.sampled_from(
        ("https://shop/p/22632?utm_medium=cpc", "http://[::1", "http://a:99999999/", "javascript:x"),
    ),
    "referrer": st.sampled_from(("https://www.google.com/", "http://[", "//evil", "")),
}
PARAM_NAMES = tuple(PARAM_VALUES) + (  # `shop` is in every query already: shop_params
    "slot", "placement", "title", "search_url", "page_type", "_qa_key", "perPage", "priceMin", "query",
)


def params_named(names):
    """(name, value) pairs: a value meant for the name, or any value."""
    return st.sampled_from(names).flatmap(
        lambda name: st.tuples(st.just(name), PARAM_VALUES.get(name, param_value) | param_value),
    )


known_param = params_named(PARAM_NAMES)
param = mostly(known_param, st.tuples(url_text, param_value))
demo_param = st.one_of(params_named(("page", "sort", "q")), param)
shop_params = mostly(st.just([("shop", "demo")]), st.sampled_from((
    [("shop", "demo"), ("shop", "demo")], [("shop", "a"), ("shop", "demo")], [("shop", "demo"), ("shop", "a")],
    [], [("shop", "")], [("shop", "nope")],
)))
query = st.builds(lambda shop, rest: shop + rest, shop_params, st.lists(param, max_size=8))
raw_query_tail = st.sampled_from(("", "", "", "&%zz=1", "&=", "&&", "&a", "&q=%ff%fe", "&page=%00", "&shop"))


# -- headers -------------------------------------------------------------------------
header_text = st.text(st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"), max_size=60)
origin = mostly(st.sampled_from(OWN_ORIGINS), st.one_of(
    st.sampled_from((FOREIGN_ORIGIN, "http://localhost:8000/", "null", "", "HTTP://127.0.0.1:8000",
                     "http://127.0.0.1:8000.evil.example", "https://127.0.0.1:8000")),
    header_text,
), times=2)
token = st.one_of(
    st.builds(Token, st.sampled_from(TOKEN_KINDS), st.from_regex(r"[A-Za-z0-9_-]{22}", fullmatch=True)),
    header_text, st.just("x" * 600),
)
forwarded_for = st.one_of(
    st.sampled_from((UK_IP, US_IP, f"{US_IP}, {UK_IP}", "unknown", "::ffff:81.2.69.160", "81.2.69.160:443",
                     "[2001:db8::1]:80", "999.1.1.1", ",", "")),
    st.ip_addresses().map(str), header_text,
)
user_agent = st.one_of(
    st.sampled_from((
        "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 Mobile/15E148",
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 Chrome/120.0 Safari/537.36",
        "Googlebot/2.1 (+http://www.google.com/bot.html)", "", "x" * 5000,
    )),
    header_text,
)
content_type = st.one_of(
    st.sampled_from(("application/json", "text/plain", "application/json; charset=utf-8", "text/plain;charset=UTF-8",
                     "APPLICATION/JSON", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x",
                     "text/html", ";", "")),
    header_text,
)
headers = st.fixed_dictionaries({}, optional={
    "origin": origin, "x-visitor-token": token, "cookie": token, "x-forwarded-for": forwarded_for,
    "user-agent": user_agent, "accept-language": header_text,
})
json_content_type = st.sampled_from(tuple(
    {"content-type": value} for value in ("application/json", "text/plain", "text/plain;charset=UTF-8")
) + ({},))


# -- JSON bodies ---------------------------------------------------------------------
# A body is well-formed (every field of its type and within its limits, with odd content
# and extreme numbers) or, one time in three, the same with one mutation: a value replaced
# by one of the wrong type or size, a key dropped or one added. Breaking fields one by one
# at random would make nearly every body a 422 at its first field.
json_number = st.one_of(
    st.integers(-(10**40), 10**40), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from((Raw("Infinity"), Raw("-Infinity"), Raw("NaN"), Raw("1e999"), Raw("-1e999"), Raw("1" + "0" * 400),
                     Raw("-0"), Raw("1E+2"), Raw("1e-400"))),
)
json_junk = st.one_of(
    st.recursive(
        st.none() | st.booleans() | json_number | st.text(max_size=30) | nasty | long_text,
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
        max_leaves=12,
    ),
    st.integers(10, 5000).map(lambda n: Raw("[" * n + "]" * n)),  # deep nesting
)


def _places(value, path=()):
    """The path of the value itself and of everything inside it."""
    yield path
    members = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, member in members:
        yield from _places(member, path + (key,))


def _mutated(value, path, mutation: str, junk):
    if not path:  # the body stays an object: the raw-bytes tests send everything else
        return {**value, "fuzz": junk} if mutation == "add" and isinstance(value, dict) else junk
    copy = dict(value) if isinstance(value, dict) else list(value)
    if len(path) == 1 and mutation == "drop" and isinstance(copy, dict):
        del copy[path[0]]
    else:
        copy[path[0]] = _mutated(value[path[0]], path[1:], mutation, junk)
    return copy


@st.composite
def now_and_then_broken(draw, well_formed):
    body = draw(well_formed)
    if draw(mostly(st.just(False), st.just(True), times=2)):
        path = draw(st.sampled_from(list(_places(body))))
        body = _mutated(body, path, draw(st.sampled_from(("replace", "drop", "add"))), draw(json_junk))
    return body


def text_up_to(limit: int, min_size: int = 0):
    """A string the field accepts: short and odd, or exactly as long as it may be."""
    return st.one_of(
        odd_text(min_size, min(limit, 30)),
        nasty.filter(lambda text: min_size <= len(text) <= limit),
        st.sampled_from("x-<é9 ").map(lambda c: c * limit),
    )


def many(strategy, at_most: int):
    """A list of a few, or now and then the same list repeated past the limit of `at_most`."""
    return st.builds(lambda few, times: few * times, st.lists(strategy, min_size=1, max_size=3),
                     mostly(st.just(1), st.just(at_most), times=5))


shop_field = mostly(st.just("demo"), st.sampled_from(("nope", "DEMO", "d" * 64)), times=5)
body_token = mostly(st.builds(Token, st.sampled_from(TOKEN_KINDS)) | st.none(), text_up_to(512))
item_id = mostly(st.sampled_from(ITEM_IDS), text_up_to(128, min_size=1))

slot = st.fixed_dictionaries(
    {"id": mostly(st.sampled_from(("top-banner", "home-hero", "recs", "search-results", "grid")), text_up_to(64, 1)),
     "widget": mostly(st.sampled_from(KINDS), text_up_to(32, 1))},
    optional={"attrs": st.dictionaries(
        mostly(st.sampled_from(PARAM_NAMES + ("searchUrl", "priceMax")), st.text(max_size=20)),
        st.one_of(param_value, *PARAM_VALUES.values()), max_size=8,
    )},
)
page_context = st.fixed_dictionaries({}, optional={
    "url": PARAM_VALUES["url"] | text_up_to(4096), "referrer": PARAM_VALUES["referrer"] | text_up_to(4096),
    "type": mostly(st.sampled_from(("home", "category", "product", "cart", "search", "other")), text_up_to(32)),
    "item_id": item_id, "category": PARAM_VALUES["category"] | text_up_to(256), "title": text_up_to(512),
})
page_body = now_and_then_broken(st.fixed_dictionaries({"shop": shop_field}, optional={
    "token": body_token, "page": page_context, "slots": many(slot, 30),
    "nav": st.lists(PARAM_VALUES["category"] | text_up_to(128), max_size=8),
}))

timestamp = st.one_of(
    json_number, st.integers(0, 4 * 10**12),
    st.builds(lambda moment, zone: moment.isoformat() + zone, st.datetimes(),
              st.sampled_from(("", "Z", "+00:00", "+14:00", "-14:00", "+23:59", "-23:59"))),
    st.sampled_from(("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00", "2024-02-30T00:00:00", "now")),
)


def amount(limit: float):
    """A number the field accepts (0 to `limit`), or now and then any number at all."""
    return mostly(st.integers(0, int(limit)) | st.floats(0, limit), json_number)


line_item = st.fixed_dictionaries({"item_id": item_id}, optional={"quantity": amount(100000), "price": amount(1e9)})
EVENT_FIELDS = {
    "ts": timestamp, "item_id": item_id, "items": st.lists(line_item, min_size=1, max_size=4), "value": amount(1e9),
    "currency": mostly(st.sampled_from(("GBP", "gbp", "EUR")), st.text(max_size=4)),
    "transaction_id": text_up_to(128, 1),
    "promotion_id": mostly(st.sampled_from(("welcome", "uk-delivery")), text_up_to(128, 1)),
    "creative_slot": text_up_to(128), "item_list_id": text_up_to(128), "item_list_name": text_up_to(128),
    "search_term": mostly(st.sampled_from(("bag", "heart")), text_up_to(200)), "page_view_id": text_up_to(64),
}
# What each type needs (docs/api.md), so that most events get past validation.
NEEDS = {
    "view_item": ("item_id",), "add_to_cart": ("items",), "remove_from_cart": ("item_id",), "select_item": ("item_id",),
    "view_item_list": ("items",), "purchase": ("transaction_id", "value", "items"), "search": ("search_term",),
    "view_promotion": ("promotion_id",), "select_promotion": ("promotion_id",), "close_promotion": ("promotion_id",),
}


def event_of(kind: str):
    needs = NEEDS.get(kind, ())
    return st.fixed_dictionaries(
        {"event_id": st.from_regex(r"[A-Za-z0-9_.:-]{8,64}", fullmatch=True), "type": st.just(kind),
         **{name: EVENT_FIELDS[name] for name in needs}},
        optional={name: field for name, field in EVENT_FIELDS.items() if name not in needs},
    )


event = st.sampled_from(EVENT_TYPES).flatmap(event_of)
events_body = now_and_then_broken(st.fixed_dictionaries(
    {"shop": shop_field, "events": many(event, 100)}, optional={"token": body_token},
))

lead_body = now_and_then_broken(st.fixed_dictionaries(
    {"shop": shop_field, "campaign": mostly(st.just("newsletter"), text_up_to(64, min_size=1)),
     "email": mostly(st.sampled_from(("ann@example.com", "a@b.co")), text_up_to(300)), "opt_in": st.booleans()},
    optional={"token": body_token, "birthday": mostly(st.sampled_from(("1990-04-01", "02-29")), text_up_to(12)),
              "interests": many(text_up_to(130), 25)},
))
reveal_body = now_and_then_broken(st.fixed_dictionaries(
    {"shop": shop_field, "campaign": mostly(st.sampled_from(("welcome", "apology", "newsletter")), text_up_to(64, min_size=1))},
    optional={"token": body_token, "consent": st.fixed_dictionaries({}, optional={
        "personalization": st.booleans() | st.none(), "analytics": st.booleans() | st.none(),
        "source": mostly(st.sampled_from(("tcf", "shop,tcf")), text_up_to(80))})},
))
# The shop's backend: its key (or a wrong one, or none) and a customer and pool.
issue_body = now_and_then_broken(st.fixed_dictionaries(
    {"customer_id": mostly(st.just("c1"), text_up_to(200)), "pool": mostly(st.sampled_from(("welcome", "sorry")), text_up_to(80))},
    optional={"shop": shop_field},
))

RAW_BODIES = (
    b"", b"null", b"[]", b"{}", b'"demo"', b"1e999", b"NaN", b'\xef\xbb\xbf{"shop": "demo"}', b'{"shop": "demo"',
    b'{"shop": "demo", "shop": "nope"}', b'{"shop": "d\xe9mo"}', b'{"shop": "\\ud800"}', b"[" * 60000, b"[" * 70000,
    b"x" * 70000, '{"shop": "demo"}'.encode("utf-16"), b'{"shop": "demo", "events": [{"event_id": "\\u0000abcdefgh",'
    b' "type": "page_view"}]}', b'{"shop": "demo", "slots": [{"id": "\\u0000", "widget": "banner"}]}',
)


def truncated(body, fraction: float) -> bytes:
    text = json_text_of(body).encode()
    return text[: int(len(text) * fraction)]


def raw_bodies(structured):
    """Bytes that are not quite a request: garbage, truncated JSON, odd encodings."""
    return st.one_of(
        st.sampled_from(RAW_BODIES), st.binary(max_size=300), st.text(max_size=200).map(str.encode),
        st.builds(truncated, structured, st.floats(0, 1)),
        structured.map(lambda body: json_text_of(body).encode("utf-16")),
    )


# -- sending -------------------------------------------------------------------------
def json_text_of(value) -> str:
    """JSON text of `value`, with each `Raw` written in as its literal."""
    raws: list[str] = []

    def placeholder(obj):
        if isinstance(obj, Raw):
            raws.append(obj.text)
            return f"\ue000raw{len(raws) - 1}\ue000"
        if isinstance(obj, Token):
            return obj.kind
        raise TypeError(type(obj))

    text = json.dumps(value, default=placeholder)
    for i, raw in enumerate(raws):
        text = text.replace(json.dumps(f"\ue000raw{i}\ue000"), raw, 1)
    return text


def make_token(services, value) -> str:
    if not isinstance(value, Token):
        return value
    valid = services.signer.sign("demo", value.visitor)
    return {
        "valid": valid, "other_shop": services.signer.sign("other", value.visitor),
        "tampered": valid[:-3] + ("AAA" if not valid.endswith("AAA") else "BBB"), "truncated": valid[: len(valid) // 2],
    }[value.kind]


def resolve(client, given_headers: dict, body=None) -> tuple[dict, object]:
    """Headers as bytes (Latin-1, as on the wire) and the body with its tokens made."""
    services = client.app.state.services
    out = {}
    for name, value in given_headers.items():
        value = make_token(services, value)
        if name == "cookie":
            value = f"{services.settings.cookie_name}_demo={value}"
        out[name] = value.encode("latin-1", "replace")
    if isinstance(body, dict) and "token" in body:
        body = {**body, "token": make_token(services, body["token"])}
    return out, body


def send(client, method: str, path: str, params=(), headers=None, body: bytes | None = None, tail: str = ""):
    """One request, which must not fail with a 5xx; a JSON error must say what is wrong."""
    query_string = "&".join(part for part in (urlencode(list(params)), tail.lstrip("&")) if part)
    url = path + ("?" + query_string if query_string else "")
    note(f"{method} {url}\nheaders: {headers!r}\nbody: {body if body is None else body[:2000]!r}")
    client.cookies.clear()
    response = client.request(method, url, headers=headers, content=body)
    assert response.status_code < 500, f"{response.status_code}: {response.text[:500]}"
    if path.startswith("/v1/"):
        assert response.headers.get("x-content-type-options") == "nosniff"
    is_json = response.headers.get("content-type", "").startswith("application/json")
    if response.status_code >= 400 and is_json and method != "HEAD":
        assert "error" in response.json(), response.text[:500]
    return response


def assert_no_comment_breakout(response, params) -> None:
    """What a query wrote after `-->` never reaches the HTML as it was (it would close a comment)."""
    for _, value in params:
        head, arrow, tail = value.partition("-->")
        if arrow and "<" in tail:
            assert arrow + tail not in response.text, f"the query's {tail!r} closes an HTML comment"


# -- the page call and events --------------------------------------------------------
@fuzz(300)
@given(body=page_body, params=query, given_headers=headers, json_type=json_content_type)
@example(
    body={"shop": "demo", "page": {"type": "product", "item_id": "\x00"}},
    params=[("shop", "demo")], given_headers={}, json_type={"content-type": "application/json"},
)
def test_page_call_never_fails_on_generated_json(client, body, params, given_headers, json_type) -> None:
    sent_headers, body = resolve(client, {**given_headers, **json_type}, body)
    send(client, "POST", "/v1/page", params, sent_headers, json_text_of(body).encode())


@fuzz(100)
@given(body=raw_bodies(page_body), params=query, given_headers=headers, ctype=content_type)
def test_page_call_never_fails_on_raw_bytes(client, body, params, given_headers, ctype) -> None:
    sent_headers, _ = resolve(client, {**given_headers, "content-type": ctype})
    send(client, "POST", "/v1/page", params, sent_headers, body)


@fuzz(300)
@given(body=events_body, params=query, given_headers=headers, json_type=json_content_type)
@example(
    body={"shop": "demo",
          "events": [{"event_id": "fuzz-ts-0001", "type": "page_view", "ts": "9999-12-31T23:59:59-14:00"}]},
    params=[("shop", "demo")], given_headers={}, json_type={"content-type": "application/json"},
)
@example(
    body={"shop": "demo", "events": [{"event_id": "fuzz-inf-0001", "type": "add_to_cart",
                                      "items": [{"item_id": "22632", "quantity": 1, "price": Raw("Infinity")}]}]},
    params=[("shop", "demo")], given_headers={}, json_type={"content-type": "application/json"},
)
@example(
    body={"shop": "demo", "events": [{"event_id": "fuzz-nul-0001", "type": "view_item", "item_id": "\x00"}]},
    params=[("shop", "demo")], given_headers={}, json_type={"content-type": "application/json"},
)
def test_events_never_fail_on_generated_json(client, body, params, given_headers, json_type) -> None:
    sent_headers, body = resolve(client, {**given_headers, **json_type}, body)
    send(client, "POST", "/v1/events", params, sent_headers, json_text_of(body).encode())


@fuzz(100)
@given(body=raw_bodies(events_body), params=query, given_headers=headers, ctype=content_type)
def test_events_never_fail_on_raw_bytes(client, body, params, given_headers, ctype) -> None:
    sent_headers, _ = resolve(client, {**given_headers, "content-type": ctype})
    send(client, "POST", "/v1/events", params, sent_headers, body)


@fuzz(200)
@given(body=lead_body, params=query, given_headers=headers, json_type=json_content_type)
def test_leads_never_fail_on_generated_json(client, body, params, given_headers, json_type) -> None:
    sent_headers, body = resolve(client, {**given_headers, **json_type}, body)
    send(client, "POST", "/v1/leads", params, sent_headers, json_text_of(body).encode())


@fuzz(60)
@given(body=raw_bodies(lead_body), params=query, given_headers=headers, ctype=content_type)
def test_leads_never_fail_on_raw_bytes(client, body, params, given_headers, ctype) -> None:
    sent_headers, _ = resolve(client, {**given_headers, "content-type": ctype})
    send(client, "POST", "/v1/leads", params, sent_headers, body)


@fuzz(150)
@given(body=reveal_body, params=query, given_headers=headers, json_type=json_content_type)
def test_reveals_never_fail_on_generated_json(client, demo_pools, body, params, given_headers, json_type) -> None:
    sent_headers, body = resolve(client, {**given_headers, **json_type}, body)
    send(client, "POST", "/v1/reveal", params, sent_headers, json_text_of(body).encode())


@fuzz(100)
@given(body=issue_body, params=query, right_key=st.booleans(), json_type=json_content_type)
def test_issues_never_fail_on_generated_json(client, services, demo_pools, body, params, right_key, json_type) -> None:
    key = services.shop_keys.key("demo") if right_key else "vsk_not-the-key"
    sent_headers, body = resolve(client, {"authorization": f"Bearer {key}", **json_type}, body)
    send(client, "POST", "/v1/coupons/issue", params, sent_headers, json_text_of(body).encode())


# -- fragments -----------------------------------------------------------------------
@fuzz(500)
@given(kind=mostly(st.sampled_from(KINDS), url_text, times=5), params=query, tail=raw_query_tail, given_headers=headers)
@example(kind="search", params=[("shop", "demo"), ("q", XSS), ("_debug", "1")], tail="", given_headers={})
def test_fragments_never_fail(client, kind, params, tail, given_headers) -> None:
    sent_headers, _ = resolve(client, given_headers)
    response = send(client, "GET", f"/v1/fragments/{quote(kind, safe='')}", params, sent_headers, tail=tail)
    names = {name for name, _ in params}
    if response.status_code == 200 and not names & {"_context", "format"}:
        assert response.headers["content-type"].startswith("text/html")
        assert_no_comment_breakout(response, params)


# -- CORS preflight, the script, health, unknown endpoints ---------------------------
v1_path = st.one_of(
    st.sampled_from(("/v1/page", "/v1/events", "/v1/leads", "/v1/reveal", "/v1/health", "/v1/vitrine.js", "/v1/popups.js",
                     "/v1/me")),
    st.sampled_from(KINDS).map(lambda kind: f"/v1/fragments/{kind}"),
    # Not "." or "..": a client resolves those dot segments away (RFC 3986), so the request
    # would go to another path than the one the test names.
    url_text.filter(lambda junk: junk not in (".", "..")).map(lambda junk: "/v1/" + quote(junk)),
)


@fuzz(150)
@given(path=v1_path, params=query, given_headers=headers, origin=origin,
       method=st.sampled_from(("GET", "POST", "PUT", "DELETE", "")) | header_text, request_headers=header_text)
def test_cors_preflight_never_fails(client, path, params, given_headers, origin, method, request_headers) -> None:
    given_headers = {**given_headers, "origin": origin, "access-control-request-method": method,
                     "access-control-request-headers": request_headers}
    sent_headers, _ = resolve(client, given_headers)
    response = send(client, "OPTIONS", path, params, sent_headers)
    if response.status_code == 204:
        assert response.headers["access-control-allow-origin"] == origin
    if "%00" in path.lower():  # a NUL anywhere is a 400 (docs/security.md)
        assert response.status_code == 400
        return
    if params == [("shop", "demo")] and not path.endswith((".js")):
        if origin in OWN_ORIGINS:
            assert response.status_code == 204
        if origin == FOREIGN_ORIGIN:
            assert response.status_code == 403


@fuzz(150)
@given(path=v1_path, params=query, given_headers=headers,
       method=st.sampled_from(("GET", "GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS")))
def test_script_health_and_unknown_endpoints_never_fail(client, path, params, given_headers, method) -> None:
    sent_headers, _ = resolve(client, given_headers)
    response = send(client, method, path, params, sent_headers)
    names = [name for name, _ in params]
    if method != "GET" or len(set(names)) < len(names):  # a parameter given twice is a 400 (docs/api.md)
        return
    if any("\x00" in name + value for name, value in params):  # so is a NUL anywhere (docs/security.md)
        assert response.status_code == 400
        return
    if path in ("/v1/vitrine.js", "/v1/popups.js"):
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/javascript")
    if path == "/v1/health" and "origin" not in given_headers:
        assert response.json()["status"] == "ok"


# -- the demo shop -------------------------------------------------------------------
# (The test client decodes a path twice, so a `%00` in a value arrives as NUL, as the path
# `/demo/product/%00` does through a real server.)
demo_path = st.one_of(
    st.sampled_from(("/demo/", "/demo/cart", "/demo/search")),
    (st.sampled_from(SLUGS) | url_text | nasty).map(lambda slug: "/demo/category/" + quote(slug, safe="")),
    (st.sampled_from(ITEM_IDS) | url_text | nasty).map(lambda item: "/demo/product/" + quote(item, safe="")),
    (st.sampled_from(ITEM_IDS) | url_text | nasty).map(lambda item: f"/demo/img/{quote(item, safe='')}.svg"),
)


@fuzz(300)
@given(path=demo_path, params=st.lists(demo_param, max_size=8), tail=raw_query_tail, given_headers=headers)
@example(path="/demo/category/gifts", params=[("page", "99999999999999999999")], tail="", given_headers={})
@example(path="/demo/search", params=[("q", "a"), ("page", "99999999999999999999")], tail="", given_headers={})
@example(path="/demo/product/%00", params=[], tail="", given_headers={})
@example(path="/demo/search", params=[("q", "\x00")], tail="", given_headers={})
def test_demo_pages_never_fail(client, path, params, tail, given_headers) -> None:
    sent_headers, _ = resolve(client, given_headers)
    send(client, "GET", path, params, sent_headers, tail=tail)
