"""The visitor's own data: GET|DELETE /v1/me, `vitrine privacy export|delete`, the purge of
inactive visitors and /.well-known/gpc.json, on SQLite and PostgreSQL through the real app."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import re
import threading
import time
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa
from click.testing import CliRunner
from starlette.testclient import TestClient

from conftest import UK_IP
from server.cli import main
from server.models import ANONYMOUS_VISITOR, Event, Interaction, utcnow
from server.privacy.data import delete_inactive_visitors, export_visitor
from server.retention import run_purge
from server.store.schema import metadata, visitors
from server.store.sql import SqlStore, _EventBatch, imported_visitor_id

ORIGIN = "http://127.0.0.1:8000"  # one of the demo shop's origins


@pytest.fixture(params=["sqlite", "postgresql"])
def settings(settings, request):
    """Every test on both stores (this needs the test PostgreSQL, and fails without it)."""
    if request.param == "sqlite":
        return settings
    return dataclasses.replace(settings, database_url=request.getfixturevalue("postgres_url"))


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The CLI tests choose every setting; none leaks in from the environment running them."""
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


# -- helpers -------------------------------------------------------------------------
def visit(client: TestClient, token: str | None = None, written: bool = True, **headers: str) -> str:
    """A page call (a product page, one recommendation slot); the visitor's token. `written`:
    its page view is written before this returns (page views are written behind the answer)."""
    body = {"shop": "demo", "page": {"type": "product", "item_id": "22632", "url": "https://shop.example/p/22632"},
            "slots": [{"id": "similar", "widget": "recommendations", "attrs": {"strategy": "similar"}}]}
    sent = {"X-Forwarded-For": UK_IP, **({"X-Visitor-Token": token} if token else {}), **headers}
    response = client.post("/v1/page?shop=demo", json=body, headers=sent)
    assert response.status_code == 200, response.text
    client.cookies.clear()
    if written:
        assert client.app.state.services.contexts.page_views.flush()
    return response.json()["token"]


def act(client: TestClient, token: str, tag: str) -> list[str]:
    """An event batch of everything a visitor does: views, cart, a search, an order, a closed popup."""
    events = [
        {"event_id": f"{tag}-view-00", "type": "view_item", "item_id": "22632", "value": 1.85, "currency": "GBP"},
        {"event_id": f"{tag}-cart-00", "type": "add_to_cart", "items": [{"item_id": "22632", "quantity": 1, "price": 1.85}]},
        {"event_id": f"{tag}-search-00", "type": "search", "search_term": f"lantern {tag}"},
        {"event_id": f"{tag}-buy-00", "type": "purchase", "transaction_id": f"order-{tag}", "value": 3.7, "currency": "GBP",
         "items": [{"item_id": "22632", "quantity": 2, "price": 1.85}]},
        {"event_id": f"{tag}-close-00", "type": "close_promotion", "promotion_id": "welcome"},
    ]
    response = client.post("/v1/events?shop=demo", json={"shop": "demo", "events": events},
                           headers={"X-Visitor-Token": token})
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == len(events)
    client.cookies.clear()
    return [e["event_id"] for e in events]


def me(client: TestClient, token: str | None = None, method: str = "GET", **headers: str):
    sent = {**({"X-Visitor-Token": token} if token else {}), **headers}
    return client.request(method, "/v1/me?shop=demo", headers=sent)


def places_naming(engine: sa.Engine, text: str) -> list[tuple[str, str]]:
    """(table, column) of every column of every table in the database (reflected, so tables
    the code does not know of count too) whose value, cast to text, contains `text`."""
    found = []
    reflected = sa.MetaData()
    reflected.reflect(engine)
    with engine.connect() as conn:
        for table in reflected.sorted_tables:
            for column in table.columns:
                query = sa.select(sa.func.count()).select_from(table).where(
                    sa.cast(column, sa.Text).contains(text, autoescape=True)
                )
                if conn.execute(query).scalar_one():
                    found.append((table.name, column.name))
    return found


