"""Consent: the shop's rule, the page's answer, withdrawal, GPC, sensitive categories, coarse location."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.consent.regions import EEA, EU, countries_of
from server.consent.rules import ConsentIn, ConsentPolicy, decide, from_query
from server.identity import TOKEN_HEADER
from server.models import ANONYMOUS_VISITOR
from server.shops import ShopConfigError, parse_shop_config
from server.store.schema import metadata

from conftest import UK_IP, US_IP, stored

TOP = {"id": "top", "widget": "banner", "attrs": {"placement": "top"}}
YES = {"personalization": True, "analytics": True}
NO = {"personalization": False, "analytics": False}


def set_rule(settings, *lines: str) -> None:
    """Put top-level keys at the head of the demo shop's config (before its first table)."""
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text("\n".join(lines) + "\n" + path.read_text())


def page(client, consent=None, token=None, ip=UK_IP, item="", category="", slots=None, **headers):
    body = {"shop": "demo", "page": {"url": "http://127.0.0.1:8000/demo/", "type": "home", "item_id": item,
            "category": category}, "slots": [TOP] if slots is None else slots}
    if consent is not None:
        body["consent"] = consent
    sent = {"X-Forwarded-For": ip, **headers}
    if token:
        sent[TOKEN_HEADER] = token
    client.cookies.clear()  # the token travels only as the test says
    return client.post("/v1/page?shop=demo", json=body, headers=sent)


def events(client, types, consent=None, token=None, ip=UK_IP):
    body = {"shop": "demo", "events": [
        {"event_id": f"e-{n:08d}-{t}", "type": t, "item_id": "22632", "promotion_id": "welcome"} for n, t in enumerate(types)
    ]}
    if consent is not None:
        body["consent"] = consent
    client.cookies.clear()
    return client.post("/v1/events?shop=demo", json=body,
                       headers={"X-Forwarded-For": ip, **({TOKEN_HEADER: token} if token else {})})


def rows(services) -> dict[str, list[dict]]:
    """Every row of every table about visitors (all tables but the catalog's and the schema's)."""
    store = stored(services)
    found = {}
    with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            found[table.name] = [dict(r._mapping) for r in conn.execute(sa.select(table))]
    return found


def visitor_rows(services) -> list[dict]:
    return rows(services)["visitors"] + rows(services)["events"]


def assert_nothing_kept(response) -> None:
    assert response.status_code == 200, response.text
    data = response.json()
    assert data.get("token") is None
    assert "set-cookie" not in response.headers
    assert TOKEN_HEADER.lower() not in response.headers


# -- the rules -----------------------------------------------------------------------------
def test_region_lists() -> None:
    assert len(EU) == 27 and EEA - EU == {"IS", "LI", "NO"}
    assert "GB" not in EEA and countries_of(["eu", "GB"]) == EU | {"GB"}


def test_an_explicit_answer_wins_and_the_rule_decides_what_is_unknown() -> None:
    required = ConsentPolicy("required")
    assert not decide(required, None, "", False).personalization
    assert decide(required, ConsentIn(personalization=True), "", False).personalization
    assert not decide(required, ConsentIn(personalization=True), "", False).analytics
    free = ConsentPolicy()
    assert decide(free, None, "US", False).personalization
    refused = decide(free, ConsentIn(personalization=False), "US", False)
    assert not refused.personalization and refused.refused and refused.analytics
    in_eu = ConsentPolicy("required_in", ("EU", "GB"))
    assert not decide(in_eu, None, "DE", False).personalization
    assert decide(in_eu, None, "US", False).personalization
    assert not decide(in_eu, None, "", False).personalization  # unknown country: required
    gpc = ConsentPolicy(gpc="refuse")
    refused = decide(gpc, ConsentIn(personalization=True, analytics=True), "US", True)
    assert not refused.personalization and not refused.analytics and refused.refused
    assert decide(ConsentPolicy(), ConsentIn(personalization=True), "US", True).personalization


