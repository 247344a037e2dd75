"""Searches and the ones that found nothing, counted per shop, day and term from the searches
Vitrine serves and the shop's own `search` events, on both stores, shown on the dashboard."""

from __future__ import annotations

import dataclasses
import re
import threading
from datetime import timedelta

import pytest
import sqlalchemy as sa
from starlette.testclient import TestClient

from conftest import SMALL_CATALOG, UK_IP, stored
from server.admin.auth import hash_password
from server.app import build_services, create_app
from server.models import utcnow
from server.retention import run_purge
from server.search_counts import MAX_TERM_CHARS, counted_term
from server.store import open_store
from server.store.schema import search_counts

PASSWORD = "correct horse battery"


@pytest.fixture(params=["sqlite", "postgresql"])
def both(request, settings):
    """The app on SQLite, then on PostgreSQL, with the small catalog in the store and the index."""
    if request.param == "postgresql":
        settings = dataclasses.replace(settings, database_url=request.getfixturevalue("postgres_url"))
    services = build_services(settings)
    services.store.upsert_items("demo", SMALL_CATALOG)
    services.search.sync("demo", SMALL_CATALOG)
    client = TestClient(create_app(settings, services), base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))
    yield services, client
    services.close()


def signed_in(services, client: TestClient) -> TestClient:
    services.store.save_admin_user("ann@shop.example", hash_password(PASSWORD), "demo", utcnow())
    token = re.search(r'name="csrf" value="([^"]+)"', client.get("/admin/login").text).group(1)
    r = client.post("/admin/login", data={"csrf": token, "email": "ann@shop.example", "password": PASSWORD},
                    follow_redirects=False)
    assert r.status_code == 303, r.text
    return client


