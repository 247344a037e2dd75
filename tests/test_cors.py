"""Per-shop CORS with credentials: listed origins in, everyone else out before anything is recorded."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from server.store.schema import visitors

from conftest import UK_IP, stored

LISTED = "http://localhost:8000"  # in the demo config's `origins`
STRANGER = "https://evil.example"
PAGE = {"shop": "demo", "slots": [{"id": "top", "widget": "banner"}]}
EVENTS = {"shop": "demo", "events": [{"event_id": "cors-000001", "type": "page_view"}]}


def counts(services) -> tuple[int, int]:
    with stored(services).engine.connect() as conn:
        n_visitors = conn.execute(sa.select(sa.func.count()).select_from(visitors)).scalar_one()
    return services.store.count_events("demo"), n_visitors


def test_listed_origin_gets_credentialed_cors_headers(client) -> None:
    r = client.post("/v1/page?shop=demo", json=PAGE, headers={"Origin": LISTED, "X-Forwarded-For": UK_IP})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == LISTED
    assert r.headers["access-control-allow-credentials"] == "true"
    assert "Origin" in r.headers["vary"]
    # The script reads the renewed token from the header, so it must be exposed.
    assert "X-Visitor-Token" in r.headers["access-control-expose-headers"]
    assert r.json()["fragments"]["top"]["campaigns"] == ["uk-delivery"]


def test_listed_origin_can_send_events(client, services) -> None:
    r = client.post("/v1/events?shop=demo", json=EVENTS, headers={"Origin": LISTED})
    assert r.status_code == 202
    assert r.headers["access-control-allow-origin"] == LISTED
    assert services.store.count_events("demo") == 1


def test_origin_matches_with_or_without_a_trailing_slash(client, settings) -> None:
    (settings.resolved_shops_dir / "slashy.toml").write_text('origins = ["https://shop.example/"]\n')
    r = client.get("/v1/fragments/banner?shop=slashy", headers={"Origin": "https://shop.example"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "https://shop.example"


@pytest.mark.parametrize("path", ["/v1/page", "/v1/events"])
def test_preflight_is_204_with_the_allowed_headers(client, services, path: str) -> None:
    r = client.options(f"{path}?shop=demo", headers={
        "Origin": LISTED, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type, x-visitor-token",
    })
    assert r.status_code == 204
    assert r.headers["access-control-allow-origin"] == LISTED
    assert r.headers["access-control-allow-credentials"] == "true"
    allowed = {h.strip().lower() for h in r.headers["access-control-allow-headers"].split(",")}
    assert {"x-visitor-token", "content-type"} <= allowed
    assert "POST" in r.headers["access-control-allow-methods"]
    assert counts(services) == (0, 0)


@pytest.mark.parametrize(
    "method, path, body",
    [("post", "/v1/page", PAGE), ("post", "/v1/events", EVENTS), ("get", "/v1/fragments/banner", None)],
)
def test_unlisted_origin_is_403_and_records_nothing(client, services, method: str, path: str, body) -> None:
    before = counts(services)
    kwargs = {"json": body} if body else {}
    r = getattr(client, method)(f"{path}?shop=demo", headers={"Origin": STRANGER, "X-Forwarded-For": UK_IP}, **kwargs)
    assert r.status_code == 403
    assert r.headers["content-type"].startswith("application/json")
    assert STRANGER in r.json()["error"] and "origins" in r.json()["error"]
    assert "access-control-allow-origin" not in r.headers
    assert "set-cookie" not in r.headers
    assert counts(services) == before


def test_unlisted_origin_preflight_is_refused(client) -> None:
    r = client.options("/v1/page?shop=demo", headers={"Origin": STRANGER, "Access-Control-Request-Method": "POST"})
    assert r.status_code == 403
    assert "access-control-allow-origin" not in r.headers


def test_an_origin_listed_for_another_shop_is_refused(client, settings) -> None:
    (settings.resolved_shops_dir / "other.toml").write_text('origins = ["https://other.example"]\n')
    r = client.post("/v1/page?shop=demo", json=PAGE, headers={"Origin": "https://other.example"})
    assert r.status_code == 403


def test_request_without_origin_is_allowed(client, services) -> None:
    # curl, server-side includes, same-origin GETs: no Origin header, no CORS.
    r = client.post("/v1/page?shop=demo", json=PAGE, headers={"X-Forwarded-For": UK_IP})
    assert r.status_code == 200
    assert "access-control-allow-origin" not in r.headers
    assert counts(services)[0] == 1


def test_the_servers_own_origin_is_always_allowed(client, settings) -> None:
    (settings.resolved_shops_dir / "closed.toml").write_text("origins = []\n")
    r = client.post("/v1/page?shop=closed", json={**PAGE, "shop": "closed"}, headers={"Origin": "http://127.0.0.1:8000"})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "http://127.0.0.1:8000"
    refused = client.post("/v1/page?shop=closed", json={**PAGE, "shop": "closed"}, headers={"Origin": LISTED})
    assert refused.status_code == 403


def test_cross_origin_request_without_shop_in_the_url_is_400(client, services) -> None:
    # The shop in the body is not enough: a preflight has no body, so the URL must name it.
    r = client.post("/v1/page", json=PAGE, headers={"Origin": LISTED})
    assert r.status_code == 400
    assert "?shop=" in r.json()["error"]
    assert counts(services) == (0, 0)


def test_cross_origin_request_for_an_unknown_shop_is_refused(client) -> None:
    r = client.post("/v1/page?shop=ghost", json={**PAGE, "shop": "ghost"}, headers={"Origin": LISTED})
    assert r.status_code == 403 and "ghost" in r.json()["error"]


def test_the_embed_script_is_open_to_every_origin(client) -> None:
    r = client.get("/v1/vitrine.js", headers={"Origin": STRANGER})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == "*"
    assert "javascript" in r.headers["content-type"]
