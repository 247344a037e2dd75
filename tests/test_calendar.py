"""Calendar campaigns (server/occasions.py): public holidays of the visitor's country and
region on their local date, birthdays and sign-up anniversaries, by loyalty tier; through
the demo shop's campaigns, on fragment URLs with `now=` and `country=`, and real addresses."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from server.models import utcnow
from server.occasions import Calendar, parse_birthday
from server.shops import ShopConfigError, parse_shop_config

from conftest import UK_IP
from test_leads import sign_up, visit

NZ_AUCKLAND_IP = "203.97.0.1"  # NZ, Auckland (subdivision AUK), Pacific/Auckland in the bundled GeoLite2
NZ_TARANAKI_IP = "122.56.0.1"  # NZ, Taranaki (TKI)
IE_IP = "87.32.0.1"  # IE, Europe/Dublin


def banner(client, placement: str, ip: str = UK_IP, **params: str):
    r = client.get("/v1/fragments/banner", params={"shop": "demo", "placement": placement, **params},
                   headers={"X-Forwarded-For": ip})
    assert r.status_code == 200, r.text
    return r


def campaigns_of(response) -> list[str]:
    return [c for c in response.headers.get("x-vitrine-campaigns", "").split(",") if c]


def test_the_demo_st_patricks_day_as_the_issue_previews_it(client) -> None:
    top = banner(client, "top", country="IE", now="2027-03-17T10:00:00")
    assert campaigns_of(top) == ["national-holiday"]
    assert "Happy Saint Patrick&#39;s Day!" in top.text or "Happy Saint Patrick's Day!" in top.text
    hero = banner(client, "home-hero", country="IE", now="2027-03-17T10:00:00")
    assert campaigns_of(hero)[0] == "st-patricks" and "SHAMROCK17" in hero.text
    # Two days before, the offer runs and the holiday banner does not; the day after, neither.
    assert campaigns_of(banner(client, "home-hero", country="IE", now="2027-03-15T10:00:00"))[0] == "st-patricks"
    assert campaigns_of(banner(client, "top", country="IE", now="2027-03-15T10:00:00")) != ["national-holiday"]
    assert "st-patricks" not in campaigns_of(banner(client, "home-hero", country="IE", now="2027-03-18T10:00:00"))
    # On other days the top banner is the delivery one, naming the previewed country as a visitor's would.
    assert "We deliver to Ireland" in banner(client, "top", country="IE", now="2027-03-18T10:00:00").text
    # Not Irish, no St Patrick's offer; a French visitor's national day is theirs alone.
    assert "st-patricks" not in campaigns_of(banner(client, "home-hero", country="GB", now="2027-03-17T10:00:00"))
    assert campaigns_of(banner(client, "top", country="GB", now="2027-03-17T10:00:00")) == ["uk-delivery"]
    fr = banner(client, "top", country="FR", now="2027-07-14T10:00:00")
    assert campaigns_of(fr) == ["national-holiday"] and "Happy National Day!" in fr.text


def test_the_reason_names_the_holiday_and_whose_date_it_is(client) -> None:
    data = banner(client, "top", country="IE", now="2027-03-17T10:00:00", _context="1").json()
    reasons = {d["campaign"]: d["reasons"] for d in data["decisions"]}["national-holiday"]
    assert "ok: Saint Patrick's Day is today, it is Wed 2027-03-17 in Europe/London (the shop's)" in reasons
    data = banner(client, "home-hero", country="IE", now="2027-03-16T10:00:00", _context="1").json()
    reasons = {d["campaign"]: d["reasons"] for d in data["decisions"]}["st-patricks"]
    assert "ok: Saint Patrick's Day is in 1 day (2027-03-17), it is Tue 2027-03-16 in Europe/London (the shop's)" in reasons


def test_the_visitors_own_date_decides_in_their_time_zone(client) -> None:
    # 11:00 UTC on 31 December is already New Year's Day in Auckland (UTC+13), not in London.
    moment = "2026-12-31T11:30:00Z"
    nz = banner(client, "top", ip=NZ_AUCKLAND_IP, now=moment, _context="1").json()
    assert nz["campaigns"] == ["national-holiday"]
    reasons = {d["campaign"]: d["reasons"] for d in nz["decisions"]}["national-holiday"]
    assert "ok: New Year's Day is today, it is Fri 2027-01-01 in Pacific/Auckland (the visitor's)" in reasons
    uk = banner(client, "top", ip=UK_IP, now=moment)
    assert campaigns_of(uk) == ["uk-delivery"]


def test_a_regional_holiday_is_its_regions_alone(client) -> None:
    auckland = banner(client, "top", ip=NZ_AUCKLAND_IP, now="2027-02-01T10:00:00+13:00")
    assert campaigns_of(auckland) == ["national-holiday"] and "Happy Auckland Anniversary Day!" in auckland.text
    taranaki = banner(client, "top", ip=NZ_TARANAKI_IP, now="2027-02-01T10:00:00+13:00")
    assert campaigns_of(taranaki) == ["international-delivery"]


def popups(client, token: str, **params: str) -> list[str]:
    r = client.get("/v1/fragments/popup", params={"shop": "demo", **params},
                   headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token})
    assert r.status_code == 200, r.text
    return campaigns_of(r)


def test_a_birthday_given_in_the_sign_up_popup_brings_the_birthday_popup_that_week(client) -> None:
    token = visit(client)["token"]
    visit(client, token)
    assert sign_up(client, token, birthday="1990-03-20").status_code == 201
    client.app.state.services.contexts.page_views.flush()
    assert "birthday" in popups(client, token, now="2027-03-17T10:00:00")  # three days before
    assert "birthday" in popups(client, token, now="2027-03-23T10:00:00")  # three days after
    assert "birthday" not in popups(client, token, now="2027-03-24T10:00:00")
    assert "birthday-gold" not in popups(client, token, now="2027-03-20T10:00:00")  # not a gold member
    # Without a birthday, none; the reason says why.
    other = visit(client)["token"]
    context = client.get("/v1/fragments/popup", params={"shop": "demo", "now": "2027-03-20T10:00:00", "_context": "1"},
                         headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": other}).json()
    reasons = {d["campaign"]: d["reasons"] for d in context["decisions"]}["birthday"]
    assert reasons[-1].startswith("no: no birthday (none known for this visitor) today, in the next 3 days or the last 3 days")


def test_birthdays_and_anniversaries_of_imported_customers_by_loyalty_tier(client, services, demo_pools) -> None:
    from datetime import timezone

    from server.customers.keys import sign
    from server.models import Customer, Order

    joined = (utcnow() - timedelta(days=800)).replace(hour=9, minute=0, second=0, microsecond=0)
    tomorrow = (utcnow() + timedelta(days=1)).date()
    services.store.import_customers("demo", [
        Customer("gold-1", email="g@example.com", first_name="Gwen", signed_up_at=joined,
                 birthday=tomorrow.replace(year=1980) if (tomorrow.month, tomorrow.day) != (2, 29) else None),
        Customer("new-1", email="n@example.com", first_name="Ned", signed_up_at=joined),
    ])
    services.store.import_orders("demo", [  # twelve orders: the demo's gold tier
        Order(f"o-{n}", "gold-1", (utcnow() - timedelta(days=30 + n)).replace(tzinfo=timezone.utc), 120.0, "GBP")
        for n in range(12)
    ])
    key = services.shop_keys.key("demo")

    def identified(customer: str) -> str:
        body = {"shop": "demo", "page": {"type": "home", "url": "https://shop.example/"}, "slots": [],
                "identify": {"id": customer, "signature": sign(key, customer)}}
        r = client.post("/v1/page?shop=demo", json=body, headers={"X-Forwarded-For": UK_IP})
        assert r.status_code == 200 and r.json()["identify"]["identified"], r.text
        client.cookies.clear()
        return r.json()["token"]

    gold, plain = identified("gold-1"), identified("new-1")
    services.contexts.page_views.flush()
    shown = popups(client, gold)
    assert "birthday-gold" in shown and "birthday" not in shown  # the tier's reward, not the plain one
    assert "birthday" not in popups(client, plain) and "birthday-gold" not in popups(client, plain)

    second = (joined.replace(year=joined.year + 2) + timedelta(hours=3)).isoformat() + "Z"
    later = popups(client, plain, now=second)
    assert "anniversary" in later and "anniversary-gold" not in later
    assert "anniversary-gold" in popups(client, gold, now=second)
    r = client.get("/v1/fragments/popup", params={"shop": "demo", "now": second},
                   headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": plain})
    assert "2 years with us: thank you!" in r.text
    # A year or more: never on the day of the sign-up itself, nor a week after the anniversary.
    assert "anniversary" not in popups(client, plain, now=(joined + timedelta(hours=3)).isoformat() + "Z")
    week_after = (joined.replace(year=joined.year + 2) + timedelta(days=7, hours=3)).isoformat() + "Z"
    assert "anniversary" not in popups(client, plain, now=week_after)

    # The rewards are codes of their own with the seeds' rules: the gold anniversary's 50% is
    # capped at £500, the gold birthday's £20 comes with free shipping.
    def revealed(token: str, campaign: str) -> str:
        r = client.post("/v1/reveal?shop=demo", json={"shop": "demo", "token": token, "campaign": campaign},
                        headers={"X-Forwarded-For": UK_IP, "Origin": "http://127.0.0.1:8000"})
        assert r.status_code == 200, r.text
        return r.json()["code"]

    def redeemed(code: str, order: str, value: float) -> dict:
        return client.post("/v1/coupons/redeem?shop=demo", json={
            "code": code, "order_id": order, "order_value": value, "currency": "GBP"},
            headers={"Authorization": f"Bearer {key}"}).json()["discount"]

    half = redeemed(revealed(gold, "anniversary-gold"), "a-1", 1400.0)
    assert (half["amount"], half["max_discount"]) == (500.0, 500.0)
    present = redeemed(revealed(gold, "birthday-gold"), "b-1", 60.0)
    assert (present["amount"], present["free_shipping"]) == (20.0, True)


def test_no_consent_no_birthday(client, settings) -> None:
    token = visit(client)["token"]
    visit(client, token)
    assert sign_up(client, token, birthday="03-20").status_code == 201
    assert "birthday" in popups(client, token, now="2027-03-20T10:00:00")
    assert "birthday" not in popups(client, token, now="2027-03-20T10:00:00", consent="none")


@pytest.mark.parametrize(("text", "expected"), [
    ("1990-03-20", (3, 20)), ("--02-29", (2, 29)), ("03-20", (3, 20)), ("1990-02-30", None), ("", None), ("soon", None),
])
def test_birthdays_are_read_in_each_form_they_are_stored(text, expected) -> None:
    assert parse_birthday(text) == expected


def config_error(tmp_path: Path, calendar: str, audience: str = "") -> str:
    path = tmp_path / "shop.toml"
    path.write_text(f'''origins = ["https://shop.example"]

[[campaigns]]
id = "holiday"
widget = "banner"
title = "Happy {{occasion}}"
{audience}
[campaigns.calendar]
{calendar}
''')
    with pytest.raises(ShopConfigError) as caught:
        parse_shop_config("shop", path)
    return str(caught.value)


def test_calendar_config_errors_name_the_line_and_the_fix(tmp_path: Path) -> None:
    error = config_error(tmp_path, 'holidays = ["St Patricks Day"]', '[campaigns.audience]\ncountry = ["IE"]')
    assert "'St Patricks Day' is not a public holiday of IE (did you mean \"Saint Patrick's Day\"" in error
    assert "shop.toml:3:" in error
    assert "name an occasion" in config_error(tmp_path, "days_before = 2")
    assert "leave out the other names" in config_error(tmp_path, 'holidays = ["any", "Christmas Day"]')
    assert "less than or equal to 31" in config_error(tmp_path, 'holidays = ["any"]\ndays_after = 40')
    assert "not a time zone" in config_error(tmp_path, 'birthday = true\ntimezone = "Europe/Londn"')


def test_any_holiday_and_observed_days() -> None:
    calendar = Calendar(holidays=["Christmas Day"])
    calendar.check_names(["GB"])  # a name of the country's: no error
    assert not calendar.any_holiday and Calendar(holidays=["ANY"]).any_holiday
