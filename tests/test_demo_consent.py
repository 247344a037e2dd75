"""The consent demo (/demo/consent): a page of the demo-consent shop, whose rule is
consent = "required", with the shop's own banner calling vitrine('consent', ...)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

from server.cli import _install_demo_shop
from server.shops import parse_shop_config

from conftest import ROOT, UK_IP, stored

CONSENT_CONFIG = ROOT / "server" / "demo" / "demo-consent.toml"
PAGE = {"url": "http://127.0.0.1:8000/demo/consent", "type": "home"}
SLOTS = [{"id": "top-banner", "widget": "banner", "attrs": {"placement": "top"}},
         {"id": "home-hero", "widget": "banner", "attrs": {}}]


def install(settings) -> None:
    shutil.copyfile(CONSENT_CONFIG, settings.resolved_shops_dir / "demo-consent.toml")


def call(client, consent=None, token=None):
    body = {"shop": "demo-consent", "page": PAGE, "slots": SLOTS}
    if consent is not None:
        body["consent"] = consent
    headers = {"X-Forwarded-For": UK_IP, **({"X-Visitor-Token": token} if token else {})}
    client.cookies.clear()
    return client.post("/v1/page?shop=demo-consent", json=body, headers=headers)


def test_the_consent_demo_shop_requires_consent() -> None:
    config = parse_shop_config("demo-consent", CONSENT_CONFIG)
    assert config.consent == "required"
    assert config.consent_policy.required_for("GB")[0]


def test_the_page_embeds_the_script_for_the_required_consent_shop(client, settings) -> None:
    install(settings)
    response = client.get("/demo/consent")
    assert response.status_code == 200
    html = response.text
    assert re.search(r'<script async src="[^"]*/v1/vitrine\.js" data-shop="demo-consent"></script>', html)
    # The shop's own banner: its two buttons, and the calls they make.
    assert "data-consent-accept" in html and "data-consent-refuse" in html
    assert 'vitrine("consent", choice)' in html
    # The queueing stub comes before the script tag, so a saved answer reaches the first page call.
    assert html.index("vitrine.q = vitrine.q ||") < html.index("/v1/vitrine.js")


def test_nothing_is_kept_before_accept_and_everything_goes_after_only_necessary(client, settings, services) -> None:
    install(settings)
    before = call(client)
    assert before.status_code == 200
    assert "token" not in before.json() and "set-cookie" not in before.headers
    assert before.json()["consent"] == {"personalization": False, "analytics": False, "withdrawn": False}
    assert "top-banner" in before.json()["fragments"]  # campaigns show without consent

    yes = {"personalization": True, "analytics": True}
    first = call(client, yes)
    token = first.json()["token"]
    visitor = services.signer.visitor_id("demo-consent", token)
    second = call(client, yes, token)
    assert "home-hero" in second.json()["fragments"]  # the second page view's banner
    assert stored(services).get_visitor("demo-consent", visitor).page_views == 2

    no = call(client, {"personalization": False, "analytics": False}, token)
    assert no.json()["consent"]["withdrawn"] is True
    assert stored(services).get_visitor("demo-consent", visitor) is None


def test_vitrine_demo_installs_both_configs(settings) -> None:
    (settings.resolved_shops_dir / "demo.toml").unlink()
    _install_demo_shop(settings)
    assert (settings.resolved_shops_dir / "demo.toml").read_text() == (ROOT / "server/demo/demo.toml").read_text()
    assert (settings.resolved_shops_dir / "demo-consent.toml").read_text() == CONSENT_CONFIG.read_text()


def test_the_banner_of_privacy_md_is_the_one_the_demo_runs() -> None:
    text = (ROOT / "docs" / "privacy.md").read_text()
    section = text.split("### Wiring the shop's consent banner", 1)[1]
    snippets = re.findall(r"```html\n(.*?)```", section.split("\n## ", 1)[0], re.S)
    assert len(snippets) == 2 and 'vitrine("consent", choice)' in snippets[0]
    page = " ".join((ROOT / "server" / "demo" / "templates" / "consent.html").read_text().split())
    for snippet in snippets:  # as pasted: the same text, whatever its indentation
        assert " ".join(snippet.split()) in page