def test_fragment_consent_parameter() -> None:
    assert from_query(None) is None
    assert from_query("personalization") == ConsentIn(personalization=True, analytics=False)
    assert from_query("none") == ConsentIn(personalization=False, analytics=False)
    with pytest.raises(ValueError, match="purposes"):
        from_query("everything")


@pytest.mark.parametrize("text, expected", [
    ('name = "x"\nconsent = "required_in"\n', ':2: consent: consent = "required_in" needs consent_regions'),
    ('name = "x"\nconsent = "required"\nconsent_regions = ["EU"]\n', ":2: consent: consent_regions is set but consent is"),
    ('consent = "required_in"\n\nconsent_regions = ["EU", "XX"]\n', ":3: consent_regions: 'XX' is neither 'EU' nor 'EEA'"),
    ('name = "x"\nconsent = "sometimes"\n', ":2: consent: Input should be 'not_required', 'required' or 'required_in'"),
    ('name = "x"\n\ngpc = "ignore"\n', ":3: gpc: Input should be 'no_sharing' or 'refuse'"),
    ('sensitive_categories = "Health"\n', ":1: sensitive_categories: Input should be a valid list"),
    ('[[campaigns]]\nid = "a"\nwidget = "banner"\ngeo_detail = "street"\n', ':4: campaigns[0] (id "a").geo_detail'),
])
def test_config_errors_name_the_line(tmp_path: Path, text: str, expected: str) -> None:
    path = tmp_path / "s.toml"
    path.write_text(text)
    with pytest.raises(ShopConfigError) as error:
        parse_shop_config("s", path)
    assert expected in str(error.value)


def test_config_keys_make_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "s.toml"
    path.write_text('consent = "required_in"\nconsent_regions = ["eea", "gb"]\ngpc = "refuse"\n')
    assert parse_shop_config("s", path).consent_policy == ConsentPolicy("required_in", ("EEA", "GB"), "refuse")
    path.write_text("")
    assert parse_shop_config("s", path).consent_policy == ConsentPolicy("not_required", (), "no_sharing")


# -- consent = "required" --------------------------------------------------------------------
def test_required_without_consent_stores_nothing_and_still_renders(client, services, settings) -> None:
    set_rule(settings, 'consent = "required"')
    r = page(client)
    assert_nothing_kept(r)
    data = r.json()
    assert data["consent"] == {"personalization": False, "analytics": False, "withdrawn": False}
    assert data["fragments"]["top"]["campaigns"] == ["uk-delivery"]  # geo targeting of the request
    assert data["visitor"]["kind"] == "new"
    again = page(client)
    assert again.json()["visitor"]["kind"] == "new"  # nothing to recognise them by
    assert visitor_rows(services) == []
    r = events(client, ["view_item", "view_promotion"])
    assert r.status_code == 403 and "nothing recorded" in r.json()["error"]
    assert visitor_rows(services) == []


def test_required_with_consent_is_todays_behaviour(client, services, settings) -> None:
    set_rule(settings, 'consent = "required"')
    r = page(client, consent=YES)
    token = r.json()["token"]
    assert token and "vitrine_demo=" in r.headers["set-cookie"]
    assert r.json()["consent"]["personalization"] is True
    profile = stored(services).get_visitor("demo", services.signer.visitor_id("demo", token))
    assert profile is not None and profile.page_views == 1
    assert events(client, ["view_item"], consent=YES, token=token).json()["accepted"] == 1


def test_an_unknown_answer_from_a_visitor_with_a_token_deletes_nothing(client, services, settings) -> None:
    set_rule(settings, 'consent = "required"')
    token = page(client, consent=YES).json()["token"]
    r = page(client, token=token)  # the consent manager has not answered yet on this page
    assert_nothing_kept(r)
    assert r.json()["consent"]["withdrawn"] is False
    profile = stored(services).get_visitor("demo", services.signer.visitor_id("demo", token))
    assert profile is not None and profile.page_views == 1  # kept, and this view not counted


