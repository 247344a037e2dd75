"""A popup's own code per visitor (`coupon_pool`, POST /v1/reveal): the demo's welcome popup
reveals each visitor a single-use code of its pool, the same one again, never another's;
the shop's checkout then redeems it through the server-to-server API."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.campaigns import decide
from server.promotions.codes import Pattern
from server.promotions.pools import ensure_pool, generate_codes
from server.promotions.rules import PoolRules

from conftest import UK_IP, stored

from test_leads import ORIGIN, visit

pytestmark = pytest.mark.usefixtures("demo_pools")  # the demo's coupon pools, as `vitrine demo` makes them


def reveal(client, token: str | None, campaign: str = "welcome", ip: str = UK_IP, **extra):
    body = {"shop": "demo", "token": token, "campaign": campaign, **extra}
    response = client.post("/v1/reveal?shop=demo", json=body, headers={"X-Forwarded-For": ip, "Origin": ORIGIN})
    client.cookies.clear()
    return response


def redeem(client, services, code: str, order_id: str, value: float = 40.0):
    response = client.post("/v1/coupons/redeem?shop=demo", json={
        "code": code, "order_id": order_id, "order_value": value, "currency": "GBP",
    }, headers={"Authorization": f"Bearer {services.shop_keys.key('demo')}"})
    assert response.status_code == 200, response.text
    return response.json()


def test_each_visitor_reveals_their_own_code_and_the_checkout_redeems_it_once(client, services) -> None:
    ann, bo = visit(client)["token"], visit(client)["token"]
    first = reveal(client, ann)
    assert first.status_code == 200, first.text
    assert first.headers["access-control-allow-origin"] == ORIGIN
    code = first.json()["code"]
    assert code.startswith("WELCOME-") and first.json()["reveal_text"] == "Your own code, for one order:"
    assert reveal(client, ann).json()["code"] == code  # the same one again
    other = reveal(client, bo).json()["code"]
    assert other.startswith("WELCOME-") and other != code

    # Ann's data holds her code; the checkout redeems it once, the discount the pool's 10%.
    mine = client.get("/v1/me?shop=demo", headers={"X-Visitor-Token": ann}).json()
    assert [(i["pool"], i["code"]) for i in mine["coupon_issues"]] == [("welcome", code.replace("-", ""))]  # stored form
    ok = redeem(client, services, code.lower().replace("-", " "), "order-1")  # as a shopper might type it
    assert ok["ok"] is True and ok["discount"]["amount"] == pytest.approx(4.0)
    assert redeem(client, services, code, "order-1") == ok  # the same order again: the same answer
    assert redeem(client, services, code, "order-2") == {"ok": False, "reason": "already_redeemed"}
    log = stored(services).coupon_log("demo")
    assert [(r["order_id"], r["result"]) for r in log] == [("order-1", "ok"), ("order-1", "ok"), ("order-2", "already_redeemed")]


def test_the_popup_asks_for_consent_a_token_and_a_campaign_with_a_pool(client, services) -> None:
    no_token = reveal(client, None)
    assert no_token.status_code == 403 and "needs the token of a visitor who consented" in no_token.json()["error"]
    token = visit(client)["token"]
    refused = reveal(client, token, consent={"personalization": False, "analytics": False})
    assert refused.status_code == 403
    for campaign in ("uk-delivery", "newsletter", "nope"):  # a banner, a sign-up (its code comes with it), none
        r = reveal(client, token, campaign=campaign)
        assert r.status_code == 404 and "reveals a code of a coupon pool" in r.json()["error"], r.text
    assert reveal(client, token, colour="red").status_code == 422
    bad = client.post("/v1/reveal?shop=demo", content=b"{not json", headers={"Origin": ORIGIN, "X-Forwarded-For": UK_IP})
    assert bad.status_code == 400
    assert {s["pool"]: s["issued"] for s in stored(services).coupon_stats("demo")}["welcome"] == 0


def test_a_pool_with_no_code_left_says_so_and_how_to_add_some(client, services) -> None:
    store = services.store
    rules, _ = ensure_pool(store, "demo", "tiny", PoolRules(kind="amount", value=5.0, reveal="campaign"))
    generate_codes(store, "demo", "tiny", rules, 1, Pattern("TINY-"))
    # The welcome popup, drawing from a pool of one code.
    path = services.settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text().replace('coupon_pool = "welcome"', 'coupon_pool = "tiny"'))
    first = reveal(client, visit(client)["token"])
    assert first.status_code == 200 and first.json()["code"].startswith("TINY-")
    second = reveal(client, visit(client)["token"])
    assert second.status_code == 409
    assert second.json()["error"] == ("pool 'tiny' has no code left for this visitor "
                                      "(`vitrine coupons create --shop demo --pool tiny --count N` adds some)")


def test_without_consent_the_popup_is_not_offered_unless_it_has_a_code_for_everyone(client, services, settings) -> None:
    page = client.post("/v1/page?shop=demo", json={
        "shop": "demo", "page": {"type": "home", "url": "https://shop.example/"}, "slots": [],
        "consent": {"personalization": False, "analytics": False}}, headers={"X-Forwarded-For": UK_IP})
    assert "welcome" not in [p["campaign"] for p in page.json()["popups"]]
    path: Path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text().replace('coupon_pool = "welcome"', 'coupon_pool = "welcome"\ncode = "WELCOME10"'))
    page = client.post("/v1/page?shop=demo", json={
        "shop": "demo", "page": {"type": "home", "url": "https://shop.example/"}, "slots": [],
        "consent": {"personalization": False, "analytics": False}}, headers={"X-Forwarded-For": UK_IP})
    [welcome] = [p for p in page.json()["popups"] if p["campaign"] == "welcome"]
    assert "WELCOME10" in welcome["html"] and "data-vitrine-issue" not in welcome["html"]
    assert reveal(client, None, consent={"personalization": False}).json()["code"] == "WELCOME10"


def test_reveals_are_limited_per_address(client) -> None:
    answers = [reveal(client, visit(client)["token"], ip="81.2.69.161").status_code for _ in range(21)]
    assert answers[:20] == [200] * 20 and answers[20] == 429


def test_a_visitor_deleted_at_their_request_gets_no_code(client) -> None:
    token = visit(client)["token"]
    assert client.delete("/v1/me?shop=demo", headers={"X-Visitor-Token": token}).status_code == 204
    gone = reveal(client, token)
    assert gone.status_code == 403 and "deleted at their request" in gone.json()["error"]


def test_the_reason_says_why_a_visitor_without_consent_is_not_offered_the_popup(services) -> None:
    from server.consent.rules import ConsentDecision, ConsentIn
    from test_campaigns import visitor

    welcome = services.shop("demo").campaign("welcome")
    refused = ConsentDecision(False, False, True, "required", "", ConsentIn(), False)
    import dataclasses

    d = decide(welcome, dataclasses.replace(visitor(), consent=refused))
    assert not d.show and ("no: reveals each visitor their own code of pool welcome, which needs a visitor with consent "
                           "to personalization (a fallback for the others: code = ...)") in d.reasons


# -- apology coupons: the shop's backend issues a code to a customer ---------------------
def identified(client, services, customer: str) -> str:
    from server.customers.keys import sign

    body = {"shop": "demo", "page": {"type": "home", "url": "https://shop.example/"}, "slots": [],
            "identify": {"id": customer, "signature": sign(services.shop_keys.key("demo"), customer)}}
    r = client.post("/v1/page?shop=demo", json=body, headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200 and r.json()["identify"]["identified"], r.text
    client.cookies.clear()
    return r.json()["token"]


def issue(client, services, body: dict, key: str | None = "shop"):
    headers = {"Authorization": f"Bearer {services.shop_keys.key('demo')}"} if key == "shop" else (
        {"Authorization": f"Bearer {key}"} if key else {})
    return client.post("/v1/coupons/issue?shop=demo", json=body, headers=headers)


def page_popups(client, token: str) -> list[str]:
    r = client.post("/v1/page?shop=demo", json={"shop": "demo", "page": {"type": "home", "url": "https://shop.example/"},
                    "slots": []}, headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token})
    client.cookies.clear()
    return [p["campaign"] for p in r.json()["popups"]]


def test_an_apology_coupon_issued_to_a_customer_shows_on_their_next_visit_until_used(client, services) -> None:
    from server.models import Customer

    services.store.import_customers("demo", [Customer("c-late", first_name="Lou"), Customer("c-fine", first_name="Al")])
    lou, al = identified(client, services, "c-late"), identified(client, services, "c-fine")
    assert "apology" not in page_popups(client, lou)

    given = issue(client, services, {"customer_id": "c-late", "pool": "sorry"})
    assert given.status_code == 200, given.text
    code = given.json()["code"]
    assert code.startswith("SORRY-") and given.json() == {"ok": True, "customer_id": "c-late", "pool": "sorry", "code": code}
    assert issue(client, services, {"customer_id": "c-late", "pool": "sorry"}).json()["code"] == code  # not a second one

    shown = page_popups(client, lou)
    assert shown[0] == "apology" and "apology" not in page_popups(client, al)
    revealed = reveal(client, lou, campaign="apology")
    assert revealed.status_code == 200 and revealed.json()["code"] == code  # the customer's code, not a new one
    assert reveal(client, al, campaign="apology").status_code == 409  # nothing issued to Al: nothing to show

    assert redeem(client, services, code, "order-9", 30.0)["discount"]["amount"] == pytest.approx(10.0)
    assert "apology" not in page_popups(client, lou)  # used: no longer offered


def test_issuing_needs_the_shops_key_a_pool_and_a_customer(client, services) -> None:
    assert issue(client, services, {"customer_id": "c1", "pool": "sorry"}, key=None).status_code == 401
    assert issue(client, services, {"customer_id": "c1", "pool": "sorry"}, key="vsk_wrong").status_code == 401
    missing = issue(client, services, {"customer_id": "c1", "pool": "nope"})
    assert missing.status_code == 404 and "no coupon pool 'nope'" in missing.json()["error"]
    assert issue(client, services, {"customer_id": "c1"}).status_code == 422
    assert issue(client, services, {"customer_id": "c1", "pool": "bad pool!"}).status_code == 422
    browser = client.post("/v1/coupons/issue?shop=demo", json={"customer_id": "c1", "pool": "sorry"}, headers={
        "Authorization": f"Bearer {services.shop_keys.key('demo')}", "Origin": ORIGIN})
    assert browser.status_code == 403 and "access-control-allow-origin" not in browser.headers


def test_holds_coupon_needs_a_coupon_pool(tmp_path: Path) -> None:
    from server.shops import ShopConfigError, parse_shop_config

    path = tmp_path / "shop.toml"
    path.write_text('origins = ["https://shop.example"]\n[[campaigns]]\nid = "a"\nwidget = "popup"\ntitle = "Sorry"\n'
                    '[campaigns.audience]\nholds_coupon = true\n')
    with pytest.raises(ShopConfigError, match="holds_coupon needs the campaign's coupon_pool"):
        parse_shop_config("shop", path)


def test_only_an_identified_customers_page_call_reads_the_coupons(client, services) -> None:
    import sqlalchemy as sa

    from server.models import Customer

    services.store.import_customers("demo", [Customer("c-any", first_name="Cy")])
    anonymous, customer = visit(client)["token"], identified(client, services, "c-any")
    statements: list[str] = []
    sa.event.listen(services.store.engine, "before_cursor_execute",
                    lambda conn, cursor, statement, *rest: statements.append(statement))
    page_popups(client, anonymous)
    assert not [s for s in statements if "coupon_issues" in s]
    page_popups(client, customer)
    assert [s for s in statements if "coupon_issues" in s]


def test_a_banner_with_a_pool_shows_each_visitor_their_own_code(client, services, settings) -> None:
    path: Path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text().replace('''id = "uk-delivery"''', '''id = "uk-delivery"
coupon_pool = "welcome"
reveal_text = "Your code:"''', 1))

    def top(token: str | None = None, **headers: str) -> str:
        r = client.post("/v1/page?shop=demo", json={"shop": "demo", "page": {"type": "home", "url": "https://shop.example/"},
                        "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]},
                        headers={"X-Forwarded-For": UK_IP, **({"X-Visitor-Token": token} if token else {}), **headers})
        client.cookies.clear()
        return r.json()

    first = top()  # a new visitor: their code on their very first page
    token, html = first["token"], first["fragments"]["top"]["html"]
    code = html.split('class="vitrine-code">')[1].split("<")[0]
    assert code.startswith("WELCOME-")
    assert code in top(token)["fragments"]["top"]["html"]  # the same one on the next page
    other = top()["fragments"]["top"]["html"]
    assert "WELCOME-" in other and code not in other
    assert stored(services).held_coupons("demo", [services.signer.visitor_id("demo", token)]) == {"welcome": code}
    # A crawler takes no code from the pool; a visitor without consent sees none either.
    bot = top(**{"User-Agent": "Googlebot/2.1 (+http://www.google.com/bot.html)"})["fragments"]["top"]["html"]
    assert 'class="vitrine-code"' not in bot
    refused = client.post("/v1/page?shop=demo", json={
        "shop": "demo", "page": {"type": "home", "url": "https://shop.example/"},
        "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}],
        "consent": {"personalization": False, "analytics": False}}, headers={"X-Forwarded-For": UK_IP}).json()
    assert 'class="vitrine-code"' not in refused["fragments"].get("top", {}).get("html", "")
