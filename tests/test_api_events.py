"""POST /v1/events: accepted only once durable, idempotent, validated per type, tied to the token."""

from __future__ import annotations

import json
import random
import string
from datetime import datetime, timedelta, timezone

import pytest

from server.identity import TOKEN_HEADER
from server.models import utcnow
from server.store import open_store

from conftest import UK_IP, stored


def batch(*events: dict, token: str | None = None, shop: str = "demo") -> dict:
    body: dict = {"shop": shop, "events": list(events)}
    if token is not None:
        body["token"] = token
    return body


def purchase(event_id: str = "purchase-0001", transaction_id: str = "T-1001", value: float = 42.5) -> dict:
    return {"event_id": event_id, "type": "purchase", "transaction_id": transaction_id, "value": value,
            "currency": "gbp", "items": [{"item_id": "22632", "quantity": 2, "price": 1.85}]}


def send(client, body: dict | bytes, content_type: str = "application/json", **headers: str):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post("/v1/events?shop=demo", content=raw, headers={"content-type": content_type, **headers})


@pytest.fixture
def visitor(client, services) -> tuple[str, str]:
    """A visitor who has viewed one page: (token, visitor id)."""
    token = client.post("/v1/page?shop=demo", json={"shop": "demo"}, headers={"X-Forwarded-For": UK_IP}).json()["token"]
    client.cookies.clear()
    stored(services)  # its page view written: the tests count what their batches add
    return token, services.signer.visitor_id("demo", token)


def assert_422(response, *words: str) -> None:
    assert response.status_code == 422, response.text
    for word in words:
        assert word in response.json()["error"], response.json()["error"]


# -- accepted -----------------------------------------------------------------------------
@pytest.mark.parametrize("content_type", ["application/json", "text/plain;charset=UTF-8", ""])
def test_batch_is_accepted_as_json_or_text_plain(client, services, visitor, content_type: str) -> None:
    token, vid = visitor
    events = [{"event_id": f"view-{content_type[:4] or 'none'}-{i}", "type": "view_item", "item_id": "22632"} for i in range(3)]
    r = send(client, batch(*events, token=token), content_type)
    assert r.status_code == 202, r.text
    assert r.json()["accepted"] == 3 and r.json()["duplicates"] == 0
    assert services.store.count_events("demo", "view_item") == 3
    assert {e.event_id for e in services.store.visitor_events("demo", vid) if e.type == "view_item"} == {e["event_id"] for e in events}


def test_same_event_id_twice_is_stored_once(client, services, visitor) -> None:
    token, _ = visitor
    ev = {"event_id": "atc-0000001", "type": "add_to_cart", "item_id": "71053"}
    first = send(client, batch(ev, ev, token=token))
    assert first.status_code == 202
    assert first.json() == {**first.json(), "accepted": 1, "duplicates": 1}
    again = send(client, batch(ev, token=token))
    assert again.json()["accepted"] == 0 and again.json()["duplicates"] == 1
    assert services.store.count_events("demo", "add_to_cart") == 1


def test_purchase_counts_the_order_once_even_if_resent(client, services, visitor) -> None:
    token, vid = visitor
    for _ in range(2):
        assert send(client, batch(purchase(), token=token)).status_code == 202
    profile = services.store.get_visitor("demo", vid)
    assert profile.orders == 1
    assert profile.revenue == pytest.approx(42.5)
    assert services.store.count_events("demo", "purchase") == 1
    [stored] = [e for e in services.store.visitor_events("demo", vid) if e.type == "purchase"]
    assert stored.order_id == "T-1001" and stored.currency == "GBP" and stored.item_id == "22632"