# -- withdrawal ------------------------------------------------------------------------------
@pytest.mark.parametrize("rule", ['consent = "required"', 'consent = "not_required"'])
def test_withdrawal_deletes_the_visitor_in_the_same_call(client, services, settings, rule) -> None:
    set_rule(settings, rule)
    token = page(client, consent=YES).json()["token"]
    page(client, consent=YES, token=token, item="22632")
    events(client, ["view_item", "view_promotion"], consent=YES, token=token)
    vid = services.signer.visitor_id("demo", token)
    assert stored(services).visitor_records("demo", vid)["events"]
    r = page(client, consent=NO, token=token, item="71053")
    assert r.status_code == 200
    assert r.json()["consent"] == {"personalization": False, "analytics": False, "withdrawn": True}
    assert "token" not in r.json() and TOKEN_HEADER.lower() not in r.headers
    cookie = r.headers["set-cookie"]
    assert cookie.startswith('vitrine_demo="";') and "Max-Age=0" in cookie
    assert not any(stored(services).visitor_records("demo", vid).values())
    assert visitor_rows(services) == []


def history(services) -> list[tuple]:
    return [(r["source"], r["personalization"], r["analytics"], r["gpc"]) for r in rows(services)["consent_history"]]


def test_each_change_of_the_answer_is_kept_in_the_consent_history(client, services, settings) -> None:
    set_rule(settings, 'consent = "required"')
    token = page(client, consent={**YES, "source": "tcf"}).json()["token"]
    page(client, consent={**YES, "source": "tcf"}, token=token)  # the same answer: no new row
    page(client, token=token)  # no answer yet on this page: nothing changes, nothing is counted
    assert history(services) == [("tcf", True, True, False)]
    page(client, consent={"personalization": True, "analytics": False, "source": "shop,tcf"}, token=token)
    page(client, consent={"personalization": True, "analytics": False, "source": "shop,tcf"}, token=token,
         **{"Sec-GPC": "1"})
    assert history(services) == [("tcf", True, True, False), ("shop,tcf", True, False, False), ("shop,tcf", True, False, True)]
    vid = services.signer.visitor_id("demo", token)
    assert {r["visitor_id"] for r in rows(services)["consent_history"]} == {vid}

    data = client.get("/v1/me?shop=demo", headers={TOKEN_HEADER: token}).json()
    assert data["profile"]["consent"] == {"personalization": True, "analytics": False, "gpc": True}
    assert [(a["source"], a["personalization"], a["analytics"], a["gpc"]) for a in data["consent_history"]] == history(services)
    times = [a["ts"] for a in data["consent_history"]]
    assert times == sorted(times) and all(t.endswith("Z") for t in times)

    # Withdrawing deletes the history with the rest; a refusal is never written down.
    page(client, consent={**NO, "source": "shop"}, token=token)
    assert history(services) == [] and visitor_rows(services) == []
    page(client, consent={**NO, "source": "shop"})
    assert history(services) == [] and visitor_rows(services) == []


def test_an_answer_on_a_shop_that_needs_none_is_kept_too_and_a_page_call_may_name_no_source(client, services) -> None:
    token = page(client).json()["token"]  # not_required: a profile without an answer, no history
    assert history(services) == []
    page(client, consent=YES, token=token)
    assert history(services) == [("page", True, True, False)]
    other = page(client, **{"Sec-GPC": "1"}).json()["token"]  # the signal alone, no answer
    page(client, token=other, **{"Sec-GPC": "1"})
    assert history(services)[1:] == [("gpc", None, None, True)]


@pytest.mark.parametrize("source", ["banner", "tcf,", "TCF", "tcf;shop", "x" * 65])
def test_an_unknown_consent_source_is_a_clear_422(client, source) -> None:
    r = page(client, consent={**YES, "source": source})
    assert r.status_code == 422 and "consent.source" in r.json()["error"], r.text


# -- consent = "required_in" -----------------------------------------------------------------
def test_required_in_goes_by_the_country_of_the_address(client, services, settings) -> None:
    set_rule(settings, 'consent = "required_in"', 'consent_regions = ["EEA", "GB"]')
    assert_nothing_kept(page(client, ip=UK_IP))
    assert page(client, ip=US_IP).json()["token"]
    assert page(client, ip=UK_IP, consent=YES).json()["token"]
    assert [r["country"] for r in rows(services)["visitors"]] == ["US", "GB"] or sorted(
        r["country"] for r in rows(services)["visitors"]) == ["GB", "US"]


