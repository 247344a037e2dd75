"""`[audiences]` in a shop config: thresholds, loyalty tiers and rules as the server reads
them, and every problem named with its file, line and field."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from server.cli import main
from server.shops import ShopConfigError, parse_shop_config

from conftest import DEMO_CONFIG


def problems_of(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "shop.toml"
    path.write_text(text)
    with pytest.raises(ShopConfigError) as caught:
        parse_shop_config("shop", path)
    return [p.removeprefix(f"{path}:") for p in caught.value.problems]


def config_of(tmp_path: Path, text: str):
    path = tmp_path / "shop.toml"
    path.write_text(text)
    return parse_shop_config("shop", path)


def test_without_an_audiences_table_the_built_ins_have_their_default_thresholds(tmp_path: Path) -> None:
    config = config_of(tmp_path, 'name = "Shop"\n')
    assert (config.audiences.lapsed_days, config.audiences.cart_abandon_minutes) == (300, 60)
    assert config.audience_book.ids() == (
        "new", "returning", "prospect", "first_time_customer", "repeat_customer", "loyal", "loyal_bronze",
        "loyal_silver", "loyal_gold", "lapsed", "cart_abandoner")
    assert [(t.tier, t.orders, t.revenue) for t in config.audiences.loyal] == [
        ("bronze", 3, None), ("silver", 6, None), ("gold", 10, None)]


def test_the_shops_tiers_and_audiences_are_listed_after_the_built_ins_in_the_files_order(tmp_path: Path) -> None:
    config = config_of(tmp_path, """
[audiences]
lapsed_days = 90
[[audiences.loyal]]
tier = "vip"
revenue = 500
[[audiences.custom]]
id = "zeta"
audience = "alpha"
[[audiences.custom]]
id = "alpha"
description = "Big baskets"
cart_value = { min = 100 }
""")
    book = config.audience_book
    assert book.ids() == ("new", "returning", "prospect", "first_time_customer", "repeat_customer", "loyal",
                          "loyal_vip", "lapsed", "cart_abandoner", "zeta", "alpha")
    # zeta names alpha, so alpha is worked out first
    assert [a.id for a in book.ordered][-2:] == ["alpha", "zeta"]
    assert book.by_id["alpha"].description == "Big baskets"
    assert book.by_id["lapsed"].description == "a customer whose last order is 90 days old or more"


def test_every_problem_of_the_audiences_is_named_with_its_line(tmp_path: Path) -> None:
    text = """name = "Shop"

[audiences]
cart_abandon_minutes = 0

[[audiences.loyal]]
tier = "gold"

[[audiences.loyal]]
tier = "Gold Plus"
orders = 9

[[audiences.custom]]
id = "a"
cart_vale = { min = 5 }