def visitor_of(services, token: str) -> str:
    visitor = services.signer.visitor_id("demo", token)
    assert visitor
    return visitor


def cookie_attributes(set_cookie: str) -> tuple[str, str, set[str]]:
    """(name, value, attributes lowercased) of one Set-Cookie header."""
    first, *attrs = (part.strip() for part in set_cookie.split(";"))
    name, _, value = first.partition("=")
    return name, value, {a.lower() for a in attrs}


# -- GET /v1/me ----------------------------------------------------------------------
def test_me_returns_the_profile_the_state_and_every_event_of_the_visitor(client, services) -> None:
    token = visit(client)
    sent = act(client, token, "a")
    response = me(client, token)
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    data = response.json()
    assert data["shop"] == "demo" and data["visitor_id"] == visitor_of(services, token)
    profile = data["profile"]
    assert (profile["visits"], profile["page_views"], profile["orders"], profile["revenue"]) == (1, 1, 1, 3.7)
    assert profile["country"] == "GB" and profile["source"] == "direct" and profile["device_class"]
    assert profile["first_seen"].endswith("Z") and profile["last_order_at"]
    assert set(profile) >= {"first_seen", "last_seen", "country", "device_class", "source"}

    events = {e["event_id"]: e for e in data["events"]}
    assert set(sent) < set(events) and len(events) == len(sent) + 1  # and the page view
    [page_view] = [e for e in data["events"] if e["type"] == "page_view"]
    assert page_view["props"]["page_type"] == "product"
    purchase = events["a-buy-00"]
    assert (purchase["order_id"], purchase["value"], purchase["currency"]) == ("order-a", 3.7, "GBP")
    assert [line["item_id"] for line in purchase["props"]["items"]] == ["22632"]
    assert events["a-search-00"]["props"]["search_term"] == "lantern a"
    assert all(e["ts"].endswith("Z") and e["received_at"].endswith("Z") for e in data["events"])

    # What is inferred too: the audiences they are in now, with why (a customer since the purchase).
    audiences = {a["id"]: a["reason"] for a in data["audiences"]}
    assert "first_time_customer" in audiences and audiences["first_time_customer"]

    state = data["state"]
    assert state["closed_campaigns"] == ["welcome"]
    recent = {(e["type"], tuple(e["item_ids"]), e.get("search_term")) for e in state["recent"]}
    assert {("view_item", ("22632",), None), ("purchase", ("22632",), None), ("search", (), "lantern a")} <= recent


def test_me_reads_the_cookie_as_the_other_endpoints_do(client, services) -> None:
    token = visit(client)
    client.cookies.set("vitrine_demo", token)
    response = client.get("/v1/me?shop=demo")
    assert response.status_code == 200, response.text
    assert response.json()["visitor_id"] == visitor_of(services, token)


def test_each_visitor_sees_only_their_own_data(client, services) -> None:
    alice, bob = visit(client), visit(client)
    alice_events, bob_events = act(client, alice, "alice"), act(client, bob, "bob")
    for token, own, other, name in ((alice, alice_events, bob_events, "bob"), (bob, bob_events, alice_events, "alice")):
        data = me(client, token).json()
        assert data["visitor_id"] == visitor_of(services, token)
        ids = {e["event_id"] for e in data["events"]}
        assert set(own) <= ids and not ids & set(other)
        assert f"lantern {name}" not in json.dumps(data) and f"order-{name}" not in json.dumps(data)  # their search, order


@pytest.mark.parametrize("kind", ["none", "tampered", "other shop"])
def test_me_without_a_valid_token_is_a_404_saying_why(client, services, kind: str) -> None:
    token = visit(client)
    bad = {"none": None, "tampered": token[:-2] + ("AA" if not token.endswith("AA") else "BB"),
           "other shop": services.signer.sign("other", visitor_of(services, token))}[kind]
    response = me(client, bad)
    assert response.status_code == 404
    assert response.headers["cache-control"] == "no-store"
    assert "no valid visitor token" in response.json()["error"]