def test_not_required_is_the_default_and_follows_an_explicit_no(client, services) -> None:
    assert page(client).json()["token"]
    assert_nothing_kept(page(client, consent={"personalization": False}))
    assert len(rows(services)["visitors"]) == 1


def test_bad_consent_is_a_clear_422(client) -> None:
    r = page(client, consent={"personalization": "maybe"})
    assert r.status_code == 422 and "consent" in r.json()["error"]
    r = page(client, consent={"marketing": True})
    assert r.status_code == 422 and "marketing" in r.json()["error"]
    r = client.get("/v1/fragments/banner", params={"shop": "demo", "placement": "top", "consent": "all"})
    assert r.status_code == 400 and "purposes" in r.json()["error"]


# -- analytics without a profile --------------------------------------------------------------
def test_measurement_without_a_profile_is_counted_anonymously(client, services, settings) -> None:
    set_rule(settings, 'consent = "required"')
    consent = {"personalization": False, "analytics": True}
    r = events(client, ["view_promotion", "view_item", "select_promotion"], consent=consent)
    assert r.status_code == 202 and r.json() == {"accepted": 2, "duplicates": 0, "dropped": 1}
    assert "set-cookie" not in r.headers and "token" not in r.json()
    kept = rows(services)["events"]
    assert {e["type"] for e in kept} == {"view_promotion", "select_promotion"}
    assert {e["visitor_id"] for e in kept} == {ANONYMOUS_VISITOR}


def test_a_profile_without_analytics_keeps_no_measurement(client, services, settings) -> None:
    set_rule(settings, 'consent = "required"')
    consent = {"personalization": True, "analytics": False}
    token = page(client, consent=consent).json()["token"]
    r = events(client, ["view_promotion", "view_item"], consent=consent, token=token)
    assert r.json()["accepted"] == 1 and r.json()["dropped"] == 1
    assert {e["type"] for e in rows(services)["events"]} == {"page_view", "view_item"}


# -- Global Privacy Control ------------------------------------------------------------------
def test_gpc_is_recorded_on_the_visitor(client, services) -> None:
    token = page(client, **{"Sec-GPC": "1"}).json()["token"]
    assert stored(services).get_visitor("demo", services.signer.visitor_id("demo", token)).gpc is True
    page(client, token=token)
    assert stored(services).get_visitor("demo", services.signer.visitor_id("demo", token)).gpc is False
    body = {"shop": "demo", "page": {"type": "home"}, "slots": [], "gpc": True}
    client.cookies.clear()
    client.post("/v1/page?shop=demo", json=body, headers={TOKEN_HEADER: token})
    assert stored(services).get_visitor("demo", services.signer.visitor_id("demo", token)).gpc is True


def test_gpc_refuse_counts_gpc_as_no_consent(client, services, settings) -> None:
    set_rule(settings, 'gpc = "refuse"')
    token = page(client, consent=YES).json()["token"]
    r = page(client, consent=YES, token=token, **{"Sec-GPC": "1"})
    assert r.json()["consent"]["withdrawn"] is True and "token" not in r.json()
    assert visitor_rows(services) == []
    assert events(client, ["view_promotion"], consent=YES).status_code == 202  # without GPC
    client.cookies.clear()
    r = client.post("/v1/events?shop=demo", headers={"Sec-GPC": "1"}, json={
        "shop": "demo", "consent": YES, "events": [{"event_id": "gpc-00000001", "type": "view_promotion", "promotion_id": "welcome"}]})
    assert r.status_code == 403 and "gpc = refuse" in r.json()["error"]


