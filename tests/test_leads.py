"""POST /v1/leads: the demo's two-step sign-up popup ("newsletter") through the real app: a
valid sign-up is stored, answered with the reward and makes the visitor a prospect; without
consent it is kept unlinked; bad input gets a clear 4xx; a visitor's leads are theirs to see
and delete."""

from __future__ import annotations

import pytest

from conftest import UK_IP, stored


ORIGIN = "http://127.0.0.1:8000"  # one of the demo shop's origins
CODE = "HELLO-"  # the prefix of the demo's sign-up pool: each visitor's own code

pytestmark = pytest.mark.usefixtures("demo_pools")  # the demo's coupon pools, as `vitrine demo` makes them


def visit(client, token: str | None = None, consent: dict | None = None) -> dict:
    body = {"shop": "demo", "page": {"type": "home", "url": "https://shop.example/"}, "slots": []}
    if consent is not None:
        body["consent"] = consent
    response = client.post("/v1/page?shop=demo", json=body, headers={
        "X-Forwarded-For": UK_IP, **({"X-Visitor-Token": token} if token else {})})
    assert response.status_code == 200, response.text
    client.cookies.clear()
    return response.json()


def sign_up(client, token: str | None = None, ip: str = UK_IP, **fields):
    body = {"shop": "demo", "token": token, "campaign": "newsletter", "email": "ann@example.com", "opt_in": True, **fields}
    response = client.post("/v1/leads?shop=demo", json=body, headers={"X-Forwarded-For": ip, "Origin": ORIGIN})
    client.cookies.clear()
    return response


def audiences_of(client, token: str) -> list[str]:
    return visit(client, token)["visitor"].get("audiences") or client.get(
        "/v1/fragments/popup?shop=demo&_context=1", headers={"X-Visitor-Token": token}).json()["visitor"]["audiences"]


def second_page(client) -> str:
    """A visitor on the second page of their visit (the sign-up's page_views trigger): their token."""
    token = visit(client)["token"]
    visit(client, token)
    assert client.app.state.services.contexts.page_views.flush()
    return token


def test_the_popup_html_has_the_form_and_never_the_code(client) -> None:
    token = second_page(client)
    url, headers = "/v1/fragments/popup?shop=demo&visitor=returning", {"X-Visitor-Token": token}
    html = client.get(url, headers=headers).text
    assert "data-vitrine-signup" in html and 'type="email"' in html and 'name="opt_in" required' in html
    assert 'name="birthday"' in html and 'name="interests" value="' in html
    assert CODE not in html
    context = client.get(url + "&_context=1", headers=headers).text
    assert "newsletter" in context and CODE not in context


def test_a_valid_sign_up_is_stored_revealed_and_makes_a_prospect(client, services) -> None:
    token = visit(client)["token"]
    before = client.get("/v1/fragments/popup?shop=demo&_context=1", headers={"X-Visitor-Token": token}).json()
    assert "prospect" not in before["visitor"]["audiences"]

    interest = next(iter(services.catalog.shop("demo").categories))[0].split(">")[0].strip()
    response = sign_up(client, token, email=" Ann@Example.COM ", birthday="1990-04-01", interests=[interest])
    assert response.status_code == 201, response.text
    answer = response.json()
    assert answer["code"].startswith(CODE) and answer["linked"] is True and answer["reveal_text"]
    assert response.headers["access-control-allow-origin"] == ORIGIN

    visitor = services.signer.visitor_id("demo", token)
    [lead] = stored(services).shop_leads("demo")
    assert (lead["visitor_id"], lead["email"], lead["campaign"], lead["opt_in"]) == (visitor, "Ann@example.com", "newsletter", True)
    assert (lead["birthday"], lead["interests"]) == ("1990-04-01", interest)
    assert [e.type for e in services.store.visitor_events("demo", visitor) if e.type == "sign_up"] == ["sign_up"]
    after = client.get("/v1/fragments/popup?shop=demo&_context=1", headers={"X-Visitor-Token": token}).json()
    assert "prospect" in after["visitor"]["audiences"]
    # A prospect is not asked again (not_audiences = ["prospect"]).
    reasons = next(d for d in after["decisions"] if d["campaign"] == "newsletter")["reasons"]
    assert any(r.startswith("no: in excluded audience prospect") for r in reasons), reasons
    # The code is the visitor's own of the pool: the same on a second sign-up; another visitor's is another.
    assert sign_up(client, token, email="ann2@example.com").json()["code"] == answer["code"]
    assert sign_up(client, visit(client)["token"], email="bo@example.com").json()["code"] not in ("", answer["code"])


def test_without_consent_the_lead_is_kept_unlinked_and_nothing_of_the_visitor(client, services) -> None:
    response = sign_up(client, None, consent={"personalization": False, "analytics": False})
    assert response.status_code == 201, response.text
    # No code: one is a visitor's own, and nothing can be kept about this one.
    assert response.json()["linked"] is False and response.json()["code"] == "" and "token" not in response.json()
    [lead] = services.store.shop_leads("demo")
    assert lead["visitor_id"] is None
    assert services.store.count_events("demo", "sign_up") == 0


