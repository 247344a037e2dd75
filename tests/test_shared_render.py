"""A campaign's fragment is rendered once for everyone who sees the same copy, and rendered for
each visitor when its template reads the visitor (widgets/base.py Templates.render, shared=)."""

from __future__ import annotations

from pathlib import Path

from conftest import UK_IP
from widgets.base import Templates

CHROME = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36"
IPHONE = ("Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) "
          "Version/17.0 Mobile/15E148 Safari/604.1")


def page_banner(client, agent: str, token: str | None = None) -> tuple[str, str]:
    """The top banner of a page call, and the visitor's token."""
    body = {"shop": "demo", "token": token, "page": {"url": "https://shop.example/", "type": "home"},
            "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]}
    r = client.post("/v1/page", json=body, headers={"X-Forwarded-For": UK_IP, "User-Agent": agent})
    assert r.status_code == 200, r.text
    answer = r.json()
    return answer["fragments"]["top"]["html"], answer["token"]


def write_template(settings, name: str, text: str) -> None:
    folder = settings.resolved_data_dir / "templates"
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text)


def shared_entries(services) -> list[tuple]:
    return [key for key in services.templates._shared if key[0] == "banner.html"]


def test_two_visitors_of_one_banner_get_the_html_rendered_once(client, services) -> None:
    first, _ = page_banner(client, CHROME)
    entries = shared_entries(services)
    assert len(entries) == 1 and "Free UK delivery" in first
    second, _ = page_banner(client, IPHONE)
    assert second == first
    assert shared_entries(services) == entries  # reused, not rendered into a second entry
    assert services.templates._shared[entries[0]][2] is not None


def test_a_template_that_reads_the_visitor_is_rendered_for_each(client, services, settings) -> None:
    write_template(settings, "banner-demo.html", '{% extends "default:banner.html" %}'
                   '{% block content %}<p>{{ copy.title }} on {{ visitor.device.device_class }}</p>{% endblock %}')
    desktop, _ = page_banner(client, CHROME)
    phone, _ = page_banner(client, IPHONE)
    assert "Free UK delivery on desktop" in desktop
    assert "Free UK delivery on mobile" in phone
    assert not [key for key in services.templates._shared if key[0] == "banner-demo.html"]


def test_a_designers_edit_replaces_the_shared_html(client, services, settings) -> None:
    before, _ = page_banner(client, CHROME)
    assert "Free UK delivery" in before
    write_template(settings, "banner-demo.html", '{% extends "default:banner.html" %}'
                   '{% block content %}<p class="edited">{{ copy.title }}, edited</p>{% endblock %}')
    after, _ = page_banner(client, CHROME)
    assert '<p class="edited">Free UK delivery, edited</p>' in after
    assert page_banner(client, IPHONE)[0] == after


def test_what_a_template_reads_includes_what_it_extends_and_includes(tmp_path: Path) -> None:
    (tmp_path / "outer.html").write_text('{% extends "middle.html" %}{% block b %}{{ copy.title }}{% endblock %}')
    (tmp_path / "middle.html").write_text('{% block b %}{% endblock %}{% include "inner.html" %}')
    (tmp_path / "inner.html").write_text("{{ visitor.geo.country }}")
    (tmp_path / "macros.html").write_text("{% macro m() %}{{ visitor }}{% endmacro %}")
    (tmp_path / "imports.html").write_text('{% from "macros.html" import m %}{{ m() }} {{ copy.title }}')
    (tmp_path / "with-context.html").write_text('{% from "macros.html" import m with context %}{{ m() }}')
    (tmp_path / "dynamic.html").write_text("{% include which %}")
    templates = Templates([tmp_path], check_interval_s=0)
    assert {"copy", "visitor"} <= templates.reads(templates.select(["outer.html"]))
    # A macro imported without the context cannot see the visitor; with it, it can.
    assert "visitor" not in templates.reads(templates.select(["imports.html"]))
    assert "visitor" in templates.reads(templates.select(["with-context.html"]))
    assert templates.reads(templates.select(["dynamic.html"])) is None  # cannot be told: never shared
    assert "visitor" not in templates.reads(templates.select(["banner.html"]))
    assert "visitor" not in templates.reads(templates.select(["popup.html"]))


def test_a_panel_of_the_same_items_is_rendered_once_and_other_items_get_their_own(client, services) -> None:
    def panel() -> dict:
        body = {"shop": "demo", "page": {"url": "https://shop.example/", "type": "home"},
                "slots": [{"id": "recs", "widget": "recommendations", "attrs": {"strategy": "trending", "count": "2"}},
                          {"id": "more", "widget": "recommendations", "attrs": {"strategy": "trending", "count": "2", "title": "More"}}]}
        r = client.post("/v1/page", json=body, headers={"X-Forwarded-For": UK_IP, "User-Agent": CHROME})
        assert r.status_code == 200, r.text
        return r.json()["fragments"]

    first, second = panel(), panel()
    assert first["recs"]["html"] == second["recs"]["html"] and 'data-item-id="' in first["recs"]["html"]
    panels = [key for key in services.templates._shared if key[0] == "recommendations.html"]
    assert len(panels) == 2  # one per slot, each rendered once for both visitors
    assert second["more"]["html"] == first["more"]["html"] != first["recs"]["html"]
