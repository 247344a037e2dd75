"""The store_busy_timeout_ms setting reaches the store: a locked database answers 503 fast,
and a page call, which only reads, does not wait for a write lock at all."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

import sqlalchemy as sa
from starlette.testclient import TestClient

from server.app import build_services, create_app
from server.settings import Settings

from conftest import SMALL_CATALOG, UK_IP, new_postgres_database


def test_an_event_batch_against_a_locked_database_gets_503_within_the_setting(settings: Settings) -> None:
    settings = dataclasses.replace(settings, store_busy_timeout_ms=200)
    services = build_services(settings)
    services.store.upsert_items("demo", SMALL_CATALOG)
    client = TestClient(create_app(settings, services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
    token = client.post("/v1/page?shop=demo", json={"shop": "demo"}, headers={"X-Forwarded-For": UK_IP}).json()["token"]
    event = {"event_id": "view-000001", "type": "view_item", "item_id": "22632"}
    other = sqlite3.connect(settings.resolved_database_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process writing, say a long import
    try:
        started = time.perf_counter()
        response = client.post("/v1/events?shop=demo", json={"shop": "demo", "token": token, "events": [event]})
        elapsed = time.perf_counter() - started
    finally:
        other.rollback()
        other.close()
    assert response.status_code == 503 and response.headers["retry-after"], response.text
    assert elapsed < 2  # the default 2000 ms, or 10 s and a 500 before the setting existed
    assert services.store.count_events("demo", "view_item") == 0
    response = client.post("/v1/events?shop=demo", json={"shop": "demo", "token": token, "events": [event]})
    assert response.status_code == 202 and services.store.count_events("demo", "view_item") == 1
    services.close()


def test_a_page_call_against_a_write_locked_database_answers_and_its_page_view_is_written_later(
    settings: Settings,
) -> None:
    # The page call only reads (WAL readers are never blocked); its page view waits in the
    # writer and is written once the lock is gone: nothing waits, nothing is lost.
    settings = dataclasses.replace(settings, store_busy_timeout_ms=200)
    services = build_services(settings)
    client = TestClient(create_app(settings, services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
    body = {"shop": "demo", "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]}
    token = client.post("/v1/page?shop=demo", json=body).json()["token"]
    assert services.contexts.page_views.flush()
    other = sqlite3.connect(settings.resolved_database_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.perf_counter()
        answers = [client.post("/v1/page?shop=demo", json={**body, "token": token}).json() for _ in range(3)]
        elapsed = time.perf_counter() - started
        time.sleep(0.5)  # the writer tries (and gives up after the busy timeout) meanwhile
        assert services.contexts.page_views.written == 1
    finally:
        other.rollback()
        other.close()
    assert elapsed < 1  # no page call waited for the lock
    # Each counted the ones before it, not written yet.
    assert [a["visitor"]["kind"] for a in answers] == ["new"] * 3
    assert services.contexts.page_views.flush()
    vid = services.signer.visitor_id("demo", token)
    assert services.store.get_visitor("demo", vid).page_views == 4
    assert services.store.count_events("demo", "page_view") == 4
    services.close()


def test_a_page_call_whose_read_is_locked_out_is_503_fast_not_a_queue(settings: Settings) -> None:
    # On PostgreSQL an ACCESS EXCLUSIVE lock (a migration, an import's rebuild) blocks reads too.
    with new_postgres_database("busy") as url:
        settings = dataclasses.replace(settings, store_busy_timeout_ms=200, database_url=url)
        services = build_services(settings)
        client = TestClient(create_app(settings, services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
        body = {"shop": "demo", "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]}
        token = client.post("/v1/page?shop=demo", json=body).json()["token"]
        locker = sa.create_engine(url)
        try:
            with locker.connect() as other, other.begin():
                other.execute(sa.text("LOCK TABLE visitors IN ACCESS EXCLUSIVE MODE"))
                started = time.perf_counter()
                replies = [client.post("/v1/page?shop=demo", json={**body, "token": token}) for _ in range(3)]
                elapsed = time.perf_counter() - started
            assert [r.status_code for r in replies] == [503, 503, 503]
            assert all(r.headers["retry-after"] for r in replies)
            assert elapsed < 3  # each gives up after about the setting
            assert client.post("/v1/page?shop=demo", json={**body, "token": token}).status_code == 200
        finally:
            locker.dispose()
            services.close()


def test_a_request_whose_store_gave_way_to_another_transaction_gets_503_not_500(settings: Settings) -> None:
    """A StoreConflict that reaches the web layer (a deadlock's victim or a dropped
    connection, past the group writer's own tries) is "try again", like a busy store. A
    deadlock three times over cannot be made to order, so the store's read raises it here."""
    from server.store import StoreConflict

    services = build_services(settings)
    client = TestClient(create_app(settings, services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
    body = {"shop": "demo", "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]}
    token = client.post("/v1/page?shop=demo", json=body).json()["token"]
    assert services.contexts.page_views.flush()
    read = services.store.get_visitor
    conflicts = [StoreConflict("DeadlockDetected (40P01) in: SELECT visitors.visitor_id ...")]

    def gives_way(shop: str, visitor_id: str):
        if conflicts:
            raise conflicts.pop()
        return read(shop, visitor_id)

    services.store.get_visitor = gives_way
    response = client.post("/v1/page?shop=demo", json={**body, "token": token})
    assert response.status_code == 503 and response.headers["retry-after"] == "1", response.text
    assert "try again" in response.json()["error"]
    again = client.post("/v1/page?shop=demo", json={**body, "token": token})
    assert again.status_code == 200 and again.json()["visitor"]["new_visit"] is False  # the same visitor, read this time
    services.close()
