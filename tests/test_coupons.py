"""Coupons (server/promotions/): codes, pools and their rules, issuing, redemption with each
reason, idempotency and concurrency on both stores, the server-to-server API's key and its
refusal of browsers, the CLI, CSV imports, and the visitor's coupons in their data."""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import threading
from datetime import datetime, timedelta
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings as hypothesis_settings, strategies as st

from server.cli import main
from server.customers.keys import derive_key
from server.imports import ImportFailed
from server.models import ANONYMOUS_VISITOR, utcnow
from server.privacy.data import delete_customer, export_customer
from server.promotions.codes import ALPHABET, CodeError, Pattern, normalize
from server.promotions.pools import (PoolError, ensure_pool, generate_codes, import_codes, issue_code, read_codes)
from server.promotions.redeem import RedeemIn, redeem
from server.promotions.rules import REASONS, PoolRules
from server.store import open_store
from server.store.schema import coupon_codes, coupon_issues, coupon_pools, coupon_redemptions, metadata
from server.store.sql import SqlStore
from test_privacy import me, places_naming, visit

SHOP = "demo"


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


def pool_of(store, rules: PoolRules | None = None, count: int = 1, pool: str = "p", shop: str = SHOP) -> list[str]:
    made, _ = ensure_pool(store, shop, pool, rules)
    return generate_codes(store, shop, pool, made, count, Pattern())


def attempt(store, code: str, order_id: str = "o-1", value: float = 50.0, currency: str = "EUR",
            customer: str | None = None, items: list[dict] | None = None, now: datetime | None = None, shop: str = SHOP):
    body = RedeemIn(code=code, order_id=order_id, order_value=value, currency=currency, customer_id=customer,
                    items=items)
    return redeem(store, shop, body, now=now)


def reason(answer: dict) -> str:
    return "ok" if answer["ok"] else answer["reason"]


# -- codes ---------------------------------------------------------------------------
def test_generated_codes_use_no_look_alike_characters_and_follow_prefix_and_pattern() -> None:
    assert not set("01OIL") & set(ALPHABET) and len(ALPHABET) == 31
    codes = {Pattern("WELCOME-", "XXXX-XXXX").generate() for _ in range(200)}
    assert len(codes) == 200
    for code in codes:
        assert code.startswith("WELCOME-") and code[12] == "-" and len(code) == 17
        assert set(code[8:12] + code[13:]) <= set(ALPHABET)
    with pytest.raises(CodeError, match="at least 6"):
        Pattern("", "XXXXX")
    with pytest.raises(CodeError, match="prefix"):
        Pattern("SALE%", "XXXXXXXX")


def test_codes_are_compared_without_case_spaces_or_dashes(services) -> None:
    store = services.store
    [code] = pool_of(store, PoolRules(uses_per_code=5), pool="welcome")
    typed = f" {code[:3].lower()} - {code[3:]}\t".replace(code[5], code[5].lower())
    assert normalize(typed) == code
    answer = attempt(store, typed)
    assert answer["ok"] and answer["code"] == code and answer["pool"] == "welcome"
    assert reason(attempt(store, code.replace(code[0], "0" if code[0] != "0" else "1"), order_id="o-2")) == "not_found"


class Drawn(Pattern):
    """A pattern whose draws are given: the first ones the shop has already."""

    def __init__(self, draws: list[str]) -> None:
        super().__init__()
        self.draws = list(draws)

    def generate(self) -> str:
        return self.draws.pop(0)


def test_a_drawn_code_the_shop_has_is_drawn_again(services) -> None:
    store = services.store
    [taken] = pool_of(store, pool="first")
    rules, _ = ensure_pool(store, SHOP, "second", None)
    made = generate_codes(store, SHOP, "second", rules, 2, Drawn([taken, "NEW22222", "NEW33333"]))
    assert made == ["NEW22222", "NEW33333"]
    assert store.coupon_codes_taken(SHOP, [taken, "NEW22222"]) == {taken: "first", "NEW22222": "second"}


def test_an_existing_pool_keeps_its_rules(services) -> None:
    store = services.store
    pool_of(store, PoolRules(min_order=20))
    assert len(pool_of(store, None, count=3)) == 3  # no rules given: codes added as the pool is
    with pytest.raises(PoolError, match=r"min_order 20.0, not 30.0"):
        pool_of(store, PoolRules(min_order=30))
    with pytest.raises(ValueError, match="at most 100"):
        PoolRules(kind="percent", value=150)