def test_me_of_a_visitor_with_nothing_stored_is_a_404(client, services) -> None:
    token = services.signer.sign("demo", "never-seen-visitor-0001")
    response = me(client, token)
    assert response.status_code == 404 and response.json()["error"] == "nothing is stored about this visitor"


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_me_names_its_shop_once_and_an_unknown_one_is_a_404(client, method: str) -> None:
    token = visit(client)
    twice = client.request(method, "/v1/me?shop=demo&shop=demo", headers={"X-Visitor-Token": token})
    assert twice.status_code == 400 and "more than once" in twice.json()["error"]
    unknown = client.request(method, "/v1/me?shop=nope", headers={"X-Visitor-Token": token})
    assert unknown.status_code == 404 and unknown.json()["error"] == "unknown shop 'nope'"
    assert unknown.headers["cache-control"] == "no-store"
    missing = client.request(method, "/v1/me", headers={"X-Visitor-Token": token})
    assert missing.status_code == 400
    assert me(client, token).status_code == 200  # nothing was deleted by any of them


def test_me_answers_the_shops_origins_with_cors_and_refuses_others(client, services) -> None:
    token = visit(client)
    preflight = client.options("/v1/me?shop=demo", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "DELETE", "Access-Control-Request-Headers": "X-Visitor-Token",
    })
    assert preflight.status_code == 204
    assert "DELETE" in preflight.headers["access-control-allow-methods"]
    assert "X-Visitor-Token" in preflight.headers["access-control-allow-headers"]
    allowed = me(client, token, Origin=ORIGIN)
    assert allowed.status_code == 200 and allowed.headers["access-control-allow-origin"] == ORIGIN
    assert allowed.headers["access-control-allow-credentials"] == "true"
    for method in ("GET", "DELETE"):
        foreign = me(client, token, method, Origin="https://evil.example")
        assert foreign.status_code == 403 and "access-control-allow-origin" not in foreign.headers
    assert me(client, token).status_code == 200  # the foreign DELETE deleted nothing


# -- DELETE /v1/me -------------------------------------------------------------------
def test_delete_leaves_the_visitor_in_no_column_of_any_table_and_keeps_the_others(client, services) -> None:
    alice, bob = visit(client), visit(client)
    act(client, alice, "alice")
    act(client, bob, "bob")
    alice_id, bob_id = visitor_of(services, alice), visitor_of(services, bob)
    engine = services.store.engine
    assert {"visitors", "events"} <= {table for table, _ in places_naming(engine, alice_id)}
    with engine.connect() as conn:
        sales_before = conn.execute(sa.text("SELECT purchases FROM item_sales WHERE item_id = '22632'")).scalar()
        trends_before = conn.execute(sa.text("SELECT count(*) FROM item_trends")).scalar()

    response = me(client, alice, "DELETE")
    assert response.status_code == 204 and response.content == b""
    assert response.headers["cache-control"] == "no-store"
    assert places_naming(engine, alice_id) == []
    assert {"visitors", "events"} <= {table for table, _ in places_naming(engine, bob_id)}
    assert me(client, alice).status_code == 404
    assert me(client, bob).json()["visitor_id"] == bob_id
    with engine.connect() as conn:  # aggregates hold no one's id, and stay as they were
        assert conn.execute(sa.text("SELECT purchases FROM item_sales WHERE item_id = '22632'")).scalar() == sales_before
        assert conn.execute(sa.text("SELECT count(*) FROM item_trends")).scalar() == trends_before


