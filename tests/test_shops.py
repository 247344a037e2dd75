"""Shop config files: every problem named with file, line and field; broken files never make a 500."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from server.shops import ShopConfigError, ShopRegistry, parse_shop_config

from conftest import DEMO_CONFIG, UK_IP

ORIGIN = "https://www.myshop.example"
HEAD = f'name = "My shop"\norigins = ["{ORIGIN}"]\n'


def write(path: Path, text: str | bytes) -> Path:
    if isinstance(text, str):
        text = text.encode("utf-8")
    path.write_bytes(text)
    return path


def bump_mtime(path: Path, seconds: int) -> None:
    stat = path.stat()
    os.utime(path, (stat.st_atime, stat.st_mtime + seconds))


def problems_of(path: Path) -> list[str]:
    with pytest.raises(ShopConfigError) as caught:
        ShopRegistry(path.parent).get(path.stem)
    return caught.value.problems


def banner(campaign_id: str = "b", **fields: str) -> str:
    lines = [f"{name} = {json.dumps(value)}" for name, value in fields.items()]
    return "\n".join(["[[campaigns]]", f'id = "{campaign_id}"', 'widget = "banner"', *lines]) + "\n"


# -- not UTF-8 ---------------------------------------------------------------------------
def test_a_file_that_is_not_utf8_names_the_line_and_the_byte(tmp_path: Path) -> None:
    path = write(tmp_path / "shop.toml", b'name = "x"\n\ncurrency = "\xff"\n')
    assert problems_of(path) == [f"{path}:3: not valid UTF-8 (byte 0xff) at line 3, column 13; save the file as UTF-8"]


def test_a_latin1_file_is_refused_not_misread(tmp_path: Path) -> None:
    path = write(tmp_path / "shop.toml", 'name = "Caf\xe9"\n'.encode("latin-1"))
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:1: not valid UTF-8 (byte 0xe9) at line 1")


def test_a_utf8_file_with_a_byte_order_mark_is_read(tmp_path: Path) -> None:
    path = write(tmp_path / "shop.toml", b"\xef\xbb\xbf" + 'name = "Caf\xe9"\n'.encode())
    assert ShopRegistry(tmp_path).get("shop").name == "Caf\xe9"


# -- campaign copy -----------------------------------------------------------------------
COPY_FIELDS = ["title", "body", "cta", "link", "code", "reveal_text"]


@pytest.mark.parametrize("field", COPY_FIELDS)
@pytest.mark.parametrize(
    "text, message",
    [
        ("/Use {SAVE10 now", "a lone { or } (expected '}' before end of string); write {{ or }} for a literal brace"),
        ("/50% off } today", "a lone { or } (Single '}' encountered in format string); write {{ or }} for a literal brace"),
        ("/Hello {city}", "unknown placeholder {city}; use {country}, {country_name}, {region}, {visits}, {favourite_category}, {cart_value}, {first_name} or {occasion}"),
        ("/{0}", "unknown placeholder {0}; use {country}, {country_name}, {region}, {visits}, {favourite_category}, {cart_value}, {first_name} or {occasion}"),
        ("/{}", "unknown placeholder {}; use {country}, {country_name}, {region}, {visits}, {favourite_category}, {cart_value}, {first_name} or {occasion}"),
        ("/{country.__class__}", "placeholder {country.__class__} reaches into {country}; write just {country}"),
        ("/{region[0]}", "placeholder {region[0]} reaches into {region}; write just {region}"),
        ("/{first_name:{region}}", "placeholder {first_name:{region}} has a placeholder in its fallback; write plain text after the colon"),
        ("/{country!r}", "placeholder {country!r} has a conversion; write {country} or {country:fallback text}"),
    ],
)
def test_bad_placeholders_in_any_copy_field_are_refused_with_line_and_field(
    tmp_path: Path, field: str, text: str, message: str
) -> None:
    path = write(tmp_path / "shop.toml", HEAD + banner("first") + banner("welcome", **{field: text}))
    line = len((HEAD + banner("first") + banner("welcome")).splitlines()) + 1
    assert problems_of(path) == [f'{path}:{line}: campaigns[1] (id "welcome").{field}: {message}']


def test_every_problem_of_a_file_is_listed_in_line_order(tmp_path: Path) -> None:
    text = HEAD + banner("a", title="Hi {city}") + '[campaigns.audience]\ncountry = ["GBR"]\n' + banner(
        "b", body="{0}", link="javascript:alert(1)"
    )
    path = write(tmp_path / "shop.toml", text)
    lines = text.splitlines()
    found = [(int(p.split(":")[1]), p.split(": ", 2)[1]) for p in problems_of(path)]
    assert found == [
        (lines.index('title = "Hi {city}"') + 1, 'campaigns[0] (id "a").title'),
        (lines.index('country = ["GBR"]') + 1, 'campaigns[0] (id "a").audience.country'),
        (lines.index('body = "{0}"') + 1, 'campaigns[1] (id "b").body'),
        (lines.index('link = "javascript:alert(1)"') + 1, 'campaigns[1] (id "b").link'),
    ]


def test_problems_in_the_demo_config_name_its_line(tmp_path: Path) -> None:
    text = DEMO_CONFIG.read_text().replace('title = "Welcome back!"', 'title = "Welcome back to {city}!"')
    path = write(tmp_path / "demo.toml", text)
    line = text.splitlines().index('title = "Welcome back to {city}!"') + 1
    assert problems_of(path) == [
        f'{path}:{line}: campaigns[3] (id "returning-christmas").title: '
        "unknown placeholder {city}; use {country}, {country_name}, {region}, {visits}, {favourite_category}, {cart_value}, {first_name} or {occasion}"
    ]


def test_lines_are_found_past_multiline_strings_arrays_dotted_keys_and_inline_tables(tmp_path: Path) -> None:
    text = (
        'name = """a\n[not_a_table]\nx = 1\n"""\n'  # lines 1-4
        'origins = [\n  "https://a.example",  # ] not the end\n]\n'  # 5-7
        '[[campaigns]]\nid = "one"\nwidget = "banner"\naudience.country = ["GBR"]\n'  # 8-11
        '[[campaigns]]\nid = "two"\nwidget = "popup"\ntrigger = { on = "never" }\n'  # 12-15
        '[[campaigns]]\nwidget = "banner"\n'  # 16-17: no id
        '[nav]\n"url" = "javascript:{slug}"\n'  # 18-19
    )
    path = write(tmp_path / "shop.toml", text)
    assert [p.split(": ", 2)[0:2] for p in problems_of(path)] == [
        [f"{path}:11", 'campaigns[0] (id "one").audience.country'],
        [f"{path}:15", 'campaigns[1] (id "two").trigger.on'],
        [f"{path}:16", "campaigns[2].id"],
        [f"{path}:19", "nav.url"],
    ]


def test_repeated_campaign_ids_name_both_lines(tmp_path: Path) -> None:
    text = HEAD + banner("sale") + banner("other") + banner("sale")
    path = write(tmp_path / "shop.toml", text)
    first, second = [i + 1 for i, line in enumerate(text.splitlines()) if line == 'id = "sale"']
    assert problems_of(path) == [
        f"{path}:{second}: campaigns[2] (id \"sale\").id: campaign ids must be unique; 'sale' is used on line {first} too"
    ]


def test_only_the_bad_copy_is_reported_beside_valid_placeholders_and_literal_braces(tmp_path: Path) -> None:
    good = banner("good", title="{{SAVE10}} in {country_name} ({country}, {region})", body="visit {visits}", code="{{X}}")
    path = write(tmp_path / "shop.toml", HEAD + good + banner("bad", title="Hi {city}"))
    [problem] = problems_of(path)
    assert 'campaigns[1] (id "bad").title: unknown placeholder {city}' in problem


# -- links -------------------------------------------------------------------------------
BAD_LINKS = [
    "javascript:alert(1)", "JavaScript:alert(1)", " javascript:alert(1)", "data:text/html,<script>x</script>",
    "vbscript:x", "//evil.example/", "/\\evil.example", "{country}/x", "{country_name}", "evil.example/x",
]


@pytest.mark.parametrize("link", BAD_LINKS)
def test_a_campaign_link_that_is_not_a_web_link_is_refused(tmp_path: Path, link: str) -> None:
    path = write(tmp_path / "shop.toml", HEAD + banner("b", link=link))
    line = len((HEAD + banner("b")).splitlines()) + 1
    [problem] = problems_of(path)
    assert problem.startswith(f'{path}:{line}: campaigns[0] (id "b").link: ')
    assert "is not a web link: use an http(s):// URL or a path starting with a single /" in problem


def test_only_the_non_web_link_is_reported_beside_web_links(tmp_path: Path) -> None:
    good = ["/sale", "/shop/{country}/sale", "https://shop.example/{region}", "HTTP://a.example", ""]
    text = HEAD + "".join(banner(f"good-{i}", link=link) for i, link in enumerate(good))
    path = write(tmp_path / "shop.toml", text + banner("bad", link="javascript:alert(1)"))
    [problem] = problems_of(path)
    assert f'campaigns[{len(good)}] (id "bad").link: ' in problem


@pytest.mark.parametrize("url", ["javascript:{slug}", "{slug}", "//{name}.example", "data:{slug}", "c/{slug}"])
def test_a_nav_url_that_is_not_a_web_link_is_refused(tmp_path: Path, url: str) -> None:
    path = write(tmp_path / "shop.toml", HEAD + f'[nav]\nurl = "{url}"\n')
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:4: nav.url: ")
    assert "is not a web link" in problem


@pytest.mark.parametrize("url", ["/c/{slug}", "https://shop.example/{name}", "/category"])
def test_a_web_nav_url_is_not_reported_beside_a_bad_link(tmp_path: Path, url: str) -> None:
    path = write(tmp_path / "shop.toml", HEAD + f'[nav]\nurl = "{url}"\n' + banner("bad", link="vbscript:x"))
    [problem] = problems_of(path)
    assert 'campaigns[0] (id "bad").link: ' in problem


# -- the registry: logged once per version ------------------------------------------------
def test_a_broken_config_is_logged_once_per_version_of_the_file(tmp_path: Path, caplog) -> None:
    path = write(tmp_path / "shop.toml", HEAD + banner("b", title="Hi {city}"))
    registry = ShopRegistry(tmp_path, check_interval_s=0)
    with caplog.at_level(logging.ERROR, logger="vitrine.shops"):
        for _ in range(3):
            with pytest.raises(ShopConfigError):
                registry.get("shop")
        assert len(caplog.records) == 1
        assert "{city}" in caplog.text and f"{path}:" in caplog.text

        write(path, HEAD + banner("b", title="Hi {town}"))
        bump_mtime(path, 5)
        for _ in range(3):
            with pytest.raises(ShopConfigError, match="town"):
                registry.get("shop")
        assert len(caplog.records) == 2


def test_a_broken_edit_keeps_the_last_good_config_and_is_logged_once(tmp_path: Path, caplog) -> None:
    path = write(tmp_path / "shop.toml", HEAD + banner("b", title="Good"))
    registry = ShopRegistry(tmp_path, check_interval_s=0)
    assert registry.get("shop").campaign("b").title == "Good"
    write(path, HEAD + banner("b", title="Use {SAVE10 now"))
    bump_mtime(path, 5)
    with caplog.at_level(logging.ERROR, logger="vitrine.shops"):
        titles = [registry.get("shop").campaign("b").title for _ in range(3)]
    assert titles == ["Good"] * 3
    assert len(caplog.records) == 1 and "keeping the last good config" in caplog.text


# -- over HTTP: 503 for a shop that never loaded, never a 500 ------------------------------
def never_loaded_shop(settings, text: str | bytes) -> str:
    write(settings.resolved_shops_dir / "broken.toml", text)
    return "broken"


BROKEN_FILES = {
    "not utf-8": HEAD.encode() + b"# caf\xe9\n",
    "stray brace": HEAD + banner("b", title="Use {SAVE10 now"),
    "unknown placeholder": HEAD + banner("b", title="{0}"),
    "conversion": HEAD + banner("b", title="{visits!r}"),
    "javascript link": HEAD + banner("b", link="javascript:alert(1)"),
    "not toml": HEAD + "this is not toml\n",
}


@pytest.mark.parametrize("text", BROKEN_FILES.values(), ids=BROKEN_FILES.keys())
def test_every_request_for_a_shop_whose_config_never_loaded_is_a_503(client, settings, text) -> None:
    shop = never_loaded_shop(settings, text)
    page = {"shop": shop, "slots": [{"id": "top", "widget": "banner"}]}
    events = {"shop": shop, "events": [{"event_id": "broken-000001", "type": "page_view"}]}
    preflight = {"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
    responses = [
        client.get(f"/v1/fragments/banner?shop={shop}"),
        client.post(f"/v1/page?shop={shop}", json=page),
        client.post(f"/v1/events?shop={shop}", json=events),
        client.post(f"/v1/page?shop={shop}", json=page, headers={"Origin": ORIGIN}),
        client.options(f"/v1/page?shop={shop}", headers=preflight),
        client.options(f"/v1/events?shop={shop}", headers=preflight),
    ]
    for r in responses:
        assert r.status_code == 503, (r.request.method, r.request.url, r.text)
        assert r.json()["error"] == (
            "shop 'broken' is not available: its config file is broken "
            "(`vitrine shops check broken` and the server log say why)"
        )


def test_requests_for_a_never_loaded_shop_log_its_problems_once(client, settings, caplog) -> None:
    shop = never_loaded_shop(settings, HEAD + banner("b", title="Hi {city}"))
    with caplog.at_level(logging.ERROR):
        for _ in range(3):
            assert client.get(f"/v1/fragments/banner?shop={shop}").status_code == 503
            assert client.options(
                f"/v1/page?shop={shop}", headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"}
            ).status_code == 503
    logged = [r for r in caplog.records if "{city}" in r.getMessage()]
    assert len(logged) == 1


def test_a_broken_copy_edit_keeps_serving_the_last_good_campaign(client, settings) -> None:
    path = write(settings.resolved_shops_dir / "myshop.toml", HEAD + banner("b", title="Hello {country_name}"))
    url = "/v1/fragments/banner?shop=myshop"
    first = client.get(url, headers={"X-Forwarded-For": UK_IP})
    assert first.status_code == 200 and "Hello United Kingdom" in first.text

    write(path, HEAD + banner("b", title="Use {SAVE10 now"))
    bump_mtime(path, 5)
    for headers in ({"X-Forwarded-For": UK_IP}, {"X-Forwarded-For": UK_IP, "Origin": ORIGIN}):
        r = client.get(url, headers=headers)
        assert r.status_code == 200 and "Hello United Kingdom" in r.text
    preflight = client.options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "GET"})
    assert preflight.status_code == 204

    write(path, HEAD + banner("b", title="{{SAVE10}} in {country}"))
    bump_mtime(path, 10)
    assert "{SAVE10} in GB" in client.get(url, headers={"X-Forwarded-For": UK_IP}).text