# -- rules and reasons ---------------------------------------------------------------
def test_each_rule_gives_its_reason(services) -> None:
    store, now = services.store, utcnow()
    seen = set()

    def check(rules: PoolRules, expected: str, pool: str, **kwargs) -> None:
        [code] = pool_of(store, rules, pool=pool)
        assert reason(attempt(store, code, **kwargs)) == expected, pool
        seen.add(expected)

    check(PoolRules(), "ok", "plain")
    assert reason(attempt(store, "NOSUCHCODE")) == "not_found"
    seen.add("not_found")
    check(PoolRules(starts_at=now + timedelta(days=1)), "not_started", "later")
    check(PoolRules(expires_at=now - timedelta(seconds=1)), "expired", "gone")
    check(PoolRules(min_order=60), "order_below_minimum", "minimum", value=59.99)
    check(PoolRules(min_order=60), "ok", "minimum-met", value=60)
    check(PoolRules(currency="GBP", kind="amount", value=5), "not_eligible", "pounds", currency="EUR")
    check(PoolRules(uses_per_customer=1), "not_eligible", "who")  # without a customer id the rule cannot hold
    check(PoolRules(categories=("Gifts",)), "not_eligible", "gifts",
          items=[{"item_id": "22112", "price": 4.95}])  # Home decor, as the catalog says
    check(PoolRules(audience="prospect"), "not_eligible", "audience")  # never issued: its audience was never checked

    [single] = pool_of(store, PoolRules(), pool="single")
    assert attempt(store, single, order_id="first")["ok"]
    assert reason(attempt(store, single, order_id="second")) == "already_redeemed"
    seen.add("already_redeemed")

    budget = pool_of(store, PoolRules(budget=2), count=3, pool="budget")
    assert [reason(attempt(store, c, order_id=f"b-{c}")) for c in budget] == ["ok", "ok", "usage_limit_reached"]
    seen.add("usage_limit_reached")

    per_customer = pool_of(store, PoolRules(uses_per_customer=1), count=2, pool="once-each")
    assert attempt(store, per_customer[0], order_id="c1", customer="alan")["ok"]
    assert reason(attempt(store, per_customer[1], order_id="c2", customer="alan")) == "usage_limit_reached"
    assert attempt(store, per_customer[1], order_id="c3", customer="ada")["ok"]
    assert seen == {"ok", *REASONS}


def test_the_discount_is_a_percentage_or_an_amount_of_what_it_applies_to(services) -> None:
    store = services.store
    [percent] = pool_of(store, PoolRules(kind="percent", value=15), pool="pc")
    assert attempt(store, percent, value=80)["discount"] == {
        "kind": "percent", "value": 15, "amount": 12.0, "applies_to": 80.0, "currency": "EUR", "free_shipping": False}
    [amount] = pool_of(store, PoolRules(kind="amount", value=20, currency="EUR"), pool="am")
    assert attempt(store, amount, value=12.5)["discount"]["amount"] == 12.5  # never more than the order
    [gifts] = pool_of(store, PoolRules(kind="percent", value=50, categories=("Gifts",), items=("71053",)), pool="gifts")
    lines = [{"item_id": "22632", "price": 1.85, "quantity": 2},  # Gifts, from the catalog
             {"item_id": "71053", "price": 3.39},  # named by the pool
             {"item_id": "22112", "price": 4.95},  # Home decor: not
             {"item_id": "x-1", "price": 10, "category": "Gifts > Cards"}]  # a sub-category, as the body says
    discount = attempt(store, gifts, value=22.04, items=lines)["discount"]
    assert discount["applies_to"] == 17.09 and discount["amount"] == 8.54


def test_a_cap_on_a_percentage_and_free_shipping(services) -> None:
    # The seeds of calendar rewards: "50% up to 500" and "20 off and free shipping".
    store = services.store
    capped = pool_of(store, PoolRules(kind="percent", value=50, max_discount=500), count=2, pool="half")
    assert attempt(store, capped[0], "o-big", value=1200)["discount"]["amount"] == 500.0  # the cap
    small = attempt(store, capped[1], "o-small", value=600)["discount"]
    assert small["amount"] == 300.0 and small["max_discount"] == 500.0 and small["free_shipping"] is False
    [gift] = pool_of(store, PoolRules(kind="amount", value=20, free_shipping=True), pool="bday")
    given = attempt(store, gift, value=35)["discount"]
    assert (given["amount"], given["free_shipping"]) == (20.0, True) and "max_discount" not in given
    with pytest.raises(ValueError, match="an amount is its own cap"):
        PoolRules(kind="amount", value=20, max_discount=10)
    with pytest.raises(ValueError, match="cap on the discount must be above 0"):
        PoolRules(kind="percent", value=20, max_discount=0)


