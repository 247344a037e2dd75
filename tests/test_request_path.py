"""The request path reads the visitor once: no query on the events table, whatever the slots."""

from __future__ import annotations

import re
import threading
from contextlib import contextmanager
from datetime import timedelta

import sqlalchemy as sa

from conftest import UK_IP
from server.models import utcnow

HOME = {
    "shop": "demo", "page": {"type": "home", "url": "http://127.0.0.1:8000/demo/"},
    "slots": [
        {"id": "top", "widget": "banner", "attrs": {"placement": "top"}},
        {"id": "hero", "widget": "banner", "attrs": {"placement": "home-hero"}},
        {"id": "picks", "widget": "recommendations", "attrs": {"strategy": "top_picks"}},
        {"id": "seen", "widget": "recommendations", "attrs": {"strategy": "recently_viewed"}},
        {"id": "again", "widget": "recommendations", "attrs": {"strategy": "buy_again"}},
        {"id": "find", "widget": "search", "attrs": {"query": "warmer"}},
        {"id": "grid", "widget": "category", "attrs": {"category": "gifts"}},
    ],
    "nav": ["gifts", "candles-and-lights", "home-decor"],
}


@contextmanager
def statements(engine):
    seen: list[str] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append(" ".join(statement.split()))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


def returning_visitor(client) -> str:
    token = client.post("/v1/page?shop=demo", json={"shop": "demo"}, headers={"X-Forwarded-For": UK_IP}).json()["token"]
    now = utcnow()
    events = [{"event_id": f"hist-{n:05d}", "type": "view_item", "item_id": ["85123A", "71053", "22632", "22112"][n % 4],
               "ts": (now - timedelta(minutes=300 - n)).isoformat()} for n in range(200)]
    events += [{"event_id": "hist-buy-1", "type": "purchase", "transaction_id": "o-1", "value": 2.0, "item_id": "71053"},
               {"event_id": "hist-find-1", "type": "search", "search_term": "lantern"},
               {"event_id": "hist-close-1", "type": "close_promotion", "promotion_id": "welcome"}]
    for start in range(0, len(events), 100):
        r = client.post("/v1/events?shop=demo", json={"shop": "demo", "token": token, "events": events[start:start + 100]})
        assert r.status_code == 202, r.text
    return token


def reads_events(sql: list[str]) -> list[str]:
    return [s for s in sql if s.startswith("SELECT") and re.search(r"\bFROM events\b|\bJOIN events\b", s)]


def test_a_page_call_with_every_kind_of_slot_reads_no_events(client, services) -> None:
    token = returning_visitor(client)
    with statements(services.store.engine) as sql:
        r = client.post("/v1/page?shop=demo", json={**HOME, "token": token}, headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200 and not r.json()["errors"], r.text
    body = r.json()
    assert "seen" in body["fragments"] and "again" in body["fragments"]  # the history is there ...
    assert body["popups"] == []  # ... and so is the closed welcome popup
    assert reads_events(sql) == [], reads_events(sql)


def test_fragment_urls_read_no_events(client, services) -> None:
    token = returning_visitor(client)
    headers = {"X-Visitor-Token": token, "X-Forwarded-For": UK_IP}
    for kind, params in (("recommendations", {"strategy": "recently_viewed"}), ("search", {"q": "warmer"}),
                         ("nav", {"categories": "gifts,home-decor"}), ("category", {"category": "gifts"}),
                         ("popup", {}), ("banner", {"placement": "top"})):
        with statements(services.store.engine) as sql:
            r = client.get(f"/v1/fragments/{kind}", params={"shop": "demo", **params}, headers=headers)
        assert r.status_code == 200, (kind, r.text)
        assert reads_events(sql) == [], (kind, reads_events(sql))


@contextmanager
def statements_by_thread(engine):
    seen: list[tuple[str, str]] = []

    def record(conn, cursor, statement, parameters, context, executemany):
        seen.append((threading.current_thread().name, " ".join(statement.split())))

    sa.event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(engine, "before_cursor_execute", record)


WRITERS = ("vitrine-page-views", "vitrine-group-commit")


def own_statements(sql: list[tuple[str, str]]) -> list[str]:
    """What the request's own thread ran, less the check of the catalog's version (the tests
    check on every call; a server at most once per change_check_interval_s)."""
    return [s for thread, s in sql if thread not in WRITERS and "FROM shop_versions" not in s]


def test_a_page_call_reads_the_visitor_once_and_leaves_its_write_to_the_writer(client, services) -> None:
    token = returning_visitor(client)
    # Once: the catalog loaded, trending and bestsellers read (kept a second).
    client.post("/v1/page?shop=demo", json={**HOME, "token": token}, headers={"X-Forwarded-For": UK_IP})
    assert services.contexts.page_views.flush()
    with statements_by_thread(services.store.engine) as sql:
        r = client.post("/v1/page?shop=demo", json={**HOME, "token": token}, headers={"X-Forwarded-For": UK_IP})
        assert r.status_code == 200
        own = own_statements(sql)
        assert services.contexts.page_views.flush()
    assert len(own) == 1 and own[0].startswith("SELECT") and "FROM visitors" in own[0], "\n".join(own)
    written = [s for thread, s in sql if thread in WRITERS]
    assert any(s.startswith("INSERT INTO events") for s in written), written
    assert any(s.startswith("UPDATE visitors") for s in written), written


def test_a_new_visitors_page_call_runs_no_statement_of_its_own(client, services) -> None:
    client.post("/v1/page?shop=demo", json=HOME)  # the shop's first: config and catalog loaded
    client.cookies.clear()
    with statements_by_thread(services.store.engine) as sql:
        r = client.post("/v1/page?shop=demo", json=HOME, headers={"X-Forwarded-For": UK_IP})
        assert r.status_code == 200 and r.json()["visitor"]["kind"] == "new"
        own = own_statements(sql)
    assert own == [], own