def test_thank_you_page_reload_does_not_count_the_order_twice(client, services, visitor) -> None:
    # A reload fires the purchase again with a fresh event_id but the same transaction.
    token, vid = visitor
    assert send(client, batch(purchase("purchase-first"), token=token)).json()["accepted"] == 1
    r = send(client, batch(purchase("purchase-reload"), token=token))
    assert r.status_code == 202 and r.json()["accepted"] == 0 and r.json()["duplicates"] == 1
    assert services.store.get_visitor("demo", vid).orders == 1
    assert services.store.count_events("demo", "purchase") == 1
    # Another transaction is another order.
    assert send(client, batch(purchase("purchase-second", "T-1002", 10), token=token)).json()["accepted"] == 1
    profile = services.store.get_visitor("demo", vid)
    assert profile.orders == 2 and profile.revenue == pytest.approx(52.5)


def test_a_purchase_makes_the_visitor_a_customer(client, services, visitor) -> None:
    token, _ = visitor
    send(client, batch(purchase(), token=token))
    data = client.post("/v1/page?shop=demo", json={"shop": "demo", "token": token}).json()
    assert data["visitor"]["kind"] == "customer"


# -- validation ---------------------------------------------------------------------------
@pytest.mark.parametrize("missing", ["transaction_id", "value"])
def test_purchase_without_transaction_id_or_value_is_422_naming_it(client, services, missing: str) -> None:
    ev = purchase()
    del ev[missing]
    assert_422(send(client, batch(ev)), "events.0", missing)
    assert services.store.count_events("demo") == 0


def test_view_item_without_item_is_422(client) -> None:
    assert_422(send(client, batch({"event_id": "view-000001", "type": "view_item"})), "view_item", "item")


@pytest.mark.parametrize(
    "event, words",
    [
        ({"event_id": "close-00001", "type": "close_promotion"}, ("promotion_id",)),
        ({"event_id": "search-0001", "type": "search"}, ("search_term",)),
        ({"event_id": "short", "type": "page_view"}, ("event_id",)),
        ({"event_id": "has spaces!", "type": "page_view"}, ("event_id",)),
        ({"event_id": "value-00001", "type": "purchase", "transaction_id": "T", "value": -1}, ("value",)),
        ({"event_id": "cur-000001", "type": "page_view", "currency": "pounds"}, ("currency",)),
    ],
)
def test_invalid_events_are_422_naming_the_problem(client, event: dict, words: tuple[str, ...]) -> None:
    assert_422(send(client, batch(event)), *words)


def test_unknown_type_is_422(client) -> None:
    assert_422(send(client, batch({"event_id": "weird-00001", "type": "teleport"})), "events.0.type")


def test_one_bad_event_rejects_the_whole_batch(client, services) -> None:
    good = {"event_id": "good-000001", "type": "page_view"}
    bad = {"event_id": "bad-0000001", "type": "teleport"}
    assert_422(send(client, batch(good, bad)), "events.1.type")
    assert services.store.count_events("demo") == 0


def test_batch_over_the_limit_is_422(client, services, settings) -> None:
    n = settings.max_events_per_batch
    events = [{"event_id": f"bulk-{i:06d}", "type": "page_view"} for i in range(n + 1)]
    assert_422(send(client, batch(*events)), "too many events", str(n))
    assert services.store.count_events("demo") == 0
    assert send(client, batch(*events[:n])).json()["accepted"] == n


def test_empty_batch_is_422(client) -> None:
    assert_422(send(client, batch()), "events")


def test_malformed_json_is_400(client) -> None:
    r = send(client, b'{"shop": "demo", "events": [{', "text/plain")
    assert r.status_code == 400 and "invalid JSON" in r.json()["error"]


def test_wrong_content_type_is_415(client) -> None:
    r = send(client, batch({"event_id": "page-000001", "type": "page_view"}), "application/x-www-form-urlencoded")
    assert r.status_code == 415 and r.json()["error"]


def test_unknown_shop_is_404(client) -> None:
    r = client.post("/v1/events?shop=ghost", json=batch({"event_id": "page-000001", "type": "page_view"}, shop="ghost"))
    assert r.status_code == 404 and "ghost" in r.json()["error"]


def test_get_is_405(client) -> None:
    r = client.get("/v1/events?shop=demo")
    assert r.status_code == 405 and r.json()["error"]