def test_a_code_never_issued_of_a_campaign_pool_reveals_nothing_usable(services) -> None:
    """A guessed code of a pool whose codes campaigns reveal: never ok, and only the reasons
    that say it cannot be used anyway (expired, usage_limit_reached); every other rule that
    would refuse it answers not_found, as a code that does not exist."""
    store, now = services.store, utcnow()
    cases = [
        (PoolRules(reveal="campaign"), {}, "not_found"),  # it would be ok
        (PoolRules(reveal="campaign", min_order=100), {}, "not_found"),
        (PoolRules(reveal="campaign", starts_at=now + timedelta(days=1)), {}, "not_found"),
        (PoolRules(reveal="campaign", currency="GBP"), {}, "not_found"),
        (PoolRules(reveal="campaign", uses_per_customer=1), {}, "not_found"),
        (PoolRules(reveal="campaign", expires_at=now - timedelta(days=1)), {}, "expired"),
    ]
    for n, (rules, kwargs, expected) in enumerate(cases):
        [code] = pool_of(store, rules, pool=f"secret-{n}")
        assert reason(attempt(store, code, **kwargs)) == expected, rules
    spent = pool_of(store, PoolRules(reveal="campaign", budget=1), count=2, pool="secret-budget")
    held = issue_code(store, SHOP, "secret-budget", "visitor-a")
    assert attempt(store, held, order_id="real")["ok"]
    other = next(c for c in spent if c != held)
    assert reason(attempt(store, other, order_id="guess")) == "usage_limit_reached"

    [code] = pool_of(store, PoolRules(reveal="campaign", min_order=100), pool="shown")
    assert reason(attempt(store, code, order_id="before")) == "not_found"
    assert issue_code(store, SHOP, "shown", "visitor-b") == code
    assert reason(attempt(store, code, order_id="after")) == "order_below_minimum"  # shown: its reasons are told


def test_the_same_order_again_gets_the_same_answer_and_counts_once(services) -> None:
    store = services.store
    [code] = pool_of(store, PoolRules(uses_per_code=2))
    first = attempt(store, code, order_id="order-7", value=40)
    assert first["ok"]
    assert attempt(store, code, order_id="order-7", value=40) == first
    assert attempt(store, code.lower(), order_id="order-7", value=40) == first
    assert attempt(store, code, order_id="order-8", value=40)["ok"]  # its second use
    assert reason(attempt(store, code, order_id="order-9")) == "already_redeemed"
    assert attempt(store, code, order_id="order-7", value=40) == first  # still its own answer
    log = store.coupon_log(SHOP)
    assert [(r["order_id"], r["result"], r["replay"]) for r in log] == [
        ("order-7", "ok", False), ("order-7", "ok", True), ("order-7", "ok", True), ("order-8", "ok", False),
        ("order-9", "already_redeemed", False), ("order-7", "ok", True)]
    [stats] = store.coupon_stats(SHOP)
    assert stats["redeemed"] == 2 and stats["revenue"] == 80.0 and stats["failures"] == {"already_redeemed": 1}


def test_the_log_and_the_stats_per_pool(services) -> None:
    store = services.store
    codes = pool_of(store, PoolRules(reveal="campaign", min_order=10), count=4, pool="welcome")
    shown = [issue_code(store, SHOP, "welcome", f"v-{n}") for n in range(2)]
    assert attempt(store, shown[0], order_id="a", value=30)["ok"]
    assert reason(attempt(store, shown[1], order_id="b", value=5)) == "order_below_minimum"
    assert reason(attempt(store, "WHATEVER", order_id="c")) == "not_found"
    [stats] = store.coupon_stats(SHOP)
    assert stats == {"pool": "welcome", "codes": 4, "issued": 2, "redeemed": 1, "redemption_rate": 0.5,
                     "revenue": 30.0, "discounts": 3.0, "failures": {"order_below_minimum": 1}}
    log = store.coupon_log(SHOP)
    assert [(r["code"], r["pool"], r["order_id"], r["order_value"], r["result"]) for r in log] == [
        (shown[0], "welcome", "a", 30.0, "ok"), (shown[1], "welcome", "b", 5.0, "order_below_minimum"),
        ("WHATEVER", None, "c", 50.0, "not_found")]
    assert all(isinstance(r["ts"], datetime) for r in log) and set(shown) <= set(codes)


