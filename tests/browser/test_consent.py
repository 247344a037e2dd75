"""Consent in Chromium: a shop with consent = "required" on a page with a consent manager (an
IAB TCF v2 `__tcfapi` stub and a Consent Mode `dataLayer`): nothing kept before the visitor
agrees, a profile after, nothing left after they withdraw."""

from __future__ import annotations

import json
import tomllib
import urllib.request
from pathlib import Path

from .conftest import wait_until

SHOP = "consenting"
DEMO_CONFIG = Path(__file__).resolve().parents[2] / "server" / "demo" / "demo.toml"
KEPT = f"() => Object.keys(localStorage).filter(k => k.startsWith('vitrine:{SHOP}:'))"

# A consent manager as the TCF v2 spec describes its API: addEventListener calls back at once
# with the current TC data ("tcloaded" once the visitor decided before, else "cmpuishown"),
# and again with "useractioncomplete" when the visitor decides. window.decide(yes) is the banner.
PAGE = """<!doctype html><html><head><title>Consent test</title>
<script>
  window.dataLayer = window.dataLayer || [];
  function gtag() { dataLayer.push(arguments); }
  gtag("consent", "default", DEFAULTS);
  (function () {
    var listeners = [], tc = { tcString: "", gdprApplies: true, eventStatus: "cmpuishown",
      purpose: { consents: {} }, publisher: { consents: {} } };
    window.__tcfapi = function (command, version, callback) {
      if (command === "addEventListener" && version === 2) { listeners.push(callback); callback(tc, true); }
      else if (command === "ping") callback({ gdprApplies: true, cmpLoaded: true }, true);
    };
    window.decide = function (yes) {
      var consents = {};
      [1, 5, 6, 8].forEach(function (n) { consents[n] = yes; });
      tc = Object.assign({}, tc, { eventStatus: "useractioncomplete", purpose: { consents: consents } });
      listeners.forEach(function (cb) { cb(tc, true); });
    };
  })();
</script>
<script async src="/v1/vitrine.js" data-shop="%s"></script></head>
<body data-vitrine-page="home">
<div data-vitrine-slot="top" data-widget="banner" data-placement="top">default banner</div>
</body></html>"""


def page_html(defaults: str = '{ ad_storage: "denied" }', tcf: bool = True) -> str:
    """The page; Consent Mode comes before TCF, so the TCF test's page leaves its defaults out."""
    html = PAGE.replace("%s", SHOP).replace("DEFAULTS", defaults)
    return html if tcf else html.replace("window.__tcfapi = function", "window.__nottcf = function")


def visitors(server) -> int:
    return server.query("SELECT count(*) FROM visitors WHERE shop = ?", SHOP)[0][0]


def cookie(context) -> list:
    return [c for c in context.cookies() if c["name"] == f"vitrine_{SHOP}"]


def test_nothing_kept_before_consent_a_profile_after_nothing_left_after_withdrawal(vitrine_server, context, watch) -> None:
    config = vitrine_server.data_dir / "shops" / f"{SHOP}.toml"
    config.write_text('consent = "required"\n' + DEMO_CONFIG.read_text())
    page = context.new_page()
    problems = watch(page)
    page.route(f"{vitrine_server.url}/consent-test", lambda route: route.fulfill(body=page_html(), content_type="text/html"))
    page.goto(f"{vitrine_server.url}/consent-test")
    wait_until(lambda: page.locator("[data-vitrine-slot=top][data-vitrine-filled]").count() == 1)
    page.wait_for_timeout(1200)  # impressions would have been sent by now
    assert page.evaluate(KEPT) == [] and cookie(context) == [] and visitors(vitrine_server) == 0
    assert vitrine_server.query("SELECT count(*) FROM events WHERE shop = ?", SHOP)[0][0] == 0

    page.evaluate("decide(true)")  # the banner's "Accept": the page call runs again, no reload
    assert wait_until(lambda: f"vitrine:{SHOP}:token" in page.evaluate(KEPT))
    assert cookie(context)
    token = page.evaluate(f"() => localStorage.getItem('vitrine:{SHOP}:token')")
    visitor = vitrine_server.signer.visitor_id(SHOP, token)
    assert visitor and wait_until(lambda: visitors(vitrine_server) == 1)
    assert wait_until(lambda: vitrine_server.query(
        "SELECT count(*) FROM events WHERE shop = ? AND visitor_id = ? AND type = 'view_promotion'", SHOP, visitor)[0][0])
    # The answer and where it came from, in the visitor's consent history.
    assert [tuple(r) for r in vitrine_server.query(
        "SELECT source, personalization, analytics FROM consent_history WHERE visitor_id = ?", visitor)] == [("tcf", 1, 1)]

    # The shop's own call wins over the TCF answer: the visitor withdraws on its banner.
    page.evaluate("vitrine('consent', { personalization: false, analytics: false })")
    assert wait_until(lambda: page.evaluate(KEPT) == [] and cookie(context) == [])
    assert wait_until(lambda: visitors(vitrine_server) == 0)
    assert vitrine_server.query("SELECT count(*) FROM events WHERE visitor_id = ?", visitor)[0][0] == 0
    assert vitrine_server.query("SELECT count(*) FROM consent_history WHERE shop = ?", SHOP)[0][0] == 0
    problems.assert_none()