# -- QA sees it ------------------------------------------------------------------------------
def test_context_shows_the_consent_and_the_rule(client, settings) -> None:
    set_rule(settings, 'consent = "required_in"', 'consent_regions = ["EU", "GB"]')
    params = {"shop": "demo", "placement": "top", "_context": "1"}
    uk = client.get("/v1/fragments/banner", params=params, headers={"X-Forwarded-For": UK_IP}).json()["visitor"]
    assert uk["consent"]["personalization"] is False and uk["consent"]["required"] is True
    assert "country GB is in them" in uk["consent"]["why"] and uk["consent"]["rule"] == "required_in"
    us = client.get("/v1/fragments/banner", params=params, headers={"X-Forwarded-For": US_IP}).json()["visitor"]
    assert us["consent"]["personalization"] is True and "country US is not in them" in us["consent"]["why"]
    given = client.get("/v1/fragments/banner", params={**params, "consent": "personalization"},
                       headers={"X-Forwarded-For": UK_IP}).json()["visitor"]["consent"]
    assert given["personalization"] is True and given["analytics"] is False


# -- sensitive categories --------------------------------------------------------------------
RECENT = {"id": "recent", "widget": "recommendations", "attrs": {"strategy": "recently_viewed"}}


def recent_items(response) -> str:
    return response.json()["fragments"].get("recent", {}).get("html", "")


def test_sensitive_categories_are_left_out_except_on_their_own_pages(client, services, settings) -> None:
    set_rule(settings, 'sensitive_categories = ["Home decor"]')
    token = page(client, item="22112").json()["token"]  # Chocolate Hot Water Bottle, Home decor
    page(client, token=token, item="85123A")  # T-Light Holder, Candles and lights
    page(client, token=token, item="22632")  # Hand Warmer, Gifts (the newest: the panel's anchor)
    home = page(client, token=token, slots=[RECENT])
    assert home.json()["fragments"]["recent"]["strategy"] == "recently_viewed"
    assert 'data-item-id="85123A"' in recent_items(home) and 'data-item-id="22112"' not in recent_items(home)
    own = page(client, token=token, slots=[RECENT], category="Home decor")
    assert 'data-item-id="22112"' in recent_items(own)
    # Without the setting, the same history shows both.
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text().replace('sensitive_categories = ["Home decor"]\n', ""))
    both = page(client, token=token, slots=[RECENT])
    assert 'data-item-id="22112"' in recent_items(both) and 'data-item-id="85123A"' in recent_items(both)


# -- coarse by default -----------------------------------------------------------------------
def test_templates_get_no_city_unless_the_campaign_opts_in(client) -> None:
    visitor = client.get("/v1/fragments/banner", params={"shop": "demo", "placement": "top", "_context": "1"},
                         headers={"X-Forwarded-For": UK_IP}).json()["visitor"]
    assert set(visitor["geo"]) == {"country", "country_name", "region"} and visitor["geo"]["country"] == "GB"


def test_a_campaign_with_geo_detail_city_gets_the_city(client, services, settings) -> None:
    override = settings.resolved_data_dir / "templates"
    override.mkdir(exist_ok=True)
    (override / "banner-demo-uk-delivery.html").write_text("<p>city={{ visitor.geo.city }}</p>")
    (override / "banner-demo-intl-delivery.html").write_text("<p>city={{ visitor.geo.city }}</p>")
    r = page(client)
    assert "city=</p>" in r.json()["fragments"]["top"]["html"]
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text().replace('id = "uk-delivery"\n', 'id = "uk-delivery"\ngeo_detail = "city"\n'))
    city = services.geo.lookup(UK_IP).city
    assert city and f"city={city}</p>" in page(client).json()["fragments"]["top"]["html"]


def test_no_address_or_city_in_any_row_or_log_line(client, services, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    city = services.geo.lookup(UK_IP).city
    token = page(client, item="22632").json()["token"]
    events(client, ["view_item", "view_promotion", "search"], token=token)
    client.get("/v1/fragments/banner", params={"shop": "demo", "placement": "top"}, headers={"X-Forwarded-For": UK_IP})
    everything = rows(services)
    assert everything["visitors"] and everything["events"]
    text = repr(everything)
    assert UK_IP not in text and city not in text
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert UK_IP not in logged and city not in logged