[[audiences.custom]]
id = "b"
all = [
  { orders = { above = 2 } },
  { device = "phone" },
  { audience = "nope" },
  { visits = { min = "two" } },
]
"""
    assert problems_of(tmp_path, text) == [
        "4: audiences.cart_abandon_minutes: Input should be greater than or equal to 1",
        "6: audiences.loyal[0]: tier 'gold' needs orders, revenue or both (either reaches it)",
        "10: audiences.loyal[1].tier: String should match pattern '^[a-z][a-z0-9_]{0,31}$'",
        '15: audiences.custom[0] (id "a").cart_vale: unknown fact \'cart_vale\'; did you mean cart_value?',
        '20: audiences.custom[1] (id "b").all[0].orders.above: unknown operator \'above\'; orders takes min '
        "and/or max, or a number",
        '21: audiences.custom[1] (id "b").all[1].device: \'phone\' is not a device: use mobile, tablet, desktop, '
        "bot, other",
        '22: audiences.custom[1] (id "b").all[2].audience: unknown audience \'nope\'; the audiences are a, b, '
        "cart_abandoner, first_time_customer, lapsed, loyal, loyal_bronze, loyal_gold, loyal_silver, new, "
        "prospect, repeat_customer, returning",
        '23: audiences.custom[1] (id "b").all[3].visits.min: min is a number, not \'two\'',
    ]


@pytest.mark.parametrize("rule, message", [
    ('orders = { min = 3, max = 1 }', "orders: min (3) is more than max (1)"),
    ('orders = true', "orders: orders takes a number or a table with min and/or max, not True"),
    ('orders = {}', "orders: orders needs min and/or max"),
    ('signed_up = "yes"', "signed_up: signed_up is true or false, not 'yes'"),
    ('country = ["GB", "United Kingdom"]', "country: 'United Kingdom' is not a two-letter country code"),
    ('weekday = "monday"', "weekday: 'monday' is not a weekday: use mon, tue, wed, thu, fri, sat, sun"),
    ('medium = "cpc"', "medium: 'cpc' is not a medium: use direct, organic, paid, social, email, referral"),
    ('local_hour = 24', "local_hour: 24 is out of range: local_hour is an hour from 0 to 23"),
    ('interest = { category = "Gifts", min = 40 }',
     "interest: 40 is out of range: interest is a share from 0 to 1 (0.3 is 30%)"),
    ('interest = { min = 0.4 }', 'interest: interest needs a category and a range, e.g. { category = "Christmas", '
     "min = 0.3 }"),
    ('category_views = { category = "Gifts", at_least = 3 }',
     "category_views.at_least: unknown operator 'at_least'; category_views takes min and/or max (with category)"),
    ('landing_page = { starts = "/sale" }',
     "landing_page.starts: unknown operator 'starts'; landing_page takes a value, a list of values, or a table "
     "with contains or prefix"),
    ('searches = { prefix = "tv" }',
     "searches.prefix: unknown operator 'prefix'; searches takes a value, a list of values, or a table with contains"),
    ('searches = []', "searches: an empty list: give a value or a list of values"),
    ('viewed_items = [1, 2]', "viewed_items[0]: expected a value or a list of values, not 1"),
    ('all = []', "all: all is a list of conditions, e.g. all = [{ orders = 0 }, { visits = { min = 2 } }]"),
    ('any = { orders = 0 }', "any: any is a list of conditions, e.g. any = [{ orders = 0 }, { visits = { min = 2 } }]"),
    ('not = [{ orders = 0 }]', "not: a condition is a table such as { orders = { min = 2 } }, not a list"),
    ('all = [{}]', "all[0]: no condition: name a fact (orders, cart_value, country ...), an audience, or all / any / not"),
    ('audience = 3', "audience: expected an audience id or a list of them, not 3"),
    ('vists = 2', "vists: unknown fact 'vists'; did you mean visits?"),
    ('zodiac = "leo"', "zodiac: unknown fact 'zodiac'; docs/audiences.md lists the facts"),
])
def test_a_bad_condition_is_named_with_its_field(tmp_path: Path, rule: str, message: str) -> None:
    [problem] = problems_of(tmp_path, f'[[audiences.custom]]\nid = "x"\n{rule}\n')
    assert problem == f'3: audiences.custom[0] (id "x").{message}'


def test_an_audience_without_conditions_or_id_is_refused(tmp_path: Path) -> None:
    assert problems_of(tmp_path, '[[audiences.custom]]\nid = "lonely"\ndescription = "nothing"\n') == [
        '1: audiences.custom[0] (id "lonely"): no condition: name a fact (orders, cart_value, country ...), '
        "an audience, or all / any / not"]
    assert problems_of(tmp_path, '[[audiences.custom]]\norders = 1\n') == [
        "1: audiences.custom[0].id: every audience needs an id"]
    assert problems_of(tmp_path, '[[audiences.custom]]\nid = "Big Spenders"\norders = 1\n') == [
        '2: audiences.custom[0] (id "Big Spenders").id: every audience needs an id of lower-case letters, digits '
        "and _ (starting with a letter, at most 64), not 'Big Spenders'"]


def test_ids_are_unique_and_never_a_built_in_one(tmp_path: Path) -> None:
    assert problems_of(tmp_path, """