def test_consent_mode_update_grants_without_reload(vitrine_server, context) -> None:
    config = vitrine_server.data_dir / "shops" / f"{SHOP}.toml"
    config.write_text('consent = "required"\n' + DEMO_CONFIG.read_text())
    page = context.new_page()
    page.route(f"{vitrine_server.url}/consent-test", lambda route: route.fulfill(
        body=page_html('{ personalization_storage: "denied", analytics_storage: "denied" }', tcf=False),
        content_type="text/html"))
    page.goto(f"{vitrine_server.url}/consent-test")
    wait_until(lambda: page.locator("[data-vitrine-slot=top][data-vitrine-filled]").count() == 1)
    assert page.evaluate(KEPT) == []
    page.evaluate("gtag('consent', 'update', { personalization_storage: 'granted', analytics_storage: 'granted' })")
    assert wait_until(lambda: f"vitrine:{SHOP}:token" in page.evaluate(KEPT))
    assert cookie(context)


# Shopify's Customer Privacy API as its documentation describes it, in a region where consent
# is required: currentVisitorConsent() answers "yes", "no" or "" (not decided yet) per
# purpose, the *Allowed() functions say false until the visitor agrees (so they cannot tell
# "not decided" from "no"), and setTrackingConsent() stores the choice and fires
# visitorConsentCollected on the document. The stub keeps the choice as Shopify's cookie does.
SHOPIFY = """<script>
  (function () {
    var KEY = "stub-shopify-consent";
    function saved() { try { return JSON.parse(localStorage.getItem(KEY)) || {}; } catch (e) { return {}; } }
    function answer(v) { return v === true ? "yes" : v === false ? "no" : ""; }
    window.Shopify = { customerPrivacy: {
      currentVisitorConsent: function () {
        var s = saved();
        return { analytics: answer(s.analytics), preferences: answer(s.preferences), marketing: answer(s.marketing),
                 sale_of_data: answer(s.sale_of_data) };
      },
      analyticsProcessingAllowed: function () { return saved().analytics === true; },
      preferencesProcessingAllowed: function () { return saved().preferences === true; },
      shouldShowBanner: function () { return saved().analytics == null; },
      setTrackingConsent: function (consent, callback) {
        localStorage.setItem(KEY, JSON.stringify(consent));
        document.dispatchEvent(new CustomEvent("visitorConsentCollected", { detail: {
          analyticsAllowed: consent.analytics === true, preferencesAllowed: consent.preferences === true } }));
        if (callback) callback({});
      }
    } };
  })();
</script>
"""


def use_config(server, text: str) -> None:
    """Write the shop's config and wait until the server serves it (it checks every second):
    a fragment URL's `_context=1`, asked with GPC, shows the rule and what GPC means."""
    (server.data_dir / "shops" / f"{SHOP}.toml").write_text(text)
    config = tomllib.loads(text)
    rule, refuses = config.get("consent", "not_required"), config.get("gpc") == "refuse"
    url = f"{server.url}/v1/fragments/banner?shop={SHOP}&placement=top&_context=1"

    def served() -> bool:
        with urllib.request.urlopen(urllib.request.Request(url, headers={"Sec-GPC": "1"})) as response:
            consent = json.load(response)["visitor"]["consent"]
        return consent["rule"] == rule and consent["refused"] == refuses

    assert wait_until(served), "the server did not take the new config"


def open_test_page(server, context, html: str):
    page = context.new_page()
    page.route(f"{server.url}/consent-test", lambda route: route.fulfill(body=html, content_type="text/html"))
    page.goto(f"{server.url}/consent-test")
    wait_until(lambda: page.locator("[data-vitrine-slot=top][data-vitrine-filled]").count() == 1)
    return page


def token_visitor(server, page) -> str | None:
    token = page.evaluate(f"() => localStorage.getItem('vitrine:{SHOP}:token')")
    return server.signer.visitor_id(SHOP, token) if token else None


def held(server, visitor: str) -> int:
    """Rows about this visitor: their visitors row and their events."""
    return server.query("SELECT (SELECT count(*) FROM visitors WHERE visitor_id = ?) + "
                        "(SELECT count(*) FROM events WHERE visitor_id = ?)", visitor, visitor)[0][0]


