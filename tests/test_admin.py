"""The dashboard at /admin/: users made by the CLI, sign-in (CSRF, sessions, the limit on
failures, one message for every failure), each user fenced into their shops, and the pages
showing the numbers the rollups made of real events."""

from __future__ import annotations

import json
import re
from datetime import timedelta

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

from server.admin.auth import SESSION_COOKIE
from server.admin.views import SIGN_IN_FAILED
from server.cli import main
from server.measure.experiments import EXPOSURE
from server.models import Event, utcnow

PASSWORD = "correct horse battery"


def add_user(settings, email: str = "ann@shop.example", shop: str = "demo", password: str = PASSWORD):
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "admin", "add-user", "--shop", shop,
                                       "--email", email, "--password-stdin"], input=password + "\n",
                                env={"VITRINE_SECRET_KEYS": "test-key-1"})
    return result


def csrf_of(page: str) -> str:
    return re.search(r'name="csrf" value="([^"]+)"', page).group(1)


def sign_in(client: TestClient, email: str = "ann@shop.example", password: str = PASSWORD, next_path: str = "/admin/"):
    token = csrf_of(client.get("/admin/login").text)
    return client.post("/admin/login", data={"csrf": token, "email": email, "password": password, "next": next_path},
                       follow_redirects=False)


@pytest.fixture
def ann(settings, services):
    assert add_user(settings).exit_code == 0
    return "ann@shop.example"


# -- users -------------------------------------------------------------------------------
def test_users_are_added_listed_and_removed_by_the_cli(settings, services) -> None:
    added = add_user(settings, "Ann@Shop.example")
    assert added.exit_code == 0, added.output
    assert "Added user ann@shop.example" in added.output
    user = services.store.admin_user("ann@shop.example")
    assert user["shops"] == ["demo"] and user["password_hash"].startswith("$argon2id$")
    assert PASSWORD not in user["password_hash"]
    env = {"VITRINE_SECRET_KEYS": "test-key-1"}
    listed = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "admin", "users", "--shop", "demo"], env=env)
    assert listed.exit_code == 0 and "ann@shop.example" in listed.output
    short = add_user(settings, "bob@shop.example", password="short")
    assert short.exit_code == 2 and "at least 10 characters" in short.output
    assert add_user(settings, "not-an-email").exit_code == 2
    assert add_user(settings, shop="no-such-shop").exit_code == 2
    removed = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "admin", "remove-user",
                                        "--email", "ann@shop.example"], env=env)
    assert removed.exit_code == 0, removed.output
    assert services.store.admin_user("ann@shop.example") is None
    again = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "admin", "remove-user",
                                      "--email", "ann@shop.example"], env=env)
    assert again.exit_code == 2 and "no dashboard user" in again.output


# -- sign-in -----------------------------------------------------------------------------
def test_nothing_under_admin_shows_before_signing_in(client, ann) -> None:
    for path in ("/admin/", "/admin/demo/", "/admin/demo/campaigns", "/admin/demo/experiments",
                 "/admin/demo/audiences", "/admin/demo/search", "/admin/demo/models"):
        r = client.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/admin/login?next="), path
    r = client.get("/admin/demo/overview.json")
    assert r.status_code == 401 and "sign in" in r.json()["error"]
    assert client.post("/admin/demo/models", data={"action": "unpin"}, follow_redirects=False).status_code == 303


def test_a_good_password_signs_in_with_a_strict_http_only_cookie(client, ann) -> None:
    r = sign_in(client, next_path="/admin/demo/campaigns")
    assert r.status_code == 303 and r.headers["location"] == "/admin/demo/campaigns"
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Path=/admin" in cookie and "Max-Age=43200" in cookie
    assert "Secure" not in cookie  # plain http here; behind an https proxy it is set (below)
    page = client.get("/admin/demo/")
    assert page.status_code == 200 and "<h1>Overview</h1>" in page.text
    assert page.headers["cache-control"] == "no-store" and "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_the_cookie_is_secure_over_https(app, ann) -> None:
    client = TestClient(app, base_url="https://127.0.0.1:8000", client=("127.0.0.1", 40000))
    r = sign_in(client)
    cookie = next(c for c in r.headers.get_list("set-cookie") if c.startswith(SESSION_COOKIE + "="))
    assert "Secure" in cookie


def test_a_bad_password_and_an_unknown_user_get_the_same_answer(client, ann) -> None:
    wrong = sign_in(client, password="wrong password!")
    nobody = sign_in(client, email="nobody@shop.example")
    assert wrong.status_code == nobody.status_code == 401
    assert SIGN_IN_FAILED in wrong.text and SIGN_IN_FAILED in nobody.text
    assert SESSION_COOKIE + "=" not in " ".join(wrong.headers.get_list("set-cookie"))
    assert client.get("/admin/demo/", follow_redirects=False).status_code == 303


