"""Signed visitor tokens: signing, checking, key rotation, and where a request carries them."""

from __future__ import annotations

import secrets
import time

import pytest
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from starlette.requests import Request
from starlette.responses import Response

from server.identity import (
    TOKEN_HEADER, VISITOR_SALT, TokenSigner, attach_token, cookie_name, identify, new_visitor_id,
)

DAY = 86400


def signed_long_ago(key: str, payload: object, age_s: int) -> str:
    """A token signed with `key` as if `age_s` seconds ago."""

    class PastSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(time.time()) - age_s

    return URLSafeTimedSerializer(key, salt=VISITOR_SALT, signer=PastSigner).dumps(payload)


def request_with(headers: dict[str, str] | None = None, cookies: dict[str, str] | None = None) -> Request:
    raw = [(k.lower().encode(), v.encode()) for k, v in (headers or {}).items()]
    if cookies:
        raw.append((b"cookie", "; ".join(f"{k}={v}" for k, v in cookies.items()).encode()))
    return Request({"type": "http", "method": "POST", "path": "/v1/page", "headers": raw, "query_string": b""})


# -- signing and checking ------------------------------------------------------------------
def test_a_signed_token_gives_back_its_visitor() -> None:
    signer = TokenSigner(["k1"], 400 * DAY)
    token = signer.sign("demo", "visitor-123")
    assert signer.visitor_id("demo", token) == "visitor-123"
    assert signer.max_age_seconds == 400 * DAY


def test_new_visitor_ids_are_random_and_fit_the_store() -> None:
    ids = {new_visitor_id() for _ in range(200)}
    assert len(ids) == 200
    assert all(16 <= len(v) <= 64 for v in ids)


def test_a_signer_needs_a_key() -> None:
    with pytest.raises(ValueError, match="key"):
        TokenSigner([], DAY)


def test_tampered_token_is_rejected() -> None:
    signer = TokenSigner(["k1"], DAY)
    token = signer.sign("demo", "visitor-123")
    payload, stamp, sig = token.split(".")
    other = signer.sign("demo", "visitor-456").split(".")[0]
    assert signer.visitor_id("demo", f"{other}.{stamp}.{sig}") is None  # someone else's id, my signature
    # The first character: the last one of a base64 signature carries padding bits too.
    flipped = ("z" if sig[0] != "z" else "A") + sig[1:]
    assert signer.visitor_id("demo", f"{payload}.{stamp}.{flipped}") is None


def test_token_for_another_shop_is_rejected() -> None:
    signer = TokenSigner(["k1"], DAY)
    token = signer.sign("other", "visitor-123")
    assert signer.visitor_id("demo", token) is None
    assert signer.visitor_id("other", token) == "visitor-123"


def test_expired_token_is_rejected() -> None:
    signer = TokenSigner(["k1"], 30 * DAY)
    assert signer.visitor_id("demo", signed_long_ago("k1", {"s": "demo", "v": "old"}, 31 * DAY)) is None
    assert signer.visitor_id("demo", signed_long_ago("k1", {"s": "demo", "v": "old"}, 29 * DAY)) == "old"


def test_a_token_found_valid_is_not_checked_again_but_still_ages_and_names_its_shop(monkeypatch) -> None:
    """A returning visitor's token is verified once (TokenSigner keeps the valid ones); what
    it says stays bound to its shop, and it expires when its age passes the limit."""
    import itsdangerous

    signer = TokenSigner(["k1"], 30 * DAY)
    token = signed_long_ago("k1", {"s": "demo", "v": "kept"}, 29 * DAY)
    assert signer.visitor_id("demo", token) == "kept"
    checks = []
    real_loads = itsdangerous.URLSafeTimedSerializer.loads
    monkeypatch.setattr(itsdangerous.URLSafeTimedSerializer, "loads",
                        lambda self, *a, **k: checks.append(1) or real_loads(self, *a, **k))
    assert signer.visitor_id("demo", token) == "kept" and not checks  # not verified again
    assert signer.visitor_id("other", token) is None and not checks
    now = time.time()
    monkeypatch.setattr(time, "time", lambda: now + 2 * DAY)  # past 30 days old now
    assert signer.visitor_id("demo", token) is None
    payload, stamp, sig = token.split(".")
    altered = f"{payload}.{stamp}.{'z' if sig[0] != 'z' else 'A'}{sig[1:]}"
    assert signer.visitor_id("demo", altered) is None and checks  # another string is verified


@pytest.mark.parametrize(
    "token",
    [None, "", "garbage", "a.b.c", "...", "é☃", "eyJzIjoiZGVtbyJ9", "x" * 100 + "." + "y" * 10, "\x00" * 20],
)
def test_garbage_is_rejected_without_raising(token) -> None:
    assert TokenSigner(["k1"], DAY).visitor_id("demo", token) is None


def test_genuine_payloads_of_the_wrong_shape_are_rejected() -> None:
    signer = TokenSigner(["k1"], DAY)
    for payload in (["demo", "v"], "demo", {"s": "demo"}, {"s": "demo", "v": 5}, {"s": "demo", "v": ""}):
        assert signer.visitor_id("demo", signed_long_ago("k1", payload, 0)) is None