# -- issuing -------------------------------------------------------------------------
def test_a_visitor_gets_one_code_again_and_again_and_never_anothers(services) -> None:
    store = services.store
    codes = pool_of(store, PoolRules(reveal="campaign"), count=3, pool="welcome")
    alice = issue_code(store, SHOP, "welcome", "alice")
    assert issue_code(store, SHOP, "welcome", "alice") == alice
    bob = issue_code(store, SHOP, "welcome", "bob")
    carol = issue_code(store, SHOP, "welcome", "carol")
    assert len({alice, bob, carol}) == 3 and {alice, bob, carol} == set(codes)
    assert issue_code(store, SHOP, "welcome", "dave") is None  # none left
    assert issue_code(store, SHOP, "welcome", "bob") == bob
    assert issue_code(store, SHOP, "no-such-pool", "bob") is None
    with pytest.raises(ValueError, match="one visitor"):
        issue_code(store, SHOP, "welcome", ANONYMOUS_VISITOR)


def test_codes_are_issued_from_anywhere_in_the_pool_not_in_order(services) -> None:
    # In code order, one holder's code would bound everyone else's; five picks landing on the
    # five lowest of forty by chance: about one in 650,000.
    store = services.store
    codes = sorted(pool_of(store, PoolRules(reveal="campaign"), count=40, pool="spread"))
    issued = {issue_code(store, SHOP, "spread", f"v{n}") for n in range(5)}
    assert len(issued) == 5 and issued != set(codes[:5])
    assert len({issue_code(store, SHOP, "spread", f"w{n}") for n in range(35)}) == 35  # every code still reachable
    assert issue_code(store, SHOP, "spread", "late") is None


def test_an_audience_pool_issues_only_to_visitors_in_it(services) -> None:
    store = services.store
    codes = pool_of(store, PoolRules(audience="prospect"), count=2, pool="prospects")
    assert issue_code(store, SHOP, "prospects", "v1", audiences=["new"]) is None
    code = issue_code(store, SHOP, "prospects", "v1", audiences=["new", "prospect"])
    assert code in codes
    assert issue_code(store, SHOP, "prospects", "v1", audiences=["customer"]) == code  # theirs, once shown
    assert issue_code(store, SHOP, "prospects", "v2", audiences=["customer"]) is None
    assert attempt(store, code)["ok"]


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'coupons.db'}"
    return request.getfixturevalue("postgres_url")


def migrated(url: str):
    store = open_store(url, busy_timeout_ms=15000)
    store.migrate()
    return store