def with_shopify() -> str:
    return page_html(tcf=False).replace('<script async src="/v1/vitrine.js"', SHOPIFY + '<script async src="/v1/vitrine.js"')


def test_shopify_not_decided_is_unknown_and_its_no_withdraws(vitrine_server, context, watch) -> None:
    use_config(vitrine_server, DEMO_CONFIG.read_text())  # consent = "not_required": an unknown answer is a yes
    page = open_test_page(vitrine_server, context, with_shopify())
    problems = watch(page)
    assert page.evaluate("() => Shopify.customerPrivacy.shouldShowBanner()") is True  # not decided yet
    # Not decided is not a no: the shop's rule decides, and a returning visitor keeps their profile.
    assert wait_until(lambda: token_visitor(vitrine_server, page))
    visitor = token_visitor(vitrine_server, page)
    assert wait_until(lambda: held(vitrine_server, visitor))
    page.reload()
    wait_until(lambda: page.locator("[data-vitrine-slot=top][data-vitrine-filled]").count() == 1)
    page.wait_for_timeout(500)
    assert token_visitor(vitrine_server, page) == visitor and held(vitrine_server, visitor) and cookie(context)

    page.evaluate("() => Shopify.customerPrivacy.setTrackingConsent({ analytics: false, preferences: false })")
    assert wait_until(lambda: page.evaluate(KEPT) == [] and cookie(context) == [])
    assert wait_until(lambda: held(vitrine_server, visitor) == 0)
    before = visitors(vitrine_server)
    page.reload()  # Shopify remembers the no: still nothing
    wait_until(lambda: page.locator("[data-vitrine-slot=top][data-vitrine-filled]").count() == 1)
    page.wait_for_timeout(500)
    assert page.evaluate(KEPT) == [] and visitors(vitrine_server) == before

    page.evaluate("() => Shopify.customerPrivacy.setTrackingConsent({ analytics: true, preferences: true })")
    assert wait_until(lambda: token_visitor(vitrine_server, page))
    assert wait_until(lambda: held(vitrine_server, token_visitor(vitrine_server, page)))
    problems.assert_none()


def test_shopify_not_decided_on_a_required_shop_stores_nothing_until_yes(vitrine_server, context) -> None:
    use_config(vitrine_server, 'consent = "required"\n' + DEMO_CONFIG.read_text())
    before = visitors(vitrine_server)
    page = open_test_page(vitrine_server, context, with_shopify())
    page.wait_for_timeout(800)
    assert page.evaluate(KEPT) == [] and cookie(context) == [] and visitors(vitrine_server) == before
    page.evaluate("() => Shopify.customerPrivacy.setTrackingConsent({ analytics: true, preferences: true })")
    assert wait_until(lambda: token_visitor(vitrine_server, page))
    assert wait_until(lambda: held(vitrine_server, token_visitor(vitrine_server, page)))


# Global Privacy Control as a browser that has it on reports it to scripts.
GPC_ON = "Object.defineProperty(Navigator.prototype, 'globalPrivacyControl', { get: () => true, configurable: true });"


def test_gpc_refuse_keeps_nothing_and_withdraws_a_visitor_who_turns_it_on(vitrine_server, new_context, watch) -> None:
    use_config(vitrine_server, 'gpc = "refuse"\n' + DEMO_CONFIG.read_text())
    html = page_html(tcf=False)
    context = new_context()
    page = open_test_page(vitrine_server, context, html)  # GPC off: a profile as usual
    assert wait_until(lambda: token_visitor(vitrine_server, page))
    visitor = token_visitor(vitrine_server, page)
    assert wait_until(lambda: held(vitrine_server, visitor)) and cookie(context)

    context.add_init_script(GPC_ON)  # the visitor turns GPC on in their browser
    page.reload()
    problems = watch(page)
    assert page.evaluate("() => navigator.globalPrivacyControl") is True
    assert wait_until(lambda: page.evaluate(KEPT) == [] and cookie(context) == [])
    assert wait_until(lambda: held(vitrine_server, visitor) == 0)

    before = visitors(vitrine_server), vitrine_server.query("SELECT count(*) FROM events")[0][0]
    fresh = new_context()
    fresh.add_init_script(GPC_ON)
    other = open_test_page(vitrine_server, fresh, html)  # a visitor with GPC from the first page
    other.evaluate("vitrine('consent', { personalization: true, analytics: true })")  # GPC wins over a yes
    other.wait_for_timeout(1500)
    assert other.evaluate(KEPT) == [] and [c for c in fresh.cookies() if c["name"] == f"vitrine_{SHOP}"] == []
    assert (visitors(vitrine_server), vitrine_server.query("SELECT count(*) FROM events")[0][0]) == before
    problems.assert_none()
