"""Experiments on slots and campaigns, and the shop's hold-out (server/measure/experiments.py):
GrowthBook's hashing, balance and stickiness of the assignment, what each variant and the
hold-out see through the page call, exposures recorded once, QA's previews, config errors."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from server.identity import new_visitor_id
from server.measure.experiments import EXPOSURE, Experiment, in_holdout, place
from server.shops import ShopConfigError, parse_shop_config

from servers import demo_experiments

from conftest import DEMO_CONFIG, UK_IP, qa_headers, stored

# GrowthBook's own hash (the `growthbook` Python SDK 4.0.0, growthbook.core.gbhash(seed,
# value, 2)) on these inputs, computed once with it.
GROWTHBOOK_HASH_V2 = [
    ("", "a", 0.0216), ("", "b", 0.9054), ("b", "a", 0.665), ("ab", "abc", 0.327),
    ("hero", "2f9c1a7b-visitor", 0.2306), ("holdout:demo", "abc123", 0.6952), ("hero", "xNq3_tokenlike-ID", 0.2894),
]

EXPERIMENT = demo_experiments()  # the demo's A/B test on its hero
HERO = [{"id": "home-hero", "widget": "banner", "attrs": {}}]
RECS = [{"id": "home-recs", "widget": "recommendations", "attrs": {"strategy": "top_picks"}}]


def with_config(settings, top: str = "", tail: str = "") -> None:
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(top + path.read_text() + tail)


def page_call(client, token: str | None = None, slots=HERO, consent: dict | None = None, page_type: str = "home") -> dict:
    body = {"shop": "demo", "page": {"type": page_type, "url": "http://127.0.0.1:8000/demo/"}, "slots": slots,
            **({"token": token} if token else {}), **({"consent": consent} if consent else {})}
    client.cookies.clear()
    r = client.post("/v1/page?shop=demo", json=body, headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200, r.text
    return r.json()


def visitor_of(client, token: str) -> str:
    return client.app.state.services.signer.visitor_id("demo", token)


def first_of(client, wanted, tries: int = 200, **kwargs) -> dict:
    """The page call of the first new visitor `wanted(answer)` holds for."""
    for _ in range(tries):
        data = page_call(client, **kwargs)
        if wanted(data):
            return data
    raise AssertionError("no visitor of that kind in %d tries" % tries)


# -- the hash and the split ------------------------------------------------------------
@pytest.mark.parametrize("seed,value,expected", GROWTHBOOK_HASH_V2)
def test_place_is_growthbooks_hash_version_2(seed: str, value: str, expected: float) -> None:
    assert place(seed, value) == expected


def test_a_hundred_thousand_visitors_split_within_one_percent_of_the_weights() -> None:
    experiment = Experiment.model_validate({"id": "x", "slot": "s", "variants": [
        {"id": "a", "weight": 2}, {"id": "b", "weight": 1}, {"id": "c", "weight": 1}]})
    ids = [new_visitor_id() for _ in range(100_000)]
    counts = Counter(experiment.pick(place(experiment.key, v)).id for v in ids)
    for variant, share in (("a", 0.5), ("b", 0.25), ("c", 0.25)):
        assert abs(counts[variant] / len(ids) - share) < 0.01, counts
    held = sum(in_holdout(0.05, "demo", v) for v in ids)
    assert abs(held / len(ids) - 0.05) < 0.01
    # Another experiment splits the same visitors independently of this one.
    other = Experiment.model_validate({"id": "y", "slot": "t", "variants": [{"id": "a"}, {"id": "b"}]})
    both = Counter((experiment.pick(place("x", v)).id == "a", other.pick(place("y", v)).id == "a") for v in ids)
    assert abs(both[(True, True)] / len(ids) - 0.25) < 0.01, both


# -- through the page call ---------------------------------------------------------------
def test_each_visitor_keeps_their_variant_and_the_answer_names_it(client, settings) -> None:
    with_config(settings, tail=EXPERIMENT)
    seen = {}
    for _ in range(40):
        data = page_call(client)
        variant = data["experiments"]["hero"]
        seen[variant] = data
        assert data["holdout"] is False
        if variant == "new-this-week":
            fragment = data["fragments"]["home-hero"]
            assert "New this week" in fragment["html"] and fragment["campaigns"] == ["hero-new-this-week"]
            assert (fragment["experiment"], fragment["variant"]) == ("hero", "new-this-week")
        else:  # the control: a first visitor's hero is the page's own (no campaign targets them)
            assert "home-hero" not in data["fragments"]
        # The same visitor, on their next pages, keeps it.
        for _ in range(2):
            again = page_call(client, token=data["token"])
            assert again["experiments"] == {"hero": variant}
        expected = "control" if place("hero", visitor_of(client, data["token"])) < 0.5 else "new-this-week"
        assert variant == expected
        if len(seen) == 2:
            break
    assert set(seen) == {"control", "new-this-week"}


def test_the_first_exposure_is_stored_once_per_visitor(client, settings, services) -> None:
    with_config(settings, tail=EXPERIMENT)
    data = page_call(client)
    for _ in range(3):
        page_call(client, token=data["token"])
    page_call(client, token=data["token"], slots=RECS)  # a page without the slot: no exposure
    visitor = visitor_of(client, data["token"])
    events = [e for e in stored(services).visitor_events("demo", visitor) if e.type == EXPOSURE]
    assert len(events) == 1
    assert events[0].props == {"experiment": "hero", "variant": data["experiments"]["hero"], "slot": "home-hero"}
    # Another worker (a fresh process has no memory of it) stores nothing new: the id is the same.
    services.contexts._exposed._keys.clear()
    page_call(client, token=data["token"])
    assert [e.type for e in stored(services).visitor_events("demo", visitor)].count(EXPOSURE) == 1
    # The visitor's profile counts their page views, not their exposures.
    assert stored(services).get_visitor("demo", visitor).page_views == 6


def test_without_consent_a_visitor_is_in_no_experiment(client, settings, services) -> None:
    with_config(settings, tail=EXPERIMENT)
    for _ in range(10):
        data = page_call(client, consent={"personalization": False, "analytics": False})
        assert data["experiments"] == {} and "home-hero" not in data["fragments"]
    assert stored(services).count_events("demo", EXPOSURE) == 0


def test_the_holdout_sees_nothing_personal_and_is_in_no_experiment(client, settings, services) -> None:
    with_config(settings, top="holdout = 0.5\n", tail=EXPERIMENT)
    slots = [*HERO, *RECS, {"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]
    held = first_of(client, lambda d: d["holdout"], slots=slots)
    visitor = visitor_of(client, held["token"])
    assert in_holdout(0.5, "demo", visitor)
    # Views that would make their top picks their own, and a cart that would remind them.
    client.cookies.clear()
    r = client.post("/v1/events?shop=demo", headers={"X-Forwarded-For": UK_IP}, json={
        "shop": "demo", "token": held["token"], "events": [
            {"event_id": f"view-{n:04d}", "type": "view_item", "item_id": "85123A"} for n in range(4)]})
    assert r.status_code == 202
    again = page_call(client, token=held["token"], slots=slots)
    assert again["holdout"] is True and again["experiments"] == {} and again["popups"] == []
    assert "top" not in again["fragments"] and "home-hero" not in again["fragments"]  # no campaign at all
    assert again["fragments"]["home-recs"]["strategy"] != "top_picks"  # not their own picks
    # Their page views are still recorded (the hold-out is measured), and they stay in it.
    assert stored(services).get_visitor("demo", visitor).page_views == 2
    # A visitor out of the hold-out on the same page gets the banner for UK visitors.
    other = first_of(client, lambda d: not d["holdout"], slots=slots)
    assert "Free UK delivery" in other["fragments"]["top"]["html"]


def test_a_campaign_experiment_shows_another_campaign_or_none(client, settings, services) -> None:
    with_config(settings, tail="""