def search(client: TestClient, q: str, **params) -> str:
    r = client.get("/v1/fragments/search", params={"shop": "demo", "q": q, **params},
                   headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200, r.text
    return r.text


def rows(services) -> dict[str, tuple[int, int]]:
    with services.store.engine.connect() as conn:
        return {r.term: (r.searches, r.zero_results) for r in conn.execute(sa.select(search_counts))}


def test_searches_served_and_sent_are_counted_and_shown_on_the_dashboard(both) -> None:
    services, client = both
    assert "White Metal Lantern" in search(client, "lantern")
    assert "No products match" in search(client, "zzqx unicorn")
    search(client, "  ZZQX   Unicorn ")  # the same term, however it was typed
    search(client, "lantern", page="2")  # the next page of a search: not another search
    search(client, "lan", suggest="1")  # typing: not a search
    page = client.post("/v1/page?shop=demo", json={"shop": "demo", "slots": [
        {"id": "results", "widget": "search", "attrs": {"query": "hot water bottle"}},
        {"id": "nothing", "widget": "search", "attrs": {"query": "zzqx unicorn"}}]})
    assert page.status_code == 200 and not page.json()["errors"], page.text
    token = page.json()["token"]
    sent = client.post("/v1/events?shop=demo", json={"shop": "demo", "token": token, "events": [
        {"event_id": "own-search-1", "type": "search", "search_term": "Velvet Cushion", "results": 0},
        {"event_id": "own-search-2", "type": "search", "search_term": "lantern", "results": 7},
        {"event_id": "own-search-3", "type": "search", "search_term": "candle"},  # no count: not counted
    ]})
    assert sent.status_code == 202 and sent.json()["accepted"] == 3, sent.text
    again = client.post("/v1/events?shop=demo", json={"shop": "demo", "token": token, "events": [
        {"event_id": "own-search-1", "type": "search", "search_term": "Velvet Cushion", "results": 0}]})
    assert again.json()["duplicates"] == 1  # a retried batch counts once

    stored(services)
    assert rows(services) == {"lantern": (2, 0), "zzqx unicorn": (3, 3), "hot water bottle": (1, 0),
                              "velvet cushion": (1, 1)}
    with services.store.engine.connect() as conn:
        assert set(conn.execute(sa.select(search_counts)).keys()) == {"shop", "day", "term", "searches", "zero_results"}

    data = signed_in(services, client).get("/admin/demo/search.json?days=7").json()
    assert (data["searches"], data["zero_results"]) == (7, 4)
    assert data["zero_result_share"] == pytest.approx(4 / 7)
    assert [(q["query"], q["zero_results"]) for q in data["zero_result_queries"]] == [("zzqx unicorn", 3),
                                                                                      ("velvet cushion", 1)]
    assert data["zero_result_queries"][0]["share_of_searches"] == pytest.approx(3 / 7)
    lantern = data["most_searched"][0]
    assert (lantern["query"], lantern["searches"], lantern["result_rate"]) == ("zzqx unicorn", 3, 0.0)
    assert [(q["query"], q["result_rate"]) for q in data["most_searched"][1:]] == [
        ("lantern", 1.0), ("hot water bottle", 1.0), ("velvet cushion", 0.0)]
    html = client.get("/admin/demo/search?days=7").text
    assert '<th scope="row">zzqx unicorn</th><td class="n">3</td><td class="n">42.9%</td>' in html
    assert '<th scope="row">lantern</th><td class="n">2</td><td class="n">100.0%</td>' in html
    # A range before any search shows none.
    yesterday = (utcnow().date() - timedelta(days=1)).isoformat()
    before = client.get(f"/admin/demo/search.json?from={yesterday}&to={yesterday}").json()
    assert before["searches"] == 0 and before["zero_result_queries"] == [] and before["zero_result_share"] is None


def test_a_bad_results_count_is_refused_with_the_field_named(both) -> None:
    services, client = both
    for bad in (-1, "many", "12", 2.5, True, 10_000_000, [3]):
        r = client.post("/v1/events?shop=demo", json={"shop": "demo", "events": [
            {"event_id": "bad-count-1", "type": "search", "search_term": "lantern", "results": bad}]})
        assert r.status_code == 422, (bad, r.text)
        assert r.json()["error"] == ("events.0.results: must be how many results the search found, "
                                     "a whole number from 0 to 1000000"), r.json()
    assert services.store.count_events("demo", "search") == 0 and rows(services) == {}


def test_counting_a_search_runs_no_statement_on_the_request(both) -> None:
    services, client = both
    search(client, "lantern")  # the catalog and the index opened
    stored(services)
    seen: list[str] = []

    def record(conn, cursor, statement, *rest) -> None:
        if threading.current_thread().name not in ("vitrine-page-views", "vitrine-group-commit"):
            seen.append(" ".join(statement.split()))

    sa.event.listen(services.store.engine, "before_cursor_execute", record)
    try:
        search(client, "zzqx")
    finally:
        sa.event.remove(services.store.engine, "before_cursor_execute", record)
    assert not [s for s in seen if "search_counts" in s], seen
    stored(services)
    assert rows(services)["zzqx"] == (1, 1)


def test_two_stores_adding_to_one_term_at_once_lose_nothing(both) -> None:
    services, _ = both
    other = open_store(services.store.url)
    today = utcnow().date()
    try:
        def add(store, n: int) -> None:
            for _ in range(n):
                store.record_page_views([], searches={("demo", today, "lantern"): [2, 1]})

        threads = [threading.Thread(target=add, args=(s, 25)) for s in (services.store, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        other.close()
    assert rows(services) == {"lantern": (100, 50)}


def test_no_visitor_and_no_long_term_is_kept_and_old_days_are_purged(both) -> None:
    services, client = both
    long = "gift " * 60
    search(client, long)
    stored(services)
    [term] = rows(services)
    assert term == counted_term(long) and len(term) <= MAX_TERM_CHARS
    old = utcnow().date() - timedelta(days=services.settings.event_retention_days + 1)
    services.store.record_page_views([], searches={("demo", old, "old term"): [1, 1]})
    assert "old term" in rows(services)
    assert "search counts: 1)" in run_purge(services)
    assert set(rows(services)) == {term}


def test_terms_are_counted_as_one_however_they_were_typed() -> None:
    assert counted_term("  Hot\tWATER\u0007bottle ") == "hot water bottle"
    assert counted_term("\u200b") == "" and counted_term("x" * 300) == "x" * MAX_TERM_CHARS


def test_a_visitor_whose_consent_forbids_it_bots_and_qa_are_not_counted(both) -> None:
    from conftest import qa_headers

    services, client = both
    qa = qa_headers(client, "demo")
    for params in ({"_context": "1"}, {"_debug": "1"}, {"visitor": "returning"}):
        r = client.get("/v1/fragments/search", params={"shop": "demo", "q": "lantern", **params}, headers=qa)
        assert r.status_code == 200, (params, r.text)
    r = client.get("/v1/fragments/search", params={"shop": "demo", "q": "lantern", "consent": "none"})
    assert r.status_code == 200
    bot = client.get("/v1/fragments/search", params={"shop": "demo", "q": "lantern"},
                     headers={"User-Agent": "Mozilla/5.0 (compatible; Googlebot/2.1; +http://www.google.com/bot.html)"})
    assert bot.status_code == 200
    stored(services)
    assert rows(services) == {}