def test_get_me_shows_the_leads_and_delete_me_deletes_them(client, services) -> None:
    token = visit(client)["token"]
    assert sign_up(client, token).status_code == 201
    mine = client.get("/v1/me?shop=demo", headers={"X-Visitor-Token": token}).json()
    assert [(lead["email"], lead["campaign"]) for lead in mine["leads"]] == [("ann@example.com", "newsletter")]
    deleted = client.delete("/v1/me?shop=demo", headers={"X-Visitor-Token": token})
    assert deleted.status_code == 204, deleted.text
    assert services.store.shop_leads("demo") == []
    # The forgotten visitor's old token cannot sign up as them again.
    again = sign_up(client, token)
    assert again.status_code == 403 and "deleted at their request" in again.json()["error"]


@pytest.mark.parametrize(
    "fields, status, words",
    [
        ({"email": "not-an-address"}, 422, ("email", "not an e-mail address")),
        ({"email": "ann@localhost"}, 422, ("email", "not an e-mail address")),
        ({"email": "a b@example.com"}, 422, ("email",)),
        ({"email": "a" * 250 + "@example.com"}, 422, ("email", "at most 254")),
        ({"opt_in": False}, 422, ("opt_in", "ticked")),
        ({"campaign": "welcome"}, 404, ("no sign-up campaign 'welcome'",)),
        ({"campaign": "nope"}, 404, ("no sign-up campaign 'nope'",)),
        ({"interests": ["Weapons"]}, 422, ("interests", "'Weapons'")),
        ({"interests": ["x"] * 21}, 422, ("interests", "at most 20")),
        ({"birthday": "31/12/1990"}, 422, ("birthday", "YYYY-MM-DD")),
        ({"birthday": "1990-02-30"}, 422, ("birthday", "not a date")),
        ({"birthday": "2999-01-01"}, 422, ("birthday", "not a birthday")),
        ({"colour": "red"}, 422, ("colour", "Extra inputs")),
    ],
)
def test_bad_input_gets_a_clear_4xx(client, fields: dict, status: int, words: tuple[str, ...]) -> None:
    response = sign_up(client, **fields)
    assert response.status_code == status, response.text
    for word in words:
        assert word in response.json()["error"]


def test_bad_json_unknown_shop_and_a_shop_mismatch(client) -> None:
    bad = client.post("/v1/leads?shop=demo", content=b"{not json", headers={"Content-Type": "application/json"})
    assert bad.status_code == 400 and "invalid JSON" in bad.json()["error"]
    body = {"shop": "nowhere", "campaign": "newsletter", "email": "ann@example.com", "opt_in": True}
    unknown = client.post("/v1/leads", json=body)
    assert unknown.status_code == 404 and "nowhere" in unknown.json()["error"]
    differ = client.post("/v1/leads?shop=demo", json=body)
    assert differ.status_code == 400 and "differ" in differ.json()["error"]


def test_birthday_without_a_year_is_kept_as_day_and_month(client, services) -> None:
    assert sign_up(client, birthday="02-29").status_code == 201
    assert services.store.shop_leads("demo")[0]["birthday"] == "--02-29"


def test_sign_ups_are_limited_per_address_and_per_visitor(client) -> None:
    for n in range(5):
        assert sign_up(client, email=f"ann{n}@example.com").status_code == 201
    limited = sign_up(client, email="ann9@example.com")
    assert limited.status_code == 429 and "try again" in limited.json()["error"]
    assert sign_up(client, ip="81.2.69.161").status_code == 201  # another address
    token = visit(client)["token"]
    for n in range(5):
        assert sign_up(client, token, ip=f"81.2.70.{n}").status_code == 201
    assert sign_up(client, token, ip="81.2.71.1").status_code == 429  # the same visitor elsewhere


def test_cors_preflight_like_the_events_api(client) -> None:
    headers = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "content-type"}
    allowed = client.options("/v1/leads?shop=demo", headers=headers)
    assert allowed.status_code == 204 and allowed.headers["access-control-allow-origin"] == ORIGIN
    refused = client.options("/v1/leads?shop=demo", headers={**headers, "Origin": "https://evil.example"})
    assert refused.status_code == 403


def test_vitrine_leads_prints_them_as_csv_and_json(client, settings) -> None:
    import json

    from click.testing import CliRunner

    from server.cli import main

    assert sign_up(client, email="bob@example.com", interests=[]).status_code == 201
    env = {"VITRINE_SECRET_KEYS": "test-key-1", "VITRINE_DATABASE_URL": settings.database_url}
    run = lambda *args: CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "leads", "--shop", "demo", *args], env=env)  # noqa: E731
    printed = run()
    assert printed.exit_code == 0, printed.output
    header, row = printed.stdout.splitlines()
    assert header == "ts,campaign,email,opt_in,birthday,interests,visitor_id"
    assert ",newsletter,bob@example.com,True,," in row
    [lead] = json.loads(run("--json").stdout)
    assert lead["email"] == "bob@example.com" and lead["ts"].endswith("Z")