[[audiences.custom]]
id = "lapsed"
orders = 0
[[audiences.custom]]
id = "mine"
orders = 0
[[audiences.custom]]
id = "mine"
orders = 1
[[audiences.custom]]
id = "loyal_gold"
orders = 1
""") == [
        '3: audiences.custom[0] (id "lapsed").id: audience id \'lapsed\' is a built-in audience',
        '9: audiences.custom[2] (id "mine").id: audience id \'mine\' is used by another audience too',
        '12: audiences.custom[3] (id "loyal_gold").id: audience id \'loyal_gold\' is a built-in audience',
    ]


def test_audiences_that_name_each_other_in_a_circle_are_refused(tmp_path: Path) -> None:
    assert problems_of(tmp_path, """
[[audiences.custom]]
id = "a"
audience = "b"
[[audiences.custom]]
id = "b"
any = [{ visits = 1 }, { not = { audience = "c" } }]
[[audiences.custom]]
id = "c"
audience = ["new", "a"]
[[audiences.custom]]
id = "self"
audience = "self"
""") == [
        '10: audiences.custom[2] (id "c").audience: audiences name each other in a circle: a → b → c → a',
        '13: audiences.custom[3] (id "self").audience: audiences name each other in a circle: self → self',
    ]


def test_campaigns_may_target_only_audiences_the_shop_has(tmp_path: Path) -> None:
    assert problems_of(tmp_path, """
[[audiences.custom]]
id = "big_cart"
cart_value = { min = 100 }

[[campaigns]]
id = "offer"
widget = "banner"
[campaigns.audience]
audiences = ["lapsed", "big_cart"]
not_audiences = [
  "loyal",
  "big_chart",
]
""") == ['13: campaigns[0] (id "offer").audience.not_audiences[1]: unknown audience \'big_chart\'; the audiences '
         "are new, returning, prospect, first_time_customer, repeat_customer, loyal, loyal_bronze, loyal_silver, "
         "loyal_gold, lapsed, cart_abandoner, big_cart"]


def test_no_audience_may_be_made_of_a_sensitive_category(tmp_path: Path) -> None:
    assert problems_of(tmp_path, """
sensitive_categories = ["Health"]
[[audiences.custom]]
id = "dieters"
interest = { category = "Health > Diet", min = 0.2 }
[[audiences.custom]]
id = "gifts"
viewed_categories = ["Gifts"]
""") == ['3: audiences.custom[0] (id "dieters"): audience \'dieters\' names \'Health > Diet\', a sensitive category '
         "(sensitive_categories): no audience may be made of it"]


def test_the_rules_problems_are_listed_beside_the_rest_of_the_files(tmp_path: Path) -> None:
    found = problems_of(tmp_path, 'currency = 3\n[[audiences.custom]]\nid = "x"\norders = { max = -1 }\n')
    assert found == ["1: currency: Input should be a valid string",
                     '4: audiences.custom[0] (id "x").orders: -1 is out of range: orders is never negative']


def test_the_demo_config_is_valid_and_names_every_kind_of_audience(tmp_path: Path) -> None:
    config = parse_shop_config("demo", DEMO_CONFIG)
    ids = config.audience_book.ids()
    assert {"lapsed", "cart_abandoner", "loyal_gold", "christmas_fans", "big_basket"} <= set(ids)
    targeted = {a for c in config.campaigns for a in c.audience.audiences + c.audience.not_audiences}
    assert {"lapsed", "cart_abandoner", "big_basket", "christmas_fans"} <= targeted


def test_vitrine_shops_check_prints_the_audiences_problems(tmp_path: Path) -> None:
    shops = tmp_path / "shops"
    shops.mkdir()
    (shops / "shop.toml").write_text('[[audiences.custom]]\nid = "x"\ncart_value = { over = 5 }\n')
    result = CliRunner().invoke(main, ["--data-dir", str(tmp_path), "shops", "check", "shop"],
                                env={"VITRINE_SECRET_KEYS": "k"})
    assert result.exit_code == 2
    assert result.output == (f'{(shops / "shop.toml").resolve()}:3: audiences.custom[0] (id "x").cart_value.over: '
                             "unknown operator 'over'; cart_value takes min and/or max, or a number\n")
