"""Campaign schedules: start and end, weekdays and hours, in the visitor's, the shop's or a
named time zone, with their reasons; `now=` on fragment URLs previews a moment."""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from pathlib import Path

import pytest

from server.campaigns import Campaign, decide
from server.geo import Geo
from server.schedules import parse_now
from server.shops import ShopConfigError, parse_shop_config

from test_campaigns import visitor


def at(now: str, zone: str = "", **schedule):
    """The decision on a banner with this schedule, for a visitor in `zone` at `now` (UTC)."""
    campaign = Campaign(id="s", widget="banner", schedule=schedule)
    campaign.in_shop_zone("Europe/London")
    ctx = dataclasses.replace(visitor(), geo=Geo("US", "United States", timezone=zone), now=datetime.fromisoformat(now))
    return decide(campaign, ctx)


def test_start_and_end_are_read_in_the_visitors_time_zone() -> None:
    # 05:30 UTC is 00:30 in New York on 2 December: the campaign starting that day has started.
    start = {"starts_at": datetime(2026, 12, 2), "ends_at": datetime(2026, 12, 3)}
    shown = at("2026-12-02T05:30", "America/New_York", **start)
    assert shown.show, shown.reasons
    assert "ok: starts 2026-12-02 00:00 EST, it is Wed 2026-12-02 00:30 America/New_York (the visitor's)" in shown.reasons
    early = at("2026-12-02T04:30", "America/New_York", **start)  # 23:30 on the 1st there
    assert not early.show and "no: starts 2026-12-02 00:00 EST, it is Tue 2026-12-01 23:30 America/New_York (the visitor's)" in early.reasons
    late = at("2026-12-03T05:00", "America/New_York", **start)
    assert not late.show and any(r.startswith("no: ends 2026-12-03 00:00 EST") for r in late.reasons)


def test_an_unknown_visitor_zone_falls_back_to_the_shops() -> None:
    decision = at("2026-12-02T09:00", "", days=["wed"], hours=["09:00-10:00"])
    assert decision.show, decision.reasons
    assert decision.reasons[-1] == "ok: runs 09:00-10:00, it is Wed 2026-12-02 09:00 Europe/London (the shop's)"


def test_days_and_hours_across_midnight() -> None:
    night = {"hours": ["22:00-02:00"], "timezone": "Asia/Tokyo"}
    assert at("2026-12-02T14:30", **night).show  # 23:30 in Tokyo
    assert at("2026-12-02T16:30", **night).show  # 01:30
    quiet = at("2026-12-02T03:00", **night)  # 12:00
    assert not quiet.show and quiet.reasons[-1] == "no: runs 22:00-02:00, it is Wed 2026-12-02 12:00 Asia/Tokyo"
    weekend = at("2026-12-05T12:00", "Europe/Berlin", days=["sat", "sun"])
    weekday = at("2026-12-04T12:00", "Europe/Berlin", days=["sat", "sun"])
    assert weekend.show and not weekday.show
    assert weekday.reasons[-1] == "no: runs on sat/sun, it is Fri 2026-12-04 13:00 Europe/Berlin (the visitor's)"


def test_a_time_with_an_offset_is_the_same_moment_everywhere() -> None:
    start = {"starts_at": datetime.fromisoformat("2026-12-02T12:00+00:00")}
    assert at("2026-12-02T12:00", "Pacific/Auckland", **start).show
    assert not at("2026-12-02T11:59", "America/Los_Angeles", **start).show


def test_parse_now() -> None:
    assert parse_now("2026-12-24", "Europe/London") == datetime(2026, 12, 24)
    assert parse_now("2026-07-01T18:00", "Europe/London") == datetime(2026, 7, 1, 17)  # BST
    assert parse_now("2026-07-01T18:00Z", "Europe/London") == datetime(2026, 7, 1, 18)
    assert parse_now("2026-07-01T18:00 02:00", "UTC") == datetime(2026, 7, 1, 16)  # a "+" in a URL is a space
    with pytest.raises(ValueError, match="not a date or time: write 2026-12-24"):
        parse_now("tomorrow", "UTC")


CAMPAIGN = '[[campaigns]]\nid = "s"\nwidget = "banner"\n[campaigns.schedule]\n'


