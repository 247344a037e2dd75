"""A shop's `site_url`: the paths of its catalog, campaigns and menu made absolute on its site,
so that a fragment embedded on another origin keeps its links and images."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from server.shops import ShopConfigError, parse_shop_config
from server.urls import on_site, site_base

from conftest import SMALL_CATALOG, UK_IP


@pytest.fixture(autouse=True)
def items_with_links(services) -> None:
    """The small catalog with the demo's kind of links: paths on the shop's site."""
    services.store.upsert_items("demo", [dataclasses.replace(
        item, url=f"/demo/product/{item.item_id}", image_url=f"/demo/img/{item.item_id}.svg") for item in SMALL_CATALOG])


def use_site(settings, site: str | None) -> None:
    path = settings.resolved_shops_dir / "demo.toml"
    text = re.sub(r'(?m)^site_url = .*$\n', "", path.read_text())
    path.write_text((f'site_url = "{site}"\n' if site is not None else "") + text)


def fragment(client, kind: str, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    r = client.get(f"/v1/fragments/{kind}?shop=demo&{query}", headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200, r.text
    return r.text


def links(html: str) -> set[str]:
    return set(re.findall(r'(?:href|src)="([^"?#][^"]*)"', html))


def test_the_demo_links_to_this_server_from_any_origin(client) -> None:
    html = fragment(client, "recommendations", strategy="bestsellers")
    found = links(html)
    assert found and all(u.startswith("http://127.0.0.1:8000/demo/") for u in found), found
    banner = fragment(client, "banner", slot="home-hero", visitor="returning")
    assert 'href="http://127.0.0.1:8000/demo/category/christmas"' in banner


def test_self_is_the_public_url_when_set(settings, services) -> None:
    from starlette.testclient import TestClient

    from server.app import build_services, create_app

    settings = dataclasses.replace(settings, public_url="https://vitrine.example.com")
    other = build_services(settings)
    try:
        client = TestClient(create_app(settings, other), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
        found = links(fragment(client, "recommendations", strategy="bestsellers"))
    finally:
        other.close()
    assert found and all(u.startswith("https://vitrine.example.com/demo/") for u in found), found


def test_a_shops_own_site_and_none(client, settings) -> None:
    use_site(settings, "https://www.myshop.example/")
    found = links(fragment(client, "recommendations", strategy="bestsellers"))
    assert found and all(u.startswith("https://www.myshop.example/demo/") for u in found), found
    nav = fragment(client, "nav", categories="christmas,gifts")
    assert 'href="https://www.myshop.example/demo/category/christmas"' in nav
    use_site(settings, None)
    found = links(fragment(client, "recommendations", strategy="bestsellers"))
    assert found and all(u.startswith("/demo/") for u in found), found


def test_the_host_header_never_makes_the_links(client) -> None:
    r = client.get("/v1/fragments/recommendations?shop=demo&strategy=bestsellers",
                   headers={"Host": "evil.example", "X-Forwarded-Host": "evil.example"})
    assert "evil.example" not in r.text


@pytest.mark.parametrize("site", ["javascript:alert(1)", "//evil.example", "/relative", "ftp://shop.example", "https://"])
def test_a_site_url_that_is_no_site_is_refused_with_its_line(tmp_path: Path, site: str) -> None:
    path = tmp_path / "shop.toml"
    path.write_text(f'name = "x"\nsite_url = "{site}"\n')
    with pytest.raises(ShopConfigError) as caught:
        parse_shop_config("shop", path)
    assert caught.value.problems == [f'{path}:2: site_url: {site!r} is not the base URL of a site: write '
                                     '"https://www.myshop.example", or "self"']


def test_on_site_and_site_base() -> None:
    assert on_site("/p/1", "https://s.example") == "https://s.example/p/1"
    assert on_site("https://cdn.example/i.png", "https://s.example") == "https://cdn.example/i.png"
    assert on_site("//evil.example/x", "https://s.example") == "//evil.example/x"  # not a path: left to web_url
    assert on_site("/p/1", "") == "/p/1"
    assert site_base("self", "", "0.0.0.0", 8080) == "http://127.0.0.1:8080"
    assert site_base("self", "https://v.example", "0.0.0.0", 8080) == "https://v.example"
    assert site_base("https://s.example", "https://v.example", "h", 1) == "https://s.example"