def test_visitors_issued_at_the_same_moment_never_share_a_code(store_url: str) -> None:
    store = migrated(store_url)
    try:
        pool_of(store, PoolRules(reveal="campaign"), count=30, pool="welcome")
        start = threading.Barrier(24)
        got: dict[str, str | None] = {}
        again: list[str | None] = []

        def take(visitor: str, into) -> None:
            start.wait()
            into(issue_code(store, SHOP, "welcome", visitor))

        # 20 visitors, and the first of them four more times, all at the same moment.
        threads = [threading.Thread(target=take, args=(f"v{n}", lambda c, n=n: got.__setitem__(f"v{n}", c)))
                   for n in range(20)]
        threads += [threading.Thread(target=take, args=("v0", again.append)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        codes = [got[f"v{n}"] for n in range(20)]
        assert None not in codes and len(set(codes)) == 20
        assert again == [got["v0"]] * 4
        with store.engine.connect() as conn:
            issued = conn.execute(sa.select(coupon_issues.c.visitor_id, coupon_issues.c.code)).all()
            shown = conn.execute(sa.select(sa.func.count()).select_from(coupon_codes).where(
                coupon_codes.c.issued_at.is_not(None))).scalar()
        assert len(issued) == 20 and shown == 20  # v0's other calls took no code of their own
    finally:
        store.close()


def _redeem_in_process(url: str, code: str, first: int, threads: int, start, results) -> None:
    store = open_store(url, busy_timeout_ms=15000)

    def one(n: int) -> None:
        start.wait()
        answer = attempt(store, code, order_id=f"order-{n}")
        results.put(reason(answer))

    workers = [threading.Thread(target=one, args=(first + n,)) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(60)
    store.close()


def test_fifty_redemptions_of_a_single_use_code_at_once_give_one_ok(store_url: str) -> None:
    """Five processes of ten threads each, all released at once: exactly one ok, and the
    code counted used once."""
    store = migrated(store_url)
    [code] = pool_of(store, PoolRules(uses_per_code=1))
    store.close()  # no connection of this process crosses into the others
    fork = multiprocessing.get_context("fork")
    start, results = fork.Barrier(50), fork.Queue()
    processes = [fork.Process(target=_redeem_in_process, args=(store_url, code, p * 10, 10, start, results))
                 for p in range(5)]
    for p in processes:
        p.start()
    answers = [results.get(timeout=60) for _ in range(50)]
    for p in processes:
        p.join(30)
    assert sorted(answers) == ["already_redeemed"] * 49 + ["ok"]
    store = open_store(store_url)
    try:
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(coupon_codes.c.uses)).scalar() == 1
            assert conn.execute(sa.select(coupon_pools.c.redeemed)).scalar() == 1
            assert conn.execute(sa.select(sa.func.count()).select_from(coupon_redemptions)).scalar() == 50
    finally:
        store.close()


def test_the_same_order_sent_at_once_from_many_threads_counts_once(store_url: str) -> None:
    store = migrated(store_url)
    try:
        [code] = pool_of(store, PoolRules(uses_per_code=3))
        start, answers = threading.Barrier(10), []

        def one() -> None:
            start.wait()
            answers.append(attempt(store, code, order_id="same-order"))

        threads = [threading.Thread(target=one) for _ in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert len(answers) == 10 and all(a == answers[0] for a in answers) and answers[0]["ok"]
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(coupon_codes.c.uses)).scalar() == 1
    finally:
        store.close()


# -- the server-to-server API --------------------------------------------------------
def key_of(services, shop: str = SHOP) -> str:
    return services.shop_keys.key(shop)


def post(client, body: dict | str, key: str | None, query: str = "?shop=demo", **headers: str):
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    content = body if isinstance(body, str) else json.dumps(body)
    return client.post(f"/v1/coupons/redeem{query}", content=content,
                       headers={"Content-Type": "application/json", **headers})


ORDER = {"order_id": "web-1", "order_value": 42.0, "currency": "eur"}


def test_redeem_over_http_with_the_shops_key(client, services) -> None:
    [code] = pool_of(services.store, PoolRules(kind="amount", value=5, currency="EUR"))
    answer = post(client, {"code": code, **ORDER}, key_of(services))
    assert answer.status_code == 200 and answer.headers["cache-control"] == "no-store"
    assert answer.json() == {"ok": True, "code": code, "pool": "p", "discount": {
        "kind": "amount", "value": 5.0, "amount": 5.0, "applies_to": 42.0, "currency": "EUR",
        "free_shipping": False}}
    again = post(client, {"code": code, **ORDER, "order_id": "web-2", "shop": "demo"}, key_of(services), query="")
    assert again.status_code == 200 and again.json() == {"ok": False, "reason": "already_redeemed"}


def test_the_key_missing_wrong_or_another_shops_is_a_401(client, services) -> None:
    [code] = pool_of(services.store)
    body = {"code": code, **ORDER}
    missing = post(client, body, None)
    assert missing.status_code == 401 and "missing key" in missing.json()["error"]
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = post(client, body, key_of(services)[:-2] + "xx")
    assert wrong.status_code == 401 and "wrong key for shop 'demo'" in wrong.json()["error"]
    other = post(client, body, derive_key("test-key-1", "other-shop", 0))
    assert other.status_code == 401
    in_body = post(client, {**body, "shop": "demo"}, derive_key("test-key-1", "other-shop", 0), query="")
    assert in_body.status_code == 401
    basic = post(client, body, None, Authorization="Basic " + key_of(services))
    assert basic.status_code == 401 and "Bearer" in basic.json()["error"]
    assert services.store.coupon_log(SHOP) == []  # nothing was tried
    rotated = key_of(services)
    services.shop_keys.rotate(SHOP)
    assert post(client, body, rotated).status_code == 401
    assert post(client, body, key_of(services)).json()["ok"]


def test_malformed_bodies_are_4xx_with_a_message(client, services) -> None:
    key = key_of(services)
    cases = [
        ("{not json", 400, "invalid JSON"),
        (json.dumps({"code": "ABC"}), 422, "order_id"),
        (json.dumps({**ORDER, "code": "ABC", "order_value": -1}), 422, "order_value"),
        (json.dumps({**ORDER, "code": "ABC", "currency": "euro"}), 422, "currency"),
        (json.dumps({**ORDER, "code": " - "}), 422, "code"),
        (json.dumps({**ORDER, "code": "ABC", "extra": 1}), 422, "extra"),
        (json.dumps({**ORDER, "code": "ABC", "items": [{"item_id": "x"}]}), 422, "items.0.price"),
        (json.dumps([1, 2]), 422, "body"),
        ('{"code": "ABC", "order_id": "o", "order_value": NaN, "currency": "EUR"}', 422, "finite number"),
    ]
    for text, status, words in cases:
        response = post(client, text, key)
        assert response.status_code == status, (text, response.text)
        assert words in response.json()["error"], (text, response.text)
    assert post(client, "", key).status_code == 400
    unknown = post(client, {"code": "ABC", **ORDER}, key, query="?shop=nope")
    assert unknown.status_code == 404
    differ = post(client, {"code": "ABC", **ORDER, "shop": "other"}, key)
    assert differ.status_code == 400 and "differ" in differ.json()["error"]


def test_the_api_is_never_usable_from_a_browser(client, services) -> None:
    [code] = pool_of(services.store)
    origin = "http://127.0.0.1:8000"  # the demo shop's own origin: CORS would allow it elsewhere
    preflight = client.options("/v1/coupons/redeem?shop=demo", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type"})
    assert preflight.status_code == 403
    assert not [h for h in preflight.headers if h.lower().startswith("access-control-")]
    from_page = post(client, {"code": code, **ORDER}, key_of(services), Origin=origin)
    assert from_page.status_code == 403 and "server-to-server" in from_page.json()["error"]
    assert not [h for h in from_page.headers if h.lower().startswith("access-control-")]
    assert services.store.coupon_log(SHOP) == []
    # The other endpoints still answer the shop's origin with CORS.
    page = client.options("/v1/page?shop=demo", headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
    assert page.headers["access-control-allow-origin"] == origin
    assert post(client, {"code": code, **ORDER}, key_of(services)).json()["ok"]


# -- a visitor's data ----------------------------------------------------------------
def test_the_visitors_codes_are_in_their_export_and_go_with_them(client, services) -> None:
    token = visit(client)
    visitor = services.signer.visitor_id(SHOP, token)
    pool_of(services.store, PoolRules(reveal="campaign"), count=2, pool="welcome")
    code = issue_code(services.store, SHOP, "welcome", visitor)
    exported = me(client, token).json()
    assert [(r["pool"], r["code"]) for r in exported["coupon_issues"]] == [("welcome", code)]
    assert me(client, token, "DELETE").status_code == 204
    assert places_naming(services.store.engine, visitor) == []
    # The code stays shown: never issued to anyone else, and still redeemable by its holder.
    assert issue_code(services.store, SHOP, "welcome", "someone-else") != code
    assert issue_code(services.store, SHOP, "welcome", "a-third") is None  # the pool's two codes are shown
    assert attempt(services.store, code)["ok"]


def test_a_customers_redemptions_are_in_their_export_and_deleted_with_them(services) -> None:
    store = services.store
    [code] = pool_of(store, PoolRules(uses_per_customer=2), count=1)
    assert attempt(store, code, customer="cust-42")["ok"]
    exported = export_customer(store, SHOP, "cust-42")
    assert [(r["code"], r["order_id"], r["result"]) for r in exported["coupon_redemptions"]] == [(code, "o-1", "ok")]
    delete_customer(store, SHOP, "cust-42")
    assert places_naming(store.engine, "cust-42") == []


def test_the_coupon_tables_are_the_visitors_data_and_the_migration_makes_them(tmp_path: Path) -> None:
    assert {"coupon_issues", "coupon_redemptions"} <= {t.name for t in SqlStore.VISITOR_TABLES}
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    store = migrated(f"sqlite:///{tmp_path / 'm.db'}")
    try:
        with store.engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), metadata)
    finally:
        store.close()
    ours = [d for d in diff if "coupon" in repr(d)]
    assert ours == []


# -- the CLI -------------------------------------------------------------------------
def vitrine(settings, *args: str):
    env = {"VITRINE_SECRET_KEYS": "test-key-1", "VITRINE_DATABASE_URL": settings.resolved_database_url}
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "coupons", *args], env=env)