@pytest.mark.parametrize(
    "text, line, field, words",
    [
        (CAMPAIGN + 'hours = ["9-17"]\n', 5, 'campaigns[0] (id "s").schedule.hours', ("'9-17' is not a range of hours", "09:00-17:30")),
        (CAMPAIGN + 'hours = ["10:00-10:00"]\n', 5, 'campaigns[0] (id "s").schedule.hours', ("not a range",)),
        (CAMPAIGN + 'days = ["monday"]\n', 5, 'campaigns[0] (id "s").schedule.days[0]', ("'mon'",)),
        (CAMPAIGN + 'timezone = "Europe/Londn"\n', 5, 'campaigns[0] (id "s").schedule.timezone', ("not a time zone",)),
        (CAMPAIGN + 'starts_at = 2026-12-02T00:00:00\nends_at = 2026-12-01T00:00:00\n', 4, 'campaigns[0] (id "s").schedule', ("is not after starts_at",)),
        (CAMPAIGN + 'starts_at = "soon"\n', 5, 'campaigns[0] (id "s").schedule.starts_at', ("datetime",)),
        ('timezone = "London"\n', 1, "timezone", ("not a time zone", "Europe/London")),
    ],
)
def test_schedule_errors_name_the_line_and_the_field(tmp_path: Path, text: str, line: int, field: str, words: tuple[str, ...]) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(text)
    with pytest.raises(ShopConfigError) as caught:
        parse_shop_config("shop", path)
    message = str(caught.value)
    assert message.startswith(f"{path}:{line}: {field}: "), message
    for word in words:
        assert word in message, message


DISPATCH = "/v1/fragments/banner?shop=demo&placement=cart-notice"


def test_now_previews_the_demos_scheduled_banner(client) -> None:
    monday = client.get(DISPATCH + "&now=2026-12-07T10:00")
    assert monday.headers.get("x-vitrine-campaigns") == "same-day-dispatch"
    assert "same-day dispatch" in monday.text
    sunday = client.get(DISPATCH + "&now=2026-12-06T10:00&_context=1").json()
    [decision] = [d for d in sunday["decisions"] if d["campaign"] == "same-day-dispatch"]
    assert not decision["show"]
    assert "no: runs on mon/tue/wed/thu/fri, it is Sun 2026-12-06 10:00 Europe/London (the shop's)" in decision["reasons"]
    evening = client.get(DISPATCH + "&now=2026-12-07T14:00").headers.get("x-vitrine-campaigns")
    assert evening is None  # 14:00 is past the hours (08:00-14:00)


def test_a_bad_now_is_a_400_and_now_needs_the_qa_key(client, tmp_path) -> None:
    from conftest import qa_headers

    bad = client.get(DISPATCH + "&now=next-week")
    assert bad.status_code == 400 and "now='next-week' is not a date or time" in bad.json()["error"]
    text = (tmp_path / "shops" / "demo.toml").read_text().replace("open = true", "open = false")
    (tmp_path / "shops" / "closed.toml").write_text(text)
    url = "/v1/fragments/banner?shop=closed&placement=cart-notice"
    key = qa_headers(client, "closed")
    assert client.get(url + "&now=2026-12-07T10:00", headers=key).headers.get("x-vitrine-campaigns") == "same-day-dispatch"
    assert client.get(url + "&now=2026-12-06T10:00", headers=key).headers.get("x-vitrine-campaigns") is None
    # Without the key now= is ignored: the real time decides, as with no now= at all.
    real = client.get(url).headers.get("x-vitrine-campaigns")
    assert client.get(url + "&now=2026-12-06T10:00").headers.get("x-vitrine-campaigns") == real
    assert client.get(url + "&now=nonsense").status_code == 200


TIMED = """timezone = "Europe/Paris"
[qa]
open = true
[[campaigns]]
id = "timed"
widget = "popup"
title = "Until six"
[campaigns.countdown]
ends_at = 2026-12-24T18:00:00
"""


def test_a_countdown_to_ends_at_is_rendered_with_the_time_left_and_ends_there(client, tmp_path) -> None:
    (tmp_path / "shops" / "timed.toml").write_text(TIMED)
    url = "/v1/fragments/popup?shop=timed&now=2026-12-24T15:58:30Z"
    html = client.get(url).text
    assert 'data-ends="2026-12-24T17:00:00Z"' in html  # 18:00 in Paris
    assert "<time>1:01:30</time>" in html
    over = client.get("/v1/fragments/popup?shop=timed&now=2026-12-24T17:00Z&_context=1").json()
    [decision] = over["decisions"]
    assert not decision["show"]
    assert "no: its countdown ends 2026-12-24 17:00 UTC, it is 2026-12-24 17:00 UTC" in decision["reasons"]


@pytest.mark.parametrize("countdown, words", [
    ("text = 'Soon'", "either ends_at (a date-time) or minutes"),
    ("minutes = 5\nends_at = 2026-12-24T18:00:00", "either ends_at"),
    ("minutes = 0", "greater than 0"),
])
def test_countdown_errors(tmp_path: Path, countdown: str, words: str) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(f'[[campaigns]]\nid = "c"\nwidget = "popup"\n[campaigns.countdown]\n{countdown}\n')
    with pytest.raises(ShopConfigError, match=re.escape(words)):
        parse_shop_config("shop", path)