def test_the_sign_in_form_needs_its_csrf_token(client, ann) -> None:
    client.get("/admin/login")  # the cookie half of the token
    missing = client.post("/admin/login", data={"email": ann, "password": PASSWORD}, follow_redirects=False)
    wrong = client.post("/admin/login", data={"csrf": "forged", "email": ann, "password": PASSWORD}, follow_redirects=False)
    assert missing.status_code == wrong.status_code == 403
    # A token without its cookie (a page on another site cannot set it) is refused too.
    token = csrf_of(client.get("/admin/login").text)
    client.cookies.clear()
    assert client.post("/admin/login", data={"csrf": token, "email": ann, "password": PASSWORD},
                       follow_redirects=False).status_code == 403


def test_failed_sign_ins_are_limited(client, ann) -> None:
    for _ in range(5):
        assert sign_in(client, password="wrong password!").status_code == 401
    blocked = sign_in(client)  # the right password, too late
    assert blocked.status_code == 429 and "Too many failed sign-ins" in blocked.text
    assert client.get("/admin/demo/", follow_redirects=False).status_code == 303


def test_a_tampered_or_foreign_session_is_sent_to_sign_in(client, ann) -> None:
    assert sign_in(client).status_code == 303
    value = client.cookies[SESSION_COOKIE]
    payload, rest = value.split(".", 1)
    client.cookies.clear()
    client.cookies.set(SESSION_COOKIE, payload[:-2] + ("AA" if not payload.endswith("AA") else "BB") + "." + rest,
                       path="/admin")
    r = client.get("/admin/demo/", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/admin/login")
    assert client.get("/admin/demo/overview.json").status_code == 401


def test_removing_a_user_or_changing_their_password_ends_their_sessions(client, settings, services, ann) -> None:
    assert sign_in(client).status_code == 303
    assert client.get("/admin/demo/").status_code == 200
    reset = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "admin", "add-user", "--shop", "demo",
                                      "--email", ann, "--password-stdin", "--reset-password"],
                               input="another good one\n", env={"VITRINE_SECRET_KEYS": "test-key-1"})
    assert reset.exit_code == 0, reset.output
    assert client.get("/admin/demo/", follow_redirects=False).status_code == 303
    assert sign_in(client, password="another good one").status_code == 303
    services.store.remove_admin_user(ann)
    assert client.get("/admin/demo/", follow_redirects=False).status_code == 303


def test_a_user_sees_only_their_shops(client, settings, services, ann) -> None:
    other = settings.resolved_shops_dir / "other.toml"
    other.write_text('name = "Other"\norigins = ["https://other.example"]\n')
    assert sign_in(client).status_code == 303
    mine = client.get("/admin/", follow_redirects=False)
    assert mine.status_code == 303 and mine.headers["location"] == "/admin/demo/"  # their only shop
    for path in ("/admin/other/", "/admin/other/experiments", "/admin/nosuch/"):
        assert client.get(path).status_code == 404, path
    assert client.get("/admin/other/overview.json").status_code == 404
    # Given the shop, they see it.
    assert add_user(settings, shop="other").exit_code == 0
    assert client.get("/admin/other/").status_code == 200
    listing = client.get("/admin/")
    assert listing.status_code == 200 and 'href="/admin/other/"' in listing.text and 'href="/admin/demo/"' in listing.text


def test_signing_out_needs_the_sessions_token_and_ends_it(client, ann) -> None:
    assert sign_in(client).status_code == 303
    page = client.get("/admin/demo/").text
    assert client.post("/admin/logout", data={"csrf": "wrong"}, follow_redirects=False).status_code == 403
    assert client.post("/admin/logout", data={}, follow_redirects=False).status_code == 403
    assert client.get("/admin/demo/").status_code == 200  # still signed in
    r = client.post("/admin/logout", data={"csrf": csrf_of(page)}, follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/admin/login"
    assert client.get("/admin/demo/", follow_redirects=False).status_code == 303


def test_the_next_page_after_sign_in_stays_on_the_dashboard(client, ann) -> None:
    assert sign_in(client, next_path="https://evil.example/").headers["location"] == "/admin/"
    assert sign_in(client, next_path="//evil.example/admin/").headers["location"] == "/admin/"


def test_a_models_action_needs_the_sessions_token(client, ann) -> None:
    assert sign_in(client).status_code == 303
    assert client.post("/admin/demo/models", data={"action": "unpin"}).status_code == 403
    token = csrf_of(client.get("/admin/demo/models").text)
    r = client.post("/admin/demo/models", data={"action": "rollback", "csrf": token}, follow_redirects=True)
    assert r.status_code == 200 and "Not done: shop &#39;demo&#39; has no model to roll back from" in r.text