def test_cli_create_redeem_log(settings, services) -> None:
    made = vitrine(settings, "create", "--shop", SHOP, "--pool", "welcome", "--count", "3", "--prefix", "WELCOME-",
                   "--kind", "amount", "--value", "5", "--min-order", "20", "--expires", "2099-12-31",
                   "--uses-per-customer", "1", "--json")
    assert made.exit_code == 0, made.output
    codes = json.loads(made.stdout)
    assert len(codes) == 3 and all(c.startswith("WELCOME-") and len(c) == 16 for c in codes)
    rules = services.store.coupon_pool(SHOP, "welcome")
    assert (rules["kind"], rules["value"], rules["min_order"], rules["uses_per_code"], rules["uses_per_customer"]) == (
        "amount", 5.0, 20.0, 1, 1)
    assert rules["expires_at"] == datetime(2100, 1, 1)  # through that day, in the shop's zone (UTC)
    refused = vitrine(settings, "create", "--shop", SHOP, "--pool", "welcome", "--count", "1", "--min-order", "30")
    assert refused.exit_code == 2 and "exists with other rules" in refused.stderr

    ok = vitrine(settings, "redeem", codes[0].lower(), "--shop", SHOP, "--order-id", "o1", "--order-value", "25",
                 "--currency", "GBP", "--customer", "c1", "--json")
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout) == {"ok": True, "code": codes[0], "pool": "welcome", "discount": {
        "kind": "amount", "value": 5.0, "amount": 5.0, "applies_to": 25.0, "currency": "GBP",
        "free_shipping": False}}
    low = vitrine(settings, "redeem", codes[1], "--shop", SHOP, "--order-id", "o2", "--order-value", "10",
                  "--customer", "c2", "--json")
    assert low.exit_code == 1 and json.loads(low.stdout) == {"ok": False, "reason": "order_below_minimum"}

    log = vitrine(settings, "log", "--shop", SHOP, "--csv")
    assert log.exit_code == 0
    lines = log.stdout.splitlines()
    assert lines[0] == "ts,code,pool,order_id,order_value,currency,customer_id,result,replay,discount"
    assert [line.split(",")[1:] for line in lines[1:]] == [
        [codes[0], "welcome", "o1", "25.0", "GBP", "c1", "ok", "False", "5.0"],
        [codes[1], "welcome", "o2", "10.0", "GBP", "c2", "order_below_minimum", "False", ""]]
    as_json = json.loads(vitrine(settings, "log", "--shop", SHOP).stdout)
    assert [r["result"] for r in as_json] == ["ok", "order_below_minimum"]
    bad = vitrine(settings, "redeem", codes[1], "--shop", SHOP, "--order-id", "o3", "--order-value", "-5")
    assert bad.exit_code == 2 and "order_value" in bad.stderr
    unknown = vitrine(settings, "log", "--shop", "nope")
    assert unknown.exit_code == 2 and "unknown shop" in unknown.stderr