# -- timestamps ---------------------------------------------------------------------------
def _stored(services, vid: str, event_id: str):
    return next(e for e in services.store.visitor_events("demo", vid) if e.event_id == event_id)


def test_timestamp_in_milliseconds_is_stored(client, services, visitor) -> None:
    token, vid = visitor
    moment = (utcnow() - timedelta(hours=1)).replace(microsecond=123000)
    ms = int(moment.replace(tzinfo=timezone.utc).timestamp() * 1000)
    send(client, batch({"event_id": "ts-ms-00001", "type": "page_view", "ts": ms}, token=token))
    assert _stored(services, vid, "ts-ms-00001").ts == moment


def test_iso_timestamp_is_stored_in_utc(client, services, visitor) -> None:
    token, vid = visitor
    moment = (utcnow() - timedelta(days=2)).replace(microsecond=0)
    local = moment.replace(tzinfo=timezone.utc).astimezone(timezone(timedelta(hours=2))).isoformat()
    send(client, batch({"event_id": "ts-iso-0001", "type": "page_view", "ts": local}, token=token))
    assert _stored(services, vid, "ts-iso-0001").ts == moment


@pytest.mark.parametrize("offset", [timedelta(days=30), timedelta(hours=25), -timedelta(days=8), -timedelta(days=3650)])
def test_a_timestamp_outside_the_window_is_422_naming_the_field(client, services, visitor, offset) -> None:
    token, vid = visitor
    ms = (utcnow() + offset).replace(tzinfo=timezone.utc).timestamp() * 1000
    before = services.store.count_events("demo")
    r = send(client, batch({"event_id": "ts-window-1", "type": "page_view", "ts": ms}, token=token))
    assert r.status_code == 422 and "events.0.ts" in r.json()["error"] and "days" in r.json()["error"]
    assert services.store.count_events("demo") == before


@pytest.mark.parametrize("ts", ["1e300", "-1e300", "NaN", "Infinity", '"9999-12-31T23:59:59-14:00"', '"0001-01-01T00:00:00+14:00"'])
def test_absurd_timestamps_are_422_and_store_nothing(client, services, visitor, ts) -> None:
    token, vid = visitor
    raw = json.dumps(batch({"event_id": "ts-absurd-1", "type": "page_view", "ts": 0}, token=token))
    raw = raw.replace('"ts": 0', f'"ts": {ts}').encode()
    before = services.store.count_events("demo")
    r = send(client, raw)
    assert r.status_code == 422 and "events.0.ts" in r.json()["error"], r.text
    assert services.store.count_events("demo") == before


@pytest.mark.parametrize("field, value", [("price", "Infinity"), ("price", "NaN"), ("price", "1e400"), ("quantity", "Infinity")])
def test_non_finite_numbers_in_line_items_are_422(client, services, visitor, field, value) -> None:
    token, _ = visitor
    event = {"event_id": "inf-price-1", "type": "purchase", "transaction_id": "o-1", "value": 5,
             "items": [{"item_id": "22632", "price": 1, "quantity": 1}]}
    raw = json.dumps(batch(event, token=token)).replace(f'"{field}": 1', f'"{field}": {value}', 1).encode()
    before = services.store.count_events("demo")
    r = send(client, raw)
    assert r.status_code == 422 and f"items.0.{field}" in r.json()["error"], r.text
    assert services.store.count_events("demo") == before


# -- whose events -------------------------------------------------------------------------
@pytest.mark.parametrize("carrier", ["header", "body", "cookie"])
def test_events_belong_to_the_visitor_in_the_token(client, services, visitor, carrier: str) -> None:
    token, vid = visitor
    body, headers = batch(purchase()), {}
    if carrier == "header":
        headers[TOKEN_HEADER] = token
    elif carrier == "body":
        body["token"] = token
    else:
        client.cookies.set("vitrine_demo", token)
    r = send(client, body, **headers)
    assert r.status_code == 202
    assert services.signer.visitor_id("demo", r.json()["token"]) == vid
    assert r.headers[TOKEN_HEADER] == r.json()["token"]
    assert services.store.get_visitor("demo", vid).orders == 1