[[campaigns]]
id = "welcome-b"
widget = "popup"
enabled = false
title = "Hello there, first-timer"
cta = "Reveal my code"
code = "HELLO10"

[[experiments]]
id = "welcome-test"
campaign = "welcome"
[[experiments.variants]]
id = "control"
[[experiments.variants]]
id = "other-copy"
campaign = "welcome-b"
[[experiments.variants]]
id = "no-popup"
default = true
""")
    seen = {}
    for _ in range(60):
        data = page_call(client, slots=[])
        variant = data["experiments"]["welcome-test"]  # an exposure even with no popup shown
        popups = data["popups"]
        names = [p["campaign"] for p in popups]
        if variant == "control":
            assert "welcome" in names and "welcome-b" not in names
        elif variant == "other-copy":
            assert "welcome-b" in names and "welcome" not in names
            (shown,) = [p for p in popups if p["campaign"] == "welcome-b"]
            assert "Hello there" in shown["html"] and (shown["experiment"], shown["variant"]) == ("welcome-test", "other-copy")
        else:
            assert "welcome" not in names and "welcome-b" not in names
        seen.setdefault(variant, data)
        if len(seen) == 3:
            break
    assert set(seen) == {"control", "other-copy", "no-popup"}
    assert stored(services).count_events("demo", EXPOSURE) >= 3
    # welcome-b is off on its own: a visitor outside the experiment's reach never gets it.
    customer = client.get("/v1/fragments/popup?shop=demo&visitor=customer&variant=welcome-test:other-copy&_context=1",
                          headers={"X-Forwarded-For": UK_IP, **qa_headers(client, "demo")}).json()
    assert customer["campaigns"] == []


def test_qa_previews_a_variant_and_the_holdout_on_fragment_urls(client, settings) -> None:
    with_config(settings, tail=EXPERIMENT)
    headers = {"X-Forwarded-For": UK_IP, **qa_headers(client, "demo")}
    r = client.get("/v1/fragments/banner?shop=demo&slot=home-hero&variant=hero:new-this-week", headers=headers)
    assert r.status_code == 200 and "New this week" in r.text
    assert r.headers["X-Vitrine-Variant"] == "hero:new-this-week"
    context = client.get("/v1/fragments/banner?shop=demo&slot=home-hero&variant=hero:control&_context=1",
                         headers=headers).json()
    assert context["experiment"] == {"experiment": "hero", "variant": "control", "counted": False,
                                     "reason": "variant control chosen by QA (variant=)"}
    held = client.get("/v1/fragments/banner?shop=demo&slot=top&placement=top&holdout=1&_context=1",
                      headers=headers).json()
    assert held["visitor"]["holdout"] is True and held["campaigns"] == []
    assert any("in the shop's hold-out" in r for d in held["decisions"] for r in d["reasons"])
    # Without the QA key the overrides are ignored (the shop is open for QA in the demo: close it).
    path = settings.resolved_shops_dir / "demo.toml"
    path.write_text(path.read_text().replace("open = true", "open = false"))
    variants = set()
    for _ in range(20):  # new visitors each time: their own variants, not the one asked for
        client.cookies.clear()
        plain = client.get("/v1/fragments/banner?shop=demo&slot=home-hero&variant=hero:new-this-week",
                           headers={"X-Forwarded-For": UK_IP})
        variants.add(plain.headers["X-Vitrine-Variant"])
    assert variants == {"hero:control", "hero:new-this-week"}


# -- the config ---------------------------------------------------------------------------
def test_config_errors_name_the_line_and_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "shop.toml"
    path.write_text("""holdout = 0.9