def test_cli_import_reads_a_csv_and_names_the_lines_of_broken_rows(settings, services, tmp_path: Path) -> None:
    good = tmp_path / "codes.csv"
    good.write_text("code,note\nSPRING-AAA1,x\nspring-bbb2,y\n\nSPRING CCC3,z\n")
    done = vitrine(settings, "import", str(good), "--shop", SHOP, "--pool", "spring", "--kind", "percent",
                   "--value", "20")
    assert done.exit_code == 0, done.output
    assert "Imported 3 codes into new pool 'spring'" in done.stdout
    assert attempt(services.store, "springbbb2")["ok"]
    assert attempt(services.store, "SPRING-CCC3", order_id="o-2")["discount"]["value"] == 20

    broken = tmp_path / "broken.csv"
    broken.write_text('code,note\nFALL-1,a\n\nfall 1,b\n"bad%code",c\n,d\nSPRING-AAA1,e\nFALL-2,f\n')
    failed = vitrine(settings, "import", str(broken), "--shop", SHOP, "--pool", "fall")
    assert failed.exit_code == 2
    assert f"{broken}:4: code 'fall 1' is given twice (first on line 2" in failed.stderr
    assert f"{broken}:5: code 'bad%code' has characters other than" in failed.stderr
    assert f"{broken}:6: empty code" in failed.stderr
    assert "Nothing was imported." in failed.stderr
    assert services.store.coupon_pool(SHOP, "fall") is None  # a broken file makes no pool
    taken = tmp_path / "taken.csv"
    taken.write_text("code\nFALL-9\nspring-aaa1\n")
    with pytest.raises(ImportFailed, match=r"taken.csv:3: code 'spring-aaa1' is already in pool 'spring'"):
        rules, _ = ensure_pool(services.store, SHOP, "fall", None)
        import_codes(services.store, SHOP, "fall", rules, taken)
    assert services.store.coupon_codes_taken(SHOP, ["FALL9"]) == {}
    with pytest.raises(ImportFailed, match="missing required column code"):
        read_codes(_write(tmp_path / "none.csv", "coupon\nA\n"))


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- generated bodies ----------------------------------------------------------------