def test_no_column_of_any_table_and_no_log_line_holds_the_visitors_address(client, services, caplog) -> None:
    """The address a visitor comes from decides their country and region and is then
    forgotten: after page calls, events, a search and a fragment from it, no column of any
    table holds it, nor its first three parts, and no log line does, at any level."""
    caplog.set_level(logging.DEBUG)
    token = visit(client)
    visit(client, token)
    act(client, token, "addr")
    response = client.post("/v1/events?shop=demo", headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token},
                           json={"shop": "demo", "events": [{"event_id": "addr-view-01", "type": "view_item", "item_id": "22632"}]})
    assert response.status_code == 202, response.text
    for path in ("/v1/fragments/search?shop=demo&q=lantern", "/v1/fragments/banner?shop=demo&placement=top"):
        assert client.get(path, headers={"X-Forwarded-For": UK_IP, "X-Visitor-Token": token}).status_code == 200
    client.cookies.clear()
    assert services.contexts.page_views.flush()
    engine = services.store.engine
    assert {"visitors", "events"} <= {table for table, _ in places_naming(engine, visitor_of(services, token))}
    network = UK_IP.rsplit(".", 1)[0] + "."  # a part of the whole address too
    assert places_naming(engine, network) == []
    assert caplog.records, "the requests were logged"
    assert network not in caplog.text


def test_delete_right_after_page_calls_leaves_nothing_once_their_views_would_be_written(client, services) -> None:
    # The page views are still waiting in the worker: the deletion drops them, and no later
    # write brings the visitor back.
    services.contexts.page_views.flush_interval_s = 2.0  # so that they are still waiting below
    token = visit(client)
    for _ in range(3):
        visit(client, token, written=False)
    vid = visitor_of(services, token)
    assert len(services.contexts.page_views._entries[("demo", vid)].views) == 3  # not written yet
    assert me(client, token, "DELETE").status_code == 204
    assert services.contexts.page_views.flush()
    assert places_naming(services.store.engine, vid) == []


def test_export_includes_the_page_views_not_written_yet(client, services) -> None:
    services.contexts.page_views.flush_interval_s = 2.0
    token = visit(client)
    visit(client, token, written=False)
    assert services.store.get_visitor("demo", visitor_of(services, token)).page_views == 1
    assert me(client, token).json()["profile"]["page_views"] == 2


@pytest.mark.parametrize("https", [False, True])
def test_delete_clears_the_cookie_the_page_call_set(app, https: bool) -> None:
    scheme = "https" if https else "http"
    client = TestClient(app, base_url=f"{scheme}://127.0.0.1:8000", client=("127.0.0.1", 40000))
    page = client.post("/v1/page?shop=demo", json={"shop": "demo"})
    assert client.cookies.get("vitrine_demo")
    response = client.delete("/v1/me?shop=demo")  # the cookie alone says who
    assert response.status_code == 204
    [set_by_page] = page.headers.get_list("set-cookie")
    [cleared] = response.headers.get_list("set-cookie")
    name, _, page_attrs = cookie_attributes(set_by_page)
    cleared_name, value, cleared_attrs = cookie_attributes(cleared)
    assert cleared_name == name == "vitrine_demo" and value in ("", '""')
    assert "max-age=0" in cleared_attrs
    keep = lambda attrs: {a for a in attrs if not a.startswith(("max-age=", "expires="))}  # noqa: E731
    assert keep(cleared_attrs) == keep(page_attrs)
    assert ({"secure", "samesite=none", "partitioned"} <= cleared_attrs) is https
    assert "x-visitor-token" not in response.headers
    assert client.cookies.get("vitrine_demo") is None
    assert client.get("/v1/me?shop=demo").status_code == 404


def test_delete_without_a_token_is_a_204_and_deleting_twice_is_deleting_once(client, services) -> None:
    response = me(client, None, "DELETE")
    assert response.status_code == 204 and response.headers["cache-control"] == "no-store"
    assert "max-age=0" in response.headers["set-cookie"].lower()
    token = visit(client)
    act(client, token, "twice")
    assert me(client, token, "DELETE").status_code == 204
    assert me(client, token, "DELETE").status_code == 204
    assert services.store.get_visitor("demo", visitor_of(services, token)) is None