def test_batch_without_a_token_creates_a_new_visitor_and_returns_its_token(client, services, visitor) -> None:
    _, known = visitor
    r = send(client, batch(purchase()))
    assert r.status_code == 202
    vid = services.signer.visitor_id("demo", r.json()["token"])
    assert vid and vid != known
    assert r.headers["set-cookie"].startswith(f"vitrine_demo={r.json()['token']};")
    assert services.store.get_visitor("demo", vid).orders == 1
    assert stored(services).get_visitor("demo", known).orders == 0


def test_a_bad_token_does_not_attach_events_to_anyone_known(client, services, visitor) -> None:
    token, known = visitor
    r = send(client, batch(purchase(), token=token[:-3] + "abc"))
    assert r.status_code == 202
    assert services.signer.visitor_id("demo", r.json()["token"]) != known
    assert stored(services).get_visitor("demo", known).orders == 0


# -- durability -----------------------------------------------------------------------------
def test_accepted_events_are_visible_to_a_new_store_on_the_same_file(client, services, settings) -> None:
    events = [{"event_id": f"durable-{i:04d}", "type": "view_item", "item_id": "22112"} for i in range(5)]
    r = send(client, batch(*events, purchase()))
    assert r.status_code == 202 and r.json()["accepted"] == 6
    vid = services.signer.visitor_id("demo", r.json()["token"])
    fresh = open_store(settings.resolved_database_url)
    try:
        assert fresh.count_events("demo", "view_item") == 5
        assert fresh.count_events("demo", "purchase") == 1
        profile = fresh.get_visitor("demo", vid)
        assert profile is not None and profile.orders == 1
    finally:
        fresh.close()


# -- junk ---------------------------------------------------------------------------------
def _junk_event(rng: random.Random) -> object:
    fields = ["event_id", "type", "ts", "item_id", "items", "value", "currency", "transaction_id",
              "promotion_id", "creative_slot", "search_term", "page_view_id"]
    values = [None, True, 0, -1, 1e308, "", "x" * 200, "purchase", "view_item", "GBP", [], {}, [{"item_id": 3}],
              [{"item_id": "a", "quantity": -1}], "2024-13-45T99:00", "".join(rng.choice(string.printable) for _ in range(12))]
    event = {rng.choice(fields): rng.choice(values) for _ in range(rng.randint(0, 8))}
    if rng.random() < 0.6:
        event["event_id"] = "junk-" + "".join(rng.choice(string.ascii_letters) for _ in range(8))
    if rng.random() < 0.6:
        event["type"] = rng.choice(["page_view", "purchase", "view_item", "search", "close_promotion"])
    return event if rng.random() < 0.9 else rng.choice(values)


def test_junk_batches_never_give_a_500(client) -> None:
    rng = random.Random(7)
    statuses = set()
    for _ in range(250):
        body = {"shop": "demo", "events": [_junk_event(rng) for _ in range(rng.randint(1, 4))]}
        if rng.random() < 0.3:  # valid events with junk in the fields the server ignores
            body["events"] = [{"event_id": f"ok-{rng.randrange(10**9)}", "type": "page_view",
                               "extra": _junk_event(rng), "ts": rng.choice([None, 0, 1e15, -5, 1700000000000])}]
        if rng.random() < 0.2:
            body["token"] = rng.choice([None, 5, "junk", "a.b.c"])
        raw = json.dumps(body).encode()
        if rng.random() < 0.15:
            raw = raw[: rng.randint(1, len(raw))]
        if rng.random() < 0.05:
            raw = bytes(rng.randrange(256) for _ in range(50))
        r = send(client, raw, rng.choice(["application/json", "text/plain"]))
        assert r.status_code < 500, (raw, r.text)
        statuses.add(r.status_code)
    assert {202, 400, 422} <= statuses
