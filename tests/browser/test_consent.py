"""Consent in Chromium: a shop with consent = "required" on a page with a consent manager (an
IAB TCF v2 `__tcfapi` stub and a Consent Mode `dataLayer`): nothing kept before the visitor
agrees, a profile after, nothing left after they withdraw."""

from __future__ import annotations

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

    # The shop's own call wins over the TCF answer: the visitor withdraws on its banner.
    page.evaluate("vitrine('consent', { personalization: false, analytics: false })")
    assert wait_until(lambda: page.evaluate(KEPT) == [] and cookie(context) == [])
    assert wait_until(lambda: visitors(vitrine_server) == 0)
    assert vitrine_server.query("SELECT count(*) FROM events WHERE visitor_id = ?", visitor)[0][0] == 0
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
