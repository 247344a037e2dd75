"""An acknowledged event survives kill -9 of the server, and none is stored twice.

A real `vitrine serve` (SQLite in its data directory, or PostgreSQL in a database of its
own) takes event batches from sixteen client threads and is killed with SIGKILL in the
middle of the load. Every event id that got a 202 must then be in the store, once.
"""

from __future__ import annotations

import http.client
import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa

from server.store import open_store
from server.store.schema import events as events_table
from server.store.schema import item_sales, visitors

from conftest import new_postgres_database
from servers import running, server_env, with_demo_shop

CLIENTS = 16
BATCH = 10
LOAD_S = 1.5  # of load at least before the kill
MAX_LOAD_S = 20  # ... and at most, waiting for enough acknowledged batches on a slow machine
START_TIMEOUT_S = 60


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> Iterator[str | None]:
    """None: the server's own SQLite database; else a PostgreSQL database made for the test."""
    if request.param == "sqlite":
        yield None
        return
    with new_postgres_database("vitrine_durability") as url:
        yield url


@dataclass
class Client:
    """One client thread's record: the event ids the server acknowledged, and how its last
    request ended when the server went away."""

    number: int
    port: int
    sent: list[str] = field(default_factory=list)
    acknowledged: list[str] = field(default_factory=list)
    refused: int = 0  # batches answered with something else than 202 (a 503 under load)
    cut_off: int = 0  # batches sent and never answered: the server was killed meanwhile

    def batch(self, n: int) -> dict:
        events = []
        for k in range(BATCH):
            event_id = f"kill-{self.number:02d}-{n:05d}-{k:02d}"
            if k == BATCH - 1:  # a purchase in each batch: counters and sales are written too
                events.append({"event_id": event_id, "type": "purchase", "transaction_id": f"T-{self.number}-{n}",
                               "value": 4.5, "currency": "GBP", "items": [{"item_id": "22632", "price": 4.5}]})
            else:
                events.append({"event_id": event_id, "type": ("view_item", "add_to_cart")[k % 2],
                               "item_id": ("22632", "71053", "85123A")[k % 3]})
        return {"shop": "demo", "events": events}

    def run(self, stop: threading.Event) -> None:
        origin = f"http://127.0.0.1:{self.port}"
        token = None
        n = 0
        while not stop.is_set():
            body = self.batch(n)
            if token:
                body["token"] = token
            self.sent += [e["event_id"] for e in body["events"]]
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
            try:
                conn.request("POST", "/v1/events?shop=demo", body=json.dumps(body),
                             headers={"Content-Type": "application/json", "Origin": origin})
                response = conn.getresponse()
                answer = response.read()
            except (OSError, http.client.HTTPException):  # refused, reset, cut short: the server is gone
                self.cut_off += 1
                return
            finally:
                conn.close()
            if response.status == 202:
                self.acknowledged += [e["event_id"] for e in body["events"]]
                token = json.loads(answer)["token"]
            else:
                self.refused += 1
            n += 1


def test_every_acknowledged_event_survives_kill_9_and_none_is_stored_twice(
    tmp_path: Path, database_url: str | None,
) -> None:
    data_dir = with_demo_shop(tmp_path / "data")
    env = server_env(VITRINE_SECRET_KEYS="test-key-1", **({"VITRINE_DATABASE_URL": database_url} if database_url else {}))
    stop = threading.Event()
    threads: list[threading.Thread] = []
    try:
        with running("serve", data_dir, env, tmp_path / "server.log", START_TIMEOUT_S) as serving:
            clients = [Client(n, serving.port) for n in range(CLIENTS)]
            threads = [threading.Thread(target=c.run, args=(stop,)) for c in clients]
            for thread in threads:
                thread.start()
            time.sleep(LOAD_S)
            deadline = time.monotonic() + MAX_LOAD_S
            while sum(len(c.acknowledged) for c in clients) < 100 * BATCH and time.monotonic() < deadline:
                time.sleep(0.05)
            os.kill(serving.process.pid, signal.SIGKILL)  # in the middle of the load
            serving.process.wait(10)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    assert not any(t.is_alive() for t in threads)

    acknowledged = [event_id for c in clients for event_id in c.acknowledged]
    assert len(acknowledged) >= 100 * BATCH, f"too little load before the kill: {len(acknowledged)} events"
    assert sum(c.cut_off for c in clients) > 0, "no batch was in flight when the server was killed"

    store = open_store(database_url or f"sqlite:///{data_dir / 'vitrine.db'}")
    try:
        with store.engine.connect() as conn:
            stored = [r[0] for r in conn.execute(sa.select(events_table.c.event_id).where(events_table.c.shop == "demo"))]
            orders = conn.execute(sa.select(sa.func.sum(visitors.c.orders)).where(visitors.c.shop == "demo")).scalar()
            sales = conn.execute(sa.select(item_sales.c.purchases).where(item_sales.c.shop == "demo")).scalar()
    finally:
        store.close()
    lost = set(acknowledged) - set(stored)
    assert not lost, f"{len(lost)} of {len(acknowledged)} acknowledged events are not stored: {sorted(lost)[:5]}"
    assert len(stored) == len(set(stored)), "an event is stored twice"
    # Batches committed but not answered before the kill are there too; nothing else is.
    assert set(stored) <= {event_id for c in clients for event_id in c.sent}
    # The counters were committed with their events: each stored purchase counted once.
    purchases = sum(1 for event_id in stored if event_id.endswith(f"-{BATCH - 1:02d}"))
    assert orders == purchases and sales == purchases


def test_a_clean_stop_writes_the_page_views_still_waiting(tmp_path: Path, database_url: str | None) -> None:
    # Page views are written behind the answer (page_view_flush_ms); SIGTERM must not lose them.
    data_dir = with_demo_shop(tmp_path / "data")
    env = server_env(VITRINE_SECRET_KEYS="test-key-1", VITRINE_PAGE_VIEW_FLUSH_MS="60000",
                     **({"VITRINE_DATABASE_URL": database_url} if database_url else {}))
    with running("serve", data_dir, env, tmp_path / "server.log", START_TIMEOUT_S) as serving:
        conn = http.client.HTTPConnection("127.0.0.1", serving.port, timeout=10)
        token = None
        for _ in range(20):
            conn.request("POST", "/v1/page?shop=demo", body=json.dumps({"shop": "demo", "token": token}),
                         headers={"Content-Type": "application/json"})
            response = conn.getresponse()
            answer = json.loads(response.read())
            assert response.status == 200
            token = answer["token"]
        conn.close()
        assert answer["visitor"]["visits"] == 1
        serving.process.send_signal(signal.SIGTERM)
        assert serving.process.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal once stopped
    store = open_store(database_url or f"sqlite:///{data_dir / 'vitrine.db'}")
    try:
        with store.engine.connect() as conn:
            views = conn.execute(sa.select(sa.func.count()).select_from(events_table)
                                 .where(events_table.c.type == "page_view")).scalar()
            counted = conn.execute(sa.select(visitors.c.page_views).where(visitors.c.shop == "demo")).scalar()
    finally:
        store.close()
    assert (views, counted) == (20, 20)
