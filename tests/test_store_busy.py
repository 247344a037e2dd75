"""The store_busy_timeout_ms setting reaches the store: a locked database answers 503 fast."""

from __future__ import annotations

import dataclasses
import sqlite3
import time

from starlette.testclient import TestClient

from server.app import build_services, create_app
from server.settings import Settings

from conftest import SMALL_CATALOG, UK_IP


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


def test_a_page_call_against_a_locked_database_is_503_fast_not_a_queue(settings: Settings) -> None:
    settings = dataclasses.replace(settings, store_busy_timeout_ms=200)
    services = build_services(settings)
    client = TestClient(create_app(settings, services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
    body = {"shop": "demo", "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]}
    other = sqlite3.connect(settings.resolved_database_url.removeprefix("sqlite:///"), isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        started = time.perf_counter()
        statuses = [client.post("/v1/page?shop=demo", json=body).status_code for _ in range(3)]
        elapsed = time.perf_counter() - started
    finally:
        other.rollback()
        other.close()
    assert statuses == [503, 503, 503]
    assert elapsed < 3  # each gives up after about the setting
    assert client.post("/v1/page?shop=demo", json=body).status_code == 200
    services.close()