[[campaigns]]
id = "pop"
widget = "popup"

[[experiments]]
id = "a"
slot = "home-hero"
campaign = "pop"
[[experiments.variants]]
id = "x"
[[experiments.variants]]
id = "y"

[[experiments]]
id = "b"
slot = "home-hero"
[[experiments.variants]]
id = "x"
[[experiments.variants]]
id = "x"

[[experiments]]
id = "c"
slot = "home-hero"
[[experiments.variants]]
id = "one"
[[experiments.variants]]
id = "two"
campaign = "nowhere"
default = true

[[experiments]]
id = "d"
campaign = "pop"
[[experiments.variants]]
id = "one"
strategy = "bestsellers"
[[experiments.variants]]
id = "two"
""")
    with pytest.raises(ShopConfigError) as caught:
        parse_shop_config("shop", path)
    problems = "\n".join(caught.value.problems)
    assert f"{path}:1: holdout: Input should be less than or equal to 0.5" in problems
    assert f"{path}:6: experiments[0] (id \"a\"): experiment 'a' runs on one slot or one campaign" in problems
    assert f"{path}:18: experiments[1] (id \"b\").variants: variant 'x' is listed twice" in problems
    assert "variant 'two': default = true shows the shop's default content; it sets nothing else" in problems
    # Those found once the experiments are read, on their lines.
    path.write_text("""[[campaigns]]
id = "pop"
widget = "popup"

[[experiments]]
id = "a"
slot = "home-hero"
[[experiments.variants]]
id = "one"
[[experiments.variants]]
id = "two"
campaign = "pop"

[[experiments]]
id = "b"
slot = "home-hero"
[[experiments.variants]]
id = "one"
[[experiments.variants]]
id = "two"
campaign = "nowhere"

[[experiments]]
id = "c"
campaign = "pop"
[[experiments.variants]]
id = "one"
[[experiments.variants]]
id = "two"
strategy = "bestsellers"
""")
    with pytest.raises(ShopConfigError) as caught:
        parse_shop_config("shop", path)
    assert caught.value.problems == [
        f"{path}:12: experiments[0] (id \"a\").variants[1] (id \"two\").campaign: campaign 'pop' is a popup: "
        "a slot shows banners",
        f"{path}:16: experiments[1] (id \"b\").slot: slot 'home-hero' is already in experiment 'a': "
        "one experiment per slot or campaign",
        f"{path}:21: experiments[1] (id \"b\").variants[1] (id \"two\").campaign: no campaign 'nowhere' in this config",
        f"{path}:30: experiments[2] (id \"c\").variants[1] (id \"two\").strategy: a campaign's variant names the "
        'campaign shown instead (campaign = "...") or default = true, nothing else',
    ]


def test_the_demo_runs_an_ab_test_on_its_hero_and_a_holdout() -> None:
    demo = parse_shop_config("demo", DEMO_CONFIG)
    assert demo.holdout == 0.05
    hero = demo.slot_experiment("home-hero")
    assert hero is not None and [v.id for v in hero.variants] == ["control", "new-this-week"]
    shown = demo.campaign(hero.variants[1].campaign)
    assert shown is not None and not shown.enabled and shown.widget == "banner"
