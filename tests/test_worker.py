"""`vitrine worker`: the lease (SQLite and PostgreSQL), the jobs, `--once`, and two workers at once."""

from __future__ import annotations

import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from click.testing import CliRunner

from conftest import DEMO_CONFIG, SMALL_CATALOG
from server.app import build_services
from server.cli import main
from server.models import Event, Interaction, utcnow
from server.recommend.retrain import run_retraining
from server.retention import PURGED_TYPES, run_purge
from server.recommend.dataset import EVENT_WEIGHTS
from server.settings import Settings
from server.store import Store, open_store
from server.worker import LEASE, Worker, all_jobs
from test_store import fresh_store, store, store_url  # noqa: F401  (the store fixtures, both backends)


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests choose every setting; none leaks in from the environment running them."""
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


# -- the lease, on both backends ------------------------------------------------------
def test_one_holder_at_a_time_and_the_holder_renews(store: Store) -> None:
    assert store.take_lease("worker", "a", 60)
    assert not store.take_lease("worker", "b", 60)
    assert store.take_lease("worker", "a", 60)  # renewal by the holder
    assert not store.take_lease("worker", "b", 60)
    assert store.take_lease("other", "b", 60)  # leases are by name


def test_an_expired_lease_goes_to_the_next_one_asking(store: Store) -> None:
    assert store.take_lease("worker", "a", 0.2)
    assert not store.take_lease("worker", "b", 60)
    time.sleep(0.3)
    assert store.take_lease("worker", "b", 60)
    assert not store.take_lease("worker", "a", 60)  # the old holder's renewal fails: it lost it


def test_a_released_lease_is_free_at_once_and_only_the_holder_releases(store: Store) -> None:
    assert store.take_lease("worker", "a", 60)
    store.release_lease("worker", "b")
    assert not store.take_lease("worker", "b", 60)
    store.release_lease("worker", "a")
    assert store.take_lease("worker", "b", 60)


def test_of_many_workers_asking_at_once_exactly_one_gets_the_lease(store: Store, store_url: str) -> None:
    stores = [open_store(store_url) for _ in range(6)]  # each like another process
    start, won = threading.Barrier(len(stores)), []

    def ask(n: int) -> None:
        start.wait()
        if stores[n].take_lease("worker", f"w{n}", 60):
            won.append(n)

    threads = [threading.Thread(target=ask, args=(n,)) for n in range(len(stores))]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        for s in stores:
            s.close()
    assert len(won) == 1, won
    assert not store.take_lease("worker", "late", 60)


def test_popular_searches_saved_replaced_and_too_old_ones_not_read(store: Store) -> None:
    now = utcnow()
    store.save_popular_searches("s", [("bag", 12), ("tree", 10), ("star", 10)], now)
    assert store.saved_popular_searches("s", 2, now - timedelta(days=30)) == [("bag", 12), ("tree", 10)]
    store.save_popular_searches("s", [("wreath", 11)], now)
    assert store.saved_popular_searches("s", 8, now - timedelta(days=30)) == [("wreath", 11)]
    assert store.saved_popular_searches("other", 8, now - timedelta(days=30)) == []
    store.save_popular_searches("s", [("bag", 12)], now - timedelta(days=31))
    assert store.saved_popular_searches("s", 8, now - timedelta(days=30)) == []


def event(event_id: str, type_: str, days_ago: float, **kw) -> Event:
    return Event(event_id=event_id, type=type_, ts=utcnow() - timedelta(days=days_ago), **kw)


def test_purge_deletes_old_events_of_the_types_in_chunks_and_nothing_else(store: Store) -> None:
    old_views = [event(f"pv{n}", "page_view", 500) for n in range(7)]
    store.record_events("s", "v1", [
        *old_views, event("pv-new", "page_view", 10), event("buy", "purchase", 500, item_id="i1", order_id="o1"),
        event("cart", "add_to_cart", 500, item_id="i1"), event("imp", "view_promotion", 500, campaign="c"),
    ])
    store.record_events("t", "v1", [event("pv-other-shop", "page_view", 500)])
    before = utcnow() - timedelta(days=400)
    assert store.purge_events("s", ["page_view", "view_promotion"], before, chunk=3) == 8
    assert store.count_events("s", "page_view") == 1  # the recent one
    assert (store.count_events("s", "purchase"), store.count_events("s", "add_to_cart")) == (1, 1)
    assert store.count_events("s", "view_promotion") == 0
    assert store.count_events("t") == 1  # another shop's
    assert store.purge_events("s", ["page_view", "view_promotion"], before, chunk=3) == 0


def test_events_received_are_counted_by_type_since_a_time(store: Store) -> None:
    store.record_events("s", "v1", [event("a", "view_item", 100, item_id="i1"), event("b", "page_view", 0)])
    assert store.count_events_received("s", ["view_item", "purchase"]) == 1
    assert store.count_events_received("s", ["view_item"], utcnow() - timedelta(minutes=1)) == 1  # received now
    assert store.count_events_received("s", ["view_item"], utcnow() + timedelta(minutes=1)) == 0


# -- the jobs ---------------------------------------------------------------------------
def test_each_domain_registers_its_jobs() -> None:
    jobs = {job.name: job.interval_s for job in all_jobs(Settings())}
    assert jobs == {"popular-searches": 60, "retrain": 600, "purge": 3600, "rollups": 300, "audience-webhooks": 60,
                    "audience-sizes": 3600}


def test_the_purge_never_touches_what_the_model_learns_from() -> None:
    assert not set(PURGED_TYPES) & set(EVENT_WEIGHTS)
    assert {"page_view", "view_promotion", "view_item_list", "select_promotion"} <= set(PURGED_TYPES)
    assert "purchase" not in PURGED_TYPES and "close_promotion" not in PURGED_TYPES


NO_VISITORS = ("visitors unseen for 395 days deleted (demo: 0); "
               "ids of visitors forgotten over 400 days ago deleted (all shops: 0)")  # the purge of inactive visitors: tests/test_privacy.py


def test_the_purge_job_deletes_old_page_views_but_not_purchases(services) -> None:
    store = services.store
    store.record_events("demo", "v1", [
        event("old-view", "page_view", 401), event("new-view", "page_view", 399), event("old-search", "search", 500),
        event("old-buy", "purchase", 900, item_id="71053", order_id="o1", value=3.39),
        event("old-item-view", "view_item", 900, item_id="71053"),
    ])
    assert run_purge(services) == f"events older than 400 days deleted (demo: 2; search counts: 0); {NO_VISITORS}"
    assert store.count_events("demo", "page_view") == 1 and store.count_events("demo", "search") == 0
    assert store.count_events("demo", "purchase") == 1 and store.count_events("demo", "view_item") == 1
    assert run_purge(services) == f"events older than 400 days deleted (demo: 0; search counts: 0); {NO_VISITORS}"  # idempotent


def shop_data_dir(tmp_path: Path) -> Path:
    (tmp_path / "shops").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DEMO_CONFIG, tmp_path / "shops" / "demo.toml")
    return tmp_path


def interactions(n: int, start: int = 0) -> list[Interaction]:
    """n interactions of a few customers with the small catalog, each one different."""
    ids = [i.item_id for i in SMALL_CATALOG]
    when = datetime(2024, 1, 1, tzinfo=timezone.utc)
    return [
        Interaction(f"c{k % 3}", ids[k % len(ids)], "purchase" if k % 2 else "view", when + timedelta(hours=k))
        for k in range(start, start + n)
    ]


def test_retraining_happens_only_past_the_threshold(tmp_path: Path) -> None:
    settings = Settings.load(
        environ={}, data_dir=shop_data_dir(tmp_path), secret_keys="test-key-1", change_check_interval_s=0,
        model_components=8, model_epochs=2, train_time_budget_s=1, retrain_min_new_interactions=5,
    )
    services = build_services(settings)
    models = services.recommender.models
    try:
        services.store.upsert_items("demo", SMALL_CATALOG)
        services.store.import_interactions("demo", interactions(4))
        assert run_retraining(services) == "demo: 4 new interactions (retrains at 5)"
        assert models.versions("demo") == []

        services.store.import_interactions("demo", interactions(2, start=4))
        done = run_retraining(services)
        assert re.fullmatch(r"demo: 6 new interactions, trained model \S+ in [\d.]+ s", done), done
        assert len(models.versions("demo")) == 1 and models.get("demo") is not None
        assert run_retraining(services) == "demo: 0 new interactions (retrains at 5)"  # idempotent

        time.sleep(1.1)  # the model's time is in whole seconds: what comes in from the next one is new
        services.store.import_interactions("demo", interactions(4, start=6))
        assert run_retraining(services) == "demo: 4 new interactions (retrains at 5)"
        services.store.record_events("demo", "v9", [event("v9-view", "view_item", 0, item_id="22112")])
        services.store.record_events("demo", "v9", [event("v9-page", "page_view", 0)])  # not an interaction
        done = run_retraining(services)
        assert done.startswith("demo: 5 new interactions, trained model"), done
        assert len(models.versions("demo")) == 2
    finally:
        services.close()


def test_retraining_and_the_purge_can_be_turned_off(services) -> None:
    services.settings = Settings.load(environ={}, data_dir=services.settings.data_dir,
                                      retrain_min_new_interactions=0, event_retention_days=0)
    services.store.record_events("demo", "v1", [event("old-view", "page_view", 4000)])
    assert run_retraining(services) == "off (retrain_min_new_interactions = 0)"
    assert run_purge(services) == f"events: off (event_retention_days = 0); {NO_VISITORS}"
    assert services.store.count_events("demo", "page_view") == 1


# -- `vitrine worker --once` ------------------------------------------------------------
def record_searches(services, term: str, visitors: int) -> None:
    for n in range(visitors):
        services.store.record_events("demo", f"searcher{n}", [
            Event(event_id=f"s-{term}-{n}", type="search", ts=utcnow(), props={"search_term": term}),
        ])


def test_worker_once_counts_popular_searches_that_the_search_box_then_shows(services, client, settings) -> None:
    services.search.sync("demo", SMALL_CATALOG)
    record_searches(services, "lantern", 3)
    record_searches(services, "hand warmer", 2)
    record_searches(services, "nothing like it", 3)  # finds nothing in the catalog
    response = client.get("/v1/fragments/search", params={"shop": "demo", "q": "", "suggest": "1"})
    assert re.findall(r'data-suggestion="([^"]+)"', response.text)[0] == "Candles and lights"  # not counted yet

    result = CliRunner().invoke(
        main, ["--data-dir", str(settings.data_dir), "worker", "--once"],
        env={"VITRINE_SECRET_KEYS": "test-key-1", "VITRINE_POPULAR_SEARCH_MIN_VISITORS": "2"},
    )
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(re.search(r"popular-searches: demo: 2 terms \([\d.]+ s\)$", line) for line in lines), lines
    assert any(re.search(r"retrain: demo: 0 new interactions \(retrains at 1000\)", line) for line in lines), lines
    assert any(re.search(r"purge: events older than 400 days deleted \(demo: 0; search counts: 0\); visitors unseen for 395 days "
                         r"deleted \(demo: 0\)", line) for line in lines), lines

    services.search.popular_ttl_s = 0
    response = client.get("/v1/fragments/search", params={"shop": "demo", "q": "", "suggest": "1"})
    assert response.status_code == 200
    assert re.findall(r'data-suggestion="([^"]+)"', response.text) == ["lantern", "hand warmer"]
    with services.store.engine.connect() as conn:  # the lease was given up on the way out
        assert conn.execute(sa.text("SELECT count(*) FROM worker_leases")).scalar() == 0


def test_worker_once_runs_nothing_while_another_worker_holds_the_lease(services, settings) -> None:
    assert services.store.take_lease(LEASE, "someone-else", 60)
    result = CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "worker", "--once"],
                                env={"VITRINE_SECRET_KEYS": "test-key-1"})
    assert result.exit_code == 0, result.output
    assert "Another `vitrine worker` holds the lease and runs the jobs: nothing was run." in result.output
    assert "popular-searches" not in result.output


def test_a_failing_job_is_reported_and_the_others_still_run(services) -> None:
    from server.worker import Job

    def broken(_services) -> str:
        raise RuntimeError("disk on fire")

    said: list[str] = []
    jobs = [Job("broken", 60, broken), Job("fine", 60, lambda _s: "did it")]
    assert Worker(services, jobs=jobs, log=said.append).run_once()
    assert re.search(r"broken: failed: RuntimeError: disk on fire$", said[0]), said
    assert re.search(r"fine: did it \([\d.]+ s\)$", said[1]), said


# -- two `vitrine worker` processes ---------------------------------------------------------
def vitrine_command() -> list[str]:
    script = Path(sys.executable).parent / "vitrine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


def wait_for(condition, what: str, timeout: float = 60.0, logs: tuple[Path, ...] = ()) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            shown = "\n".join(f"--- {log}:\n{log.read_text()}" for log in logs)
            raise AssertionError(f"timed out waiting for {what}\n{shown}")
        time.sleep(0.1)


def test_of_two_workers_started_at_once_one_runs_the_jobs_and_the_other_takes_over(services, settings) -> None:
    services.search.sync("demo", SMALL_CATALOG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    env.update(VITRINE_SECRET_KEYS="test-key-1", VITRINE_WORKER_LEASE_S="2", VITRINE_POPULAR_SEARCHES_INTERVAL_S="1",
               PYTHONUNBUFFERED="1")
    logs = (settings.data_dir / "worker-1.log", settings.data_dir / "worker-2.log")
    procs = []
    for log in logs:
        with log.open("w") as out:
            procs.append(subprocess.Popen([*vitrine_command(), "--data-dir", str(settings.data_dir), "worker"],
                                          stdout=out, stderr=subprocess.STDOUT, env=env))

    def text(n: int) -> str:
        return logs[n].read_text()

    def holder() -> str | None:
        with services.store.engine.connect() as conn:
            return conn.execute(sa.text("SELECT holder FROM worker_leases WHERE name = :n"), {"n": LEASE}).scalar()

    try:
        wait_for(lambda: all("worker " in text(n) and ("took the lease" in text(n) or "waiting" in text(n))
                             for n in (0, 1)), "both workers to start", logs=logs)
        wait_for(lambda: "popular-searches: demo" in text(0) + text(1), "the first job run", logs=logs)
        first = holder()
        assert first is not None
        running = next(n for n, p in enumerate(procs) if f":{p.pid}:" in first)
        other = 1 - running
        time.sleep(2.5)  # a few more job runs, and the lease renewed past its 2 s
        assert holder() == first
        assert "took the lease" in text(running) and text(running).count("popular-searches: demo") >= 2
        assert "another worker holds the lease; waiting to take over" in text(other)
        assert "popular-searches: demo" not in text(other) and "took the lease" not in text(other)

        procs[running].kill()  # dies without giving the lease up: the other waits for it to expire
        procs[running].wait()
        wait_for(lambda: "popular-searches: demo" in text(other), "the other worker to take over", timeout=20, logs=logs)
        assert holder() is not None and f":{procs[other].pid}:" in holder()
        assert "took the lease; running the jobs" in text(other)

        procs[other].send_signal(signal.SIGTERM)  # a clean stop gives the lease up
        assert procs[other].wait(timeout=20) == 0, text(other)
        assert "stopped" in text(other)
        assert holder() is None
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_the_demo_stopped_with_sigterm_gives_its_jobs_lease_up(tmp_path) -> None:
    # uvicorn raises SIGTERM again once it has stopped; the demo must still reach its clean stop,
    # or the next demo started on the same data waits for the lease to run out.
    from servers import running, server_env

    env = server_env(PYTHONUNBUFFERED="1")
    log = tmp_path / "demo.log"
    with running("demo", tmp_path, env, log, args=("--no-train", "--no-simulate")) as serving:
        wait_for(lambda: "took the lease" in log.read_text(), "the demo to take the jobs' lease", logs=(log,))
        serving.process.send_signal(signal.SIGTERM)
        assert serving.process.wait(20) == 128 + signal.SIGTERM, log.read_text()
    with sqlite3.connect(tmp_path / "vitrine.db") as conn:
        assert conn.execute("SELECT holder FROM worker_leases").fetchall() == []