def test_a_batch_arriving_after_the_delete_is_dropped_and_its_cookie_cleared(client, services) -> None:
    """A batch still on its way with the old token (a beacon sent as the page unloaded) does
    not make the visitor again: 403, nothing stored, the cookie cleared."""
    token = visit(client)
    vid = visitor_of(services, token)
    act(client, token, "before")
    assert me(client, token, "DELETE").status_code == 204
    late = client.post("/v1/events?shop=demo", headers={"X-Visitor-Token": token}, json={
        "shop": "demo", "events": [{"event_id": "late-view-1", "type": "view_item", "item_id": "71053"}],
    })
    assert late.status_code == 403 and "deleted at their request" in late.json()["error"]
    assert 'vitrine_demo=""' in late.headers["set-cookie"] and "Max-Age=0" in late.headers["set-cookie"]
    assert "token" not in late.json()
    assert places_naming(services.store.engine, vid) == []
    assert services.store.count_events("demo", "view_item") == 0


def test_a_page_view_queued_before_the_delete_is_not_written_after_it(client, services) -> None:
    """Another worker's page view of the visitor, queued before the deletion and written after
    it (this one's own queue is dropped by the deletion): the writer leaves it out."""
    token = visit(client)
    vid = visitor_of(services, token)
    services.store.delete_visitors("demo", [vid])
    store = services.store
    written = store.record_page_views([store_view(vid), store_view("someone-else-0001")])
    assert [p.visitor_id for p in written] == ["someone-else-0001"]
    assert store.get_visitor("demo", vid) is None and store.get_visitor("demo", "someone-else-0001") is not None
    assert places_naming(store.engine, vid) == []


def test_a_page_call_with_a_forgotten_token_gets_a_new_visitor(client, services) -> None:
    token = visit(client)
    old = visitor_of(services, token)
    assert me(client, token, "DELETE").status_code == 204
    again = visit(client, token)  # another tab, still with the old token, and consent
    new = visitor_of(services, again)
    assert new != old and services.store.get_visitor("demo", new).page_views == 1
    assert places_naming(services.store.engine, old) == []


def test_the_purge_drops_the_ids_of_visitors_forgotten_longer_than_a_token_lives(client, services) -> None:
    forgotten = [visitor_of(services, visit(client)) for _ in range(2)]
    for vid in forgotten:
        services.store.delete_visitors("demo", [vid])
    with services.store.engine.begin() as conn:  # the first one asked a token's lifetime ago
        conn.execute(sa.text("UPDATE forgotten_visitors SET forgotten_at = :t WHERE visitor_hash = :h"), {
            "t": utcnow() - timedelta(days=services.settings.token_max_age_days + 1),
            "h": hashlib.sha256(forgotten[0].encode()).hexdigest()})
    assert run_purge(services).endswith(
        f"; ids of visitors forgotten over {services.settings.token_max_age_days} days ago deleted (all shops: 1)")
    assert not services.store.is_forgotten("demo", forgotten[0]) and services.store.is_forgotten("demo", forgotten[1])
    assert not services.store.is_forgotten("other-shop", forgotten[1])


def store_view(visitor_id: str):
    from server.visitors.page_views import PageView

    return PageView("demo", visitor_id, utcnow(), 1800, "GB", "desktop", "direct", None)