_any = st.one_of(st.none(), st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                 st.text(max_size=140), st.lists(st.integers(), max_size=3))
_line = st.fixed_dictionaries({}, optional={"item_id": _any, "price": _any, "quantity": _any, "category": _any})
_body = st.one_of(_any, st.fixed_dictionaries({}, optional={
    "code": st.one_of(st.text(max_size=90), _any), "order_id": st.one_of(st.text(min_size=1, max_size=140), _any),
    "order_value": st.one_of(st.floats(), _any), "currency": st.one_of(st.sampled_from(["EUR", "gbp", "EURO"]), _any),
    "customer_id": _any, "shop": st.one_of(st.just("demo"), _any), "items": st.one_of(st.lists(_line, max_size=3), _any),
}))


def test_generated_bodies_never_get_a_5xx(settings, store_url: str) -> None:
    """Bodies of every shape, with the key, on both stores: a 4xx with a message or an answer."""
    import dataclasses

    from starlette.testclient import TestClient

    from server.app import build_services, create_app

    settings = dataclasses.replace(settings, database_url=store_url)
    services = build_services(settings)
    try:
        [code] = pool_of(services.store, PoolRules(uses_per_code=1_000_000, categories=("Gifts",)))
        client = TestClient(create_app(settings, services), raise_server_exceptions=True)
        key = key_of(services)

        @hypothesis_settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
        @given(body=_body, real_code=st.booleans())
        def check(body, real_code: bool) -> None:
            if real_code and isinstance(body, dict):
                body = {**body, "code": code}
            response = post(client, json.dumps(body, allow_nan=True), key)
            assert response.status_code < 500, response.text
            assert response.status_code == 200 or response.json()["error"]

        check()
    finally:
        services.close()


# -- the dashboard -------------------------------------------------------------------
def test_the_dashboard_shows_each_pool(client, settings, services) -> None:
    from test_admin import add_user, sign_in

    store = services.store
    pool_of(store, PoolRules(reveal="campaign", min_order=10), count=4, pool="welcome")
    held = [issue_code(store, SHOP, "welcome", f"v-{n}") for n in range(2)]
    assert attempt(store, held[0], order_id="a", value=30)["ok"]
    assert reason(attempt(store, held[1], order_id="b", value=5)) == "order_below_minimum"
    assert add_user(settings).exit_code == 0
    assert client.get("/admin/demo/coupons.json").status_code == 401
    assert sign_in(client).status_code == 303
    [pool] = client.get("/admin/demo/coupons.json").json()["pools"]
    assert (pool["pool"], pool["issued"], pool["redeemed"], pool["redemption_rate"], pool["revenue"]) == (
        "welcome", 2, 1, 0.5, 30.0)
    page = client.get("/admin/demo/coupons")
    assert page.status_code == 200
    row = re.search(r'<th scope="row">welcome</th>(.*?)</tr>', page.text).group(1)
    cells = re.findall(r"<td[^>]*>(.*?)</td>", row)
    assert cells == ["4", "2", "1", "50.0%", "30.00", "3.00", "order_below_minimum: 1"]
    assert 'href="/admin/demo/coupons" aria-current="page"' in page.text


def test_cli_issue_gives_a_customer_one_code_of_a_pool(settings, services) -> None:
    made = vitrine(settings, "create", "--shop", SHOP, "--pool", "sorry", "--count", "2", "--kind", "amount",
                   "--value", "10", "--reveal", "campaign", "--json")
    assert made.exit_code == 0, made.output
    first = vitrine(settings, "issue", "--shop", SHOP, "--pool", "sorry", "--customer", "c9", "--json")
    assert first.exit_code == 0, first.output
    answer = json.loads(first.stdout)
    assert answer["code"] in json.loads(made.stdout) and answer["customer_id"] == "c9"
    assert vitrine(settings, "issue", "--shop", SHOP, "--pool", "sorry", "--customer", "c9").stdout.strip() == answer["code"]
    assert services.store.held_coupons(SHOP, ["u:c9"]) == {"sorry": answer["code"]}
    missing = vitrine(settings, "issue", "--shop", SHOP, "--pool", "nope", "--customer", "c9")
    assert missing.exit_code == 2 and "no coupon pool 'nope'" in missing.stderr