def test_overlong_tokens_are_rejected() -> None:
    signer = TokenSigner(["k1"], DAY)
    # Random ids: a repeated character would be compressed by itsdangerous below the limit.
    too_long = signer.sign("demo", secrets.token_urlsafe(450))
    assert len(too_long) > 512
    assert signer.visitor_id("demo", too_long) is None
    id_too_long = signer.sign("demo", secrets.token_urlsafe(60)[:65])  # a validly signed token, but no visitor id is that long
    assert len(id_too_long) <= 512
    assert signer.visitor_id("demo", id_too_long) is None
    longest = secrets.token_urlsafe(60)[:64]
    assert signer.visitor_id("demo", signer.sign("demo", longest)) == longest


# -- key rotation --------------------------------------------------------------------------
def test_key_rotation_keeps_old_tokens_and_signs_with_the_new_key() -> None:
    before = TokenSigner(["old"], DAY)
    old_token = before.sign("demo", "visitor-1")
    rotated = TokenSigner(["old", "new"], DAY)
    assert rotated.visitor_id("demo", old_token) == "visitor-1"
    new_token = rotated.sign("demo", "visitor-1")
    assert new_token != old_token
    assert before.visitor_id("demo", new_token) is None  # signed with the new key, unknown to the old signer
    assert TokenSigner(["new"], DAY).visitor_id("demo", new_token) == "visitor-1"
    assert TokenSigner(["new"], DAY).visitor_id("demo", old_token) is None  # once the old key is dropped


def test_token_signed_with_an_unknown_key_is_rejected() -> None:
    stranger = TokenSigner(["someone-else"], DAY).sign("demo", "visitor-1")
    assert TokenSigner(["k1", "k2"], DAY).visitor_id("demo", stranger) is None


# -- where a request carries it ------------------------------------------------------------
def test_identify_prefers_header_then_body_then_cookie() -> None:
    signer = TokenSigner(["k1"], DAY)
    h, b, c = (signer.sign("demo", v) for v in ("from-header", "from-body", "from-cookie"))
    cookies = {"vitrine_demo": c}
    assert identify(signer, request_with({TOKEN_HEADER: h}, cookies), "demo", "vitrine", b).visitor_id == "from-header"
    assert identify(signer, request_with({}, cookies), "demo", "vitrine", b).visitor_id == "from-body"
    found = identify(signer, request_with({}, cookies), "demo", "vitrine")
    assert found.visitor_id == "from-cookie" and found.is_new is False


def test_identify_skips_a_bad_candidate_for_a_good_one() -> None:
    signer = TokenSigner(["k1"], DAY)
    good = signer.sign("demo", "from-cookie")
    request = request_with({TOKEN_HEADER: "tampered.x.y"}, {"vitrine_demo": good})
    assert identify(signer, request, "demo", "vitrine", "junk").visitor_id == "from-cookie"


def test_identify_reads_only_this_shops_cookie() -> None:
    signer = TokenSigner(["k1"], DAY)
    other = signer.sign("other", "someone")
    found = identify(signer, request_with({}, {"vitrine_other": other, "vitrine_demo": other}), "demo", "vitrine")
    assert found.is_new and found.visitor_id != "someone"


def test_identify_without_a_token_makes_a_new_visitor_each_time() -> None:
    signer = TokenSigner(["k1"], DAY)
    a = identify(signer, request_with(), "demo", "vitrine")
    b = identify(signer, request_with(), "demo", "vitrine")
    assert a.is_new and b.is_new and a.visitor_id != b.visitor_id


def test_cookie_name_appends_the_shop() -> None:
    assert cookie_name("vitrine", "demo") == "vitrine_demo"


def _cookie_attrs(response: Response) -> tuple[str, set[str]]:
    [cookie] = [v.decode() for k, v in response.raw_headers if k == b"set-cookie"]
    first, *rest = [p.strip() for p in cookie.split(";")]
    return first, {a.lower() for a in rest}


def test_attach_token_over_http_is_a_lax_cookie_and_a_header() -> None:
    response = Response()
    attach_token(response, "tok", "demo", "vitrine", 3600, https=False)
    first, attrs = _cookie_attrs(response)
    assert first == "vitrine_demo=tok"
    assert {"httponly", "samesite=lax", "max-age=3600", "path=/"} <= attrs
    assert "secure" not in attrs and "partitioned" not in attrs
    assert response.headers[TOKEN_HEADER] == "tok"


def test_attach_token_over_https_is_a_partitioned_cross_site_cookie() -> None:
    response = Response()
    attach_token(response, "tok", "demo", "vitrine", 3600, https=True)
    first, attrs = _cookie_attrs(response)
    assert first == "vitrine_demo=tok"
    assert {"httponly", "samesite=none", "secure", "partitioned"} <= attrs
    assert response.headers[TOKEN_HEADER] == "tok"