def test_a_deletion_waits_for_the_visitors_writer_and_takes_what_it_wrote(services, settings) -> None:
    """A writer of the visitor holds its row until it commits; the deletion, in another
    process, waits for that row and then deletes the events just written with it. (Deleting
    without the lock would delete the events it saw, then the row: the writer's events would
    stay behind, naming a visitor who has no row.)"""
    writer, vid = services.store, "racing-visitor-0001"
    writer.record_events("demo", vid, [Event("racing-0", "view_item", utcnow(), item_id="22632")])
    other_process = SqlStore(settings.resolved_database_url)
    done: list[dict[str, int]] = []
    try:
        with writer._writing() as conn:
            batch = _EventBatch("demo", vid, (Event("racing-1", "view_item", utcnow(), item_id="71053"),))
            writer._store_event_batches(conn, [batch])
            deleting = threading.Thread(target=lambda: done.append(other_process.delete_visitors("demo", [vid])))
            deleting.start()
            time.sleep(0.5)
            assert done == [], "the deletion did not wait for the visitor's writer"
        deleting.join(10)
    finally:
        other_process.close()
    assert done == [{"events": 2, "leads": 0, "experiment_visitors": 0, "webhook_deliveries": 0, "audience_members": 0,
                     "customers": 0, "consent_history": 0, "coupon_issues": 0, "coupon_redemptions": 0,
                     "visitors": 1}]
    assert places_naming(writer.engine, vid) == []


def test_every_table_with_visitor_rows_is_exported_and_deleted() -> None:
    with_visitors = {table.name for table in metadata.sorted_tables if "visitor_id" in table.c}
    assert with_visitors == {table.name for table in SqlStore.VISITOR_TABLES}


# -- vitrine privacy export|delete ---------------------------------------------------
def vitrine(settings, *args: str):
    env = {"VITRINE_SECRET_KEYS": "test-key-1", "VITRINE_DATABASE_URL": settings.database_url}
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "privacy", *args], env=env)


def test_cli_export_prints_what_get_me_answers(client, services, settings) -> None:
    token = visit(client)
    act(client, token, "cli")
    vid = visitor_of(services, token)
    result = vitrine(settings, "export", "--shop", "demo", "--visitor", vid)
    assert result.exit_code == 0, result.output
    printed, answered = json.loads(result.stdout), me(client, token).json()
    assert printed.pop("exported_at") and answered.pop("exported_at")
    assert printed == answered


def test_cli_delete_deletes_what_delete_me_does_and_says_how_many_rows(client, services, settings) -> None:
    token = visit(client)
    act(client, token, "cli")
    keep = visit(client)
    vid = visitor_of(services, token)
    result = vitrine(settings, "delete", "--shop", "demo", "--visitor", vid)
    assert result.exit_code == 0, result.output
    assert f"Deleted visitor '{vid}' of shop 'demo':" in result.output
    assert "  events: 6 rows" in result.output and "  visitors: 1 row\n" in result.output
    assert places_naming(services.store.engine, vid) == []
    assert me(client, keep).status_code == 200

    again = vitrine(settings, "delete", "--shop", "demo", "--visitor", vid)
    assert again.exit_code == 0 and "nothing deleted" in again.output
    missing = vitrine(settings, "export", "--shop", "demo", "--visitor", vid)
    assert missing.exit_code == 1
    assert f"Nothing is stored about visitor '{vid}' in shop 'demo'." in missing.stderr


def test_cli_refuses_the_shared_measurement_visitor(services, settings) -> None:
    services.store.record_events("demo", ANONYMOUS_VISITOR, [Event("anon-1", "view_item", utcnow(), item_id="22632")])
    for command in ("export", "delete"):
        result = vitrine(settings, command, "--shop", "demo", "--visitor", ANONYMOUS_VISITOR)
        assert result.exit_code == 2 and "is not a visitor" in result.output, result.output
    assert [e.event_id for e in services.store.visitor_events("demo", ANONYMOUS_VISITOR)] == ["anon-1"]


def test_cli_finds_an_imported_customer_by_user_id(services, settings) -> None:
    long_id = "customer-" + "9" * 80  # hashed into the visitor id: the shop need not know how
    services.store.import_interactions("demo", [
        Interaction("17850", "22632", "purchase", datetime(2010, 12, 1, tzinfo=timezone.utc), 3.7, "United Kingdom"),
        Interaction(long_id, "71053", "view", datetime(2010, 12, 2, tzinfo=timezone.utc)),
    ])
    result = vitrine(settings, "export", "--shop", "demo", "--customer", "17850")
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["visitor_id"] == "u:17850" and [e["type"] for e in data["events"]] == ["purchase"]
    deleted = vitrine(settings, "delete", "--shop", "demo", "--customer", long_id)
    assert deleted.exit_code == 0 and "events: 1 row\n" in deleted.output
    assert services.store.get_visitor("demo", imported_visitor_id(long_id)) is None
    assert services.store.get_visitor("demo", "u:17850") is not None


@pytest.mark.parametrize("command", ["export", "delete"])
def test_cli_refuses_an_unknown_shop_or_no_visitor_with_exit_2(settings, command: str) -> None:
    unknown = vitrine(settings, command, "--shop", "nope", "--visitor", "v1")
    assert unknown.exit_code == 2 and "unknown shop 'nope'" in unknown.stderr
    for named in ([], ["--visitor", "v1", "--customer", "17850"]):
        result = vitrine(settings, command, "--shop", "demo", *named)
        assert result.exit_code == 2 and "--visitor ID, or --customer USER_ID" in result.stderr


# -- the purge of inactive visitors --------------------------------------------------
def last_seen(services, visitor_id: str, days_ago: float) -> None:
    """Make a visitor's last visit `days_ago` days old, in the database itself."""
    with services.store.engine.begin() as conn:
        conn.execute(sa.text("UPDATE visitors SET first_seen = :t, last_seen = :t WHERE visitor_id = :v"),
                     {"t": utcnow() - timedelta(days=days_ago), "v": visitor_id})


def test_the_purge_deletes_visitors_unseen_for_the_retention_with_everything_about_them(client, services) -> None:
    gone, stays, recent = visit(client), visit(client), visit(client)
    for token, tag in ((gone, "gone"), (stays, "stays"), (recent, "recent")):
        act(client, token, tag)
    gone_id, stays_id, recent_id = (visitor_of(services, t) for t in (gone, stays, recent))
    last_seen(services, gone_id, 396)
    last_seen(services, stays_id, 394)
    services.store.import_interactions("demo", [  # the shop's own history, from 2010
        Interaction("17850", "22632", "purchase", datetime(2010, 12, 1, tzinfo=timezone.utc), 3.7, "United Kingdom"),
    ])

    assert run_purge(services) == (
        "events older than 400 days deleted (demo: 0; search counts: 0); visitors unseen for 395 days deleted (demo: 1); "
        "ids of visitors forgotten over 400 days ago deleted (all shops: 0)"
    )
    engine = services.store.engine
    assert places_naming(engine, gone_id) == []
    for kept in (stays_id, recent_id):
        assert export_visitor(services.store, "demo", kept)["profile"]["orders"] == 1
    assert services.store.get_visitor("demo", "u:17850") is not None  # imported customers are the shop's
    assert "visitors unseen for 395 days deleted (demo: 0)" in run_purge(services)  # idempotent


def test_the_visitor_purge_works_in_chunks_and_spares_who_came_back(services) -> None:
    store = services.store
    for n in range(5):
        store.record_events("demo", f"old-{n}", [Event(f"old-{n}-view", "view_item", utcnow(), item_id="22632")])
        last_seen(services, f"old-{n}", 500)
    before = utcnow() - timedelta(days=395)
    assert sorted(store.inactive_visitors("demo", before, 10)) == [f"old-{n}" for n in range(5)]
    assert len(store.inactive_visitors("demo", before, 2)) == 2

    picked = store.inactive_visitors("demo", before, 10)
    store.touch_visitor("demo", "old-0", utcnow(), 1800)  # old-0 comes back after being picked
    assert store.delete_visitors("demo", picked, inactive_before=before) == {
        "events": 4, "leads": 0, "experiment_visitors": 0, "webhook_deliveries": 0, "audience_members": 0, "customers": 0,
        "consent_history": 0, "coupon_issues": 0, "coupon_redemptions": 0, "visitors": 4}
    assert store.get_visitor("demo", "old-0") is not None and store.count_events("demo", "view_item") == 1

    for n in range(1, 6):
        store.record_events("demo", f"again-{n}", [Event(f"again-{n}-view", "view_item", utcnow(), item_id="22632")])
        last_seen(services, f"again-{n}", 500)
    assert delete_inactive_visitors(store, "demo", before, chunk=2) == 5
    assert store.inactive_visitors("demo", before, 10) == []
    assert store.get_visitor("demo", "old-0") is not None


def test_the_anonymous_measurement_goes_by_its_age_never_with_a_visitor(client, services) -> None:
    consent = {"personalization": False, "analytics": True}
    r = client.post("/v1/events?shop=demo", headers={"X-Forwarded-For": UK_IP}, json={
        "shop": "demo", "consent": consent, "events": [{"event_id": "anon-now-1", "type": "view_promotion",
                                                        "promotion_id": "welcome"}]})
    assert r.status_code == 202 and services.store.get_visitor("demo", ANONYMOUS_VISITOR) is None
    old = utcnow() - timedelta(days=500)
    services.store.record_events("demo", ANONYMOUS_VISITOR, [
        Event("anon-old-imp", "view_promotion", old, campaign="welcome"),
        Event("anon-old-close", "close_promotion", old, campaign="welcome"),  # kept for a visitor, not for nobody
    ])
    with services.store.engine.begin() as conn:  # a row an earlier version made, not seen for long
        conn.execute(sa.insert(visitors).values(shop="demo", visitor_id=ANONYMOUS_VISITOR, first_seen=old, last_seen=old))
    assert run_purge(services) == (
        "events older than 400 days deleted (demo: 2; search counts: 0); visitors unseen for 395 days deleted (demo: 0); "
        "ids of visitors forgotten over 400 days ago deleted (all shops: 0)"
    )
    assert [e["event_id"] for e in export_visitor(services.store, "demo", ANONYMOUS_VISITOR)["events"]] == ["anon-now-1"]


def test_the_visitor_purge_can_be_turned_off(client, services) -> None:
    token = visit(client)
    vid = visitor_of(services, token)
    last_seen(services, vid, 4000)
    services.settings = dataclasses.replace(services.settings, visitor_retention_days=0)
    assert "; visitors: off (visitor_retention_days = 0);" in run_purge(services)
    assert services.store.get_visitor("demo", vid) is not None


# -- /.well-known/gpc.json -----------------------------------------------------------
def test_gpc_support_resource(client) -> None:
    response = client.get("/.well-known/gpc.json", headers={"Origin": "https://any-shop.example"})
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["access-control-allow-origin"] == "*"
    data = response.json()
    assert data["gpc"] is True and set(data) == {"gpc", "lastUpdate"}
    assert re.fullmatch(r"\d{4}-\d{2}-\d{2}", data["lastUpdate"])
    assert date.fromisoformat(data["lastUpdate"]) <= date.today()


def test_a_forgotten_visitors_batch_written_with_others_stores_only_theirs(services) -> None:
    """Batches that reach the writer together: the forgotten visitor's is dropped, the rest stored."""
    store = services.store
    store.record_events("demo", "forgotten-0001", [Event("f-0", "view_item", utcnow(), item_id="22632")])
    store.delete_visitors("demo", ["forgotten-0001"])
    with store._writing() as conn:
        counts = store._store_event_batches(conn, [
            _EventBatch("demo", "forgotten-0001", (Event("f-1", "view_item", utcnow(), item_id="22632"),)),
            _EventBatch("demo", "kept-0001", (Event("k-1", "view_item", utcnow(), item_id="22632"),)),
        ])
    assert counts == [-1, 1]
    assert places_naming(store.engine, "forgotten-0001") == [] and store.get_visitor("demo", "kept-0001") is not None
