"""Overload: past max_in_flight a worker answers 503 at once, and the count is exact.

The middleware on its own, driven as ASGI on one event loop, and a real `vitrine serve`
on PostgreSQL whose page calls are made slow by another connection holding the visitors
table locked (a migration, say: ACCESS EXCLUSIVE blocks the page call's read of the visitor).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
import pytest
import sqlalchemy as sa
from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from server.app import app_from_env
from server.settings import Settings, SettingsError
from server.web.overload import BUSY_MESSAGE, InFlightLimit, does_real_work

from conftest import new_postgres_database
from servers import running, server_env, with_demo_shop

# -- the middleware, on one event loop ---------------------------------------------------


class Endpoints:
    """A Starlette app whose work endpoints wait until the test lets them finish."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.entered = 0

    async def work(self, request: Request) -> PlainTextResponse:
        await request.body()
        self.entered += 1
        await self.release.wait()
        if request.path_params.get("kind") == "broken":
            raise RuntimeError("the endpoint broke")
        return PlainTextResponse("done")

    async def cheap(self, request: Request) -> PlainTextResponse:
        return PlainTextResponse("ok")

    def app(self) -> Starlette:
        return Starlette(routes=[
            Route("/v1/page", self.work, methods=["POST"]),
            Route("/v1/fragments/{kind}", self.work),
            Route("/v1/health", self.cheap),
            Route("/v1/vitrine.js", self.cheap),
            Route("/demo/", self.cheap),
        ])


@dataclass
class Answer:
    status: int = 0
    headers: dict[str, str] | None = None
    body: bytes = b""


async def call(app, method: str, path: str, receive=None) -> Answer:
    """One request through `app` as an ASGI server would make it."""
    answer = Answer()
    scope = {
        "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": method, "scheme": "http",
        "path": path, "raw_path": path.encode(), "query_string": b"", "root_path": "",
        "headers": [(b"host", b"127.0.0.1")], "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8000),
    }

    async def whole_body() -> dict:
        return {"type": "http.request", "body": b"{}", "more_body": False}

    async def send(message: dict) -> None:
        if message["type"] == "http.response.start":
            answer.status = message["status"]
            answer.headers = {k.decode(): v.decode() for k, v in message["headers"]}
        else:
            answer.body += message.get("body", b"")

    await app(scope, receive or whole_body, send)
    return answer


async def until(check, timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.001)


def run_on_a_loop_of_its_own(scenario) -> None:
    """asyncio.run in a thread of its own: the browser tests' Playwright keeps an event loop
    running on the main thread of the test process, where asyncio.run refuses to start."""
    with ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: asyncio.run(scenario())).result()


def test_the_request_past_the_limit_is_refused_at_once_and_the_count_comes_back_to_zero() -> None:
    async def scenario() -> None:
        endpoints = Endpoints()
        limit = InFlightLimit(endpoints.app(), limit=3)
        waiting = [
            asyncio.create_task(call(limit, "POST", "/v1/page")),
            asyncio.create_task(call(limit, "GET", "/v1/fragments/banner")),
            asyncio.create_task(call(limit, "HEAD", "/v1/fragments/menu")),
        ]
        await until(lambda: endpoints.entered == 3)
        assert limit.in_flight == 3

        refused = await asyncio.wait_for(call(limit, "POST", "/v1/page"), 0.5)
        assert refused.status == 503
        assert refused.headers["retry-after"] == "1" and refused.headers["content-type"] == "application/json"
        assert json.loads(refused.body) == {"error": BUSY_MESSAGE}
        assert endpoints.entered == 3, "a refused request never reaches the endpoint"
        # What does no real work is never refused, however full the worker is.
        for path in ("/v1/health", "/v1/vitrine.js", "/demo/"):
            assert (await asyncio.wait_for(call(limit, "GET", path), 0.5)).status == 200, path
        assert (await call(limit, "OPTIONS", "/v1/page")).status == 405  # not counted: the router's 405
        assert limit.in_flight == 3

        endpoints.release.set()
        assert [a.status for a in await asyncio.gather(*waiting)] == [200, 200, 200]
        assert limit.in_flight == 0
        assert (await call(limit, "POST", "/v1/page")).status == 200

    run_on_a_loop_of_its_own(scenario)


def test_a_request_that_raises_or_is_cancelled_or_loses_its_client_stops_counting() -> None:
    async def scenario() -> None:
        endpoints = Endpoints()
        limit = InFlightLimit(endpoints.app(), limit=3)

        gone = asyncio.Event()  # the client of this request hangs up before its body arrives

        async def hang_up() -> dict:
            await gone.wait()
            return {"type": "http.disconnect"}

        broken = asyncio.create_task(call(limit, "GET", "/v1/fragments/broken"))
        cancelled = asyncio.create_task(call(limit, "POST", "/v1/page"))
        disconnected = asyncio.create_task(call(limit, "POST", "/v1/page", receive=hang_up))
        await until(lambda: endpoints.entered == 2 and limit.in_flight == 3)
        assert (await call(limit, "POST", "/v1/page")).status == 503

        gone.set()
        with pytest.raises(ClientDisconnect):
            await asyncio.wait_for(disconnected, 1)
        assert limit.in_flight == 2
        cancelled.cancel()
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert limit.in_flight == 1
        endpoints.release.set()
        with pytest.raises(RuntimeError, match="the endpoint broke"):
            await broken
        assert limit.in_flight == 0
        assert (await call(limit, "GET", "/v1/fragments/banner")).status == 200

    run_on_a_loop_of_its_own(scenario)


@pytest.mark.parametrize(
    "method, path, counted",
    [
        ("POST", "/v1/page", True), ("POST", "/v1/events", True), ("GET", "/v1/fragments/banner", True),
        ("HEAD", "/v1/fragments/banner", True), ("GET", "/v1/vitrine.js", False), ("GET", "/v1/health", False),
        ("OPTIONS", "/v1/page", False), ("GET", "/v1/page", False), ("GET", "/demo/static/shop.css", False),
        ("GET", "/v1/pages", False), ("GET", "/v1/me", True), ("DELETE", "/v1/me", True), ("OPTIONS", "/v1/me", False),
        ("GET", "/.well-known/gpc.json", False),
    ],
)
def test_what_counts_as_real_work(method: str, path: str, counted: bool) -> None:
    assert does_real_work({"type": "http", "method": method, "path": path}) is counted


def test_the_limits_default_to_one_thread_and_32_in_flight() -> None:
    settings = Settings.load(environ={})
    assert settings.resolved_request_threads == 1
    assert settings.resolved_max_in_flight == 64
    chosen = Settings.load(environ={"VITRINE_REQUEST_THREADS": "3", "VITRINE_MAX_IN_FLIGHT": "5"})
    assert (chosen.resolved_request_threads, chosen.resolved_max_in_flight) == (3, 5)
    assert Settings.load(environ={"VITRINE_REQUEST_THREADS": "3"}).resolved_max_in_flight == 64
    with pytest.raises(SettingsError, match=r"VITRINE_MAX_IN_FLIGHT.*'-1' \(at least 0\)"):
        Settings.load(environ={"VITRINE_MAX_IN_FLIGHT": "-1"})


def test_each_worker_process_sizes_its_thread_pool_at_startup(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # `vitrine serve --workers N` builds each worker's app with app_from_env.
    monkeypatch.setenv("VITRINE_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("VITRINE_SECRET_KEYS", "test-key-1")
    monkeypatch.setenv("VITRINE_REQUEST_THREADS", "3")
    with TestClient(app_from_env()) as client:
        threads = client.portal.call(lambda: anyio.to_thread.current_default_thread_limiter().total_tokens)
        assert client.get("/v1/health").status_code == 200
    assert threads == 3


# -- a real server, its page calls slowed by a locked database ---------------------------

BUSY_TIMEOUT_S = 1.5
MAX_IN_FLIGHT = 2
FAST_S = 0.3
PAGE = {"shop": "demo", "page": {"type": "home"}, "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}]}


@dataclass
class Server:
    port: int
    data_dir: Path
    database_url: str
    token: str = ""  # a returning visitor's: their page calls read their row

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"  # the server's own origin: CORS allows it


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes
    seconds: float

    @property
    def error(self) -> str:
        return json.loads(self.body).get("error", "") if self.headers.get("content-type") == "application/json" else ""


def request(server: Server, method: str, path: str, body: bytes | None = None, headers: dict | None = None) -> Reply:
    """One request on its own connection, as the embed script on the shop's page sends it
    (`headers` adds to its headers; a None value leaves one out)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=10)
    headers = {"Origin": server.origin, "Content-Type": "application/json", **(headers or {})}
    headers = {name: value for name, value in headers.items() if value is not None}
    started = time.monotonic()
    try:
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        data = response.read()
        return Reply(response.status, {k.lower(): v for k, v in response.getheaders()}, data, time.monotonic() - started)
    finally:
        conn.close()


def page_call(server: Server) -> Reply:
    return request(server, "POST", "/v1/page?shop=demo", json.dumps({**PAGE, "token": server.token or None}).encode())


def at_once(*calls) -> list[Reply]:
    """The calls made together, each from its own thread; their replies in the same order."""
    replies: list[Reply | None] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def run(i: int) -> None:
        start.wait()
        replies[i] = calls[i]()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(15)
    assert all(replies), "a request did not come back"
    return replies  # type: ignore[return-value]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`vitrine serve` on a fresh data directory with the demo shop and a new PostgreSQL
    database: one request thread, at most two requests in flight, store waits of 1.5 s."""
    data_dir = with_demo_shop(tmp_path_factory.mktemp("overload"))
    with new_postgres_database("overload") as url:
        env = server_env(
            VITRINE_MAX_IN_FLIGHT=str(MAX_IN_FLIGHT), VITRINE_REQUEST_THREADS="1",
            VITRINE_STORE_BUSY_TIMEOUT_MS=str(int(BUSY_TIMEOUT_S * 1000)), VITRINE_SECRET_KEYS="test-key-1",
            VITRINE_DATABASE_URL=url,
        )
        with running("serve", data_dir, env, data_dir / "server.log") as serving:
            yield Server(serving.port, data_dir, url)


@dataclass
class Overload:
    admitted: list[Reply]  # page calls the worker took on
    refused: list[Reply]  # page calls and a fragment answered "busy"
    cheap: dict[str, Reply]  # what does no real work, asked while the worker was full
    after: list[Reply]  # page calls once the store was free again
    events: Reply  # an event batch sent while the worker was full


@pytest.fixture(scope="module")
def overload(server: Server) -> Overload:
    first_call = page_call(server)  # tables in place, the shop's config loaded
    assert first_call.status == 200
    server.token = json.loads(first_call.body)["token"]
    time.sleep(0.5)  # its page view written (50 ms later): no page call waits for that write
    locker = sa.create_engine(server.database_url)
    lock = locker.connect()
    lock.begin()
    # A migration, say: every page call waits for the store to read the visitor.
    lock.execute(sa.text("LOCK TABLE visitors IN ACCESS EXCLUSIVE MODE"))
    try:
        first: list[Reply] = []
        wave = threading.Thread(target=lambda: first.extend(at_once(*[lambda: page_call(server)] * 10)))
        wave.start()
        time.sleep(0.5)  # the admitted page calls are waiting for the store by now
        names = ["page", "events", "fragment", "health", "script", "preflight"]
        during = dict(zip(names, at_once(
            lambda: page_call(server),
            lambda: request(server, "POST", "/v1/events?shop=demo",
                            b'{"shop": "demo", "events": [{"event_id": "during-overload-1", "type": "page_view"}]}'),
            lambda: request(server, "GET", "/v1/fragments/banner?shop=demo&placement=top"),
            lambda: request(server, "GET", "/v1/health", headers={"Origin": None}),  # a load balancer
            lambda: request(server, "GET", "/v1/vitrine.js"),
            lambda: request(server, "OPTIONS", "/v1/page?shop=demo", headers={"Access-Control-Request-Method": "POST"}),
        )))
        wave.join(15)
    finally:
        lock.rollback()
        lock.close()
        locker.dispose()
    busy = first + [during["page"], during["fragment"]]
    return Overload(
        events=during["events"],
        admitted=[r for r in busy if r.error != BUSY_MESSAGE],
        refused=[r for r in busy if r.error == BUSY_MESSAGE],
        cheap={name: during[name] for name in ("health", "script", "preflight")},
        after=at_once(*[lambda: page_call(server)] * MAX_IN_FLIGHT) + [page_call(server)],
    )


def test_past_the_limit_page_calls_events_and_fragments_get_503_at_once(overload: Overload, server: Server) -> None:
    assert len(overload.refused) == 10, "8 of the 10 page calls sent together, and the 2 sent while they waited"
    for reply in overload.refused:
        assert reply.status == 503 and reply.headers["retry-after"] == "1"
        assert reply.seconds < FAST_S, f"a refusal took {reply.seconds:.2f} s"
        # The embed script, on the shop's origin, can read the answer.
        assert reply.headers["access-control-allow-origin"] == server.origin


def test_no_more_page_calls_than_the_limit_are_handled_at_once(overload: Overload) -> None:
    assert len(overload.admitted) == MAX_IN_FLIGHT, [(r.status, r.error) for r in overload.admitted]
    # They waited for the store as long as it lets them, then gave up.
    for reply in overload.admitted:
        assert reply.status == 503 and "store is busy" in reply.error, reply.error
    # With one request thread (anyio's default would be 40) the second waited for the
    # thread first, then (the one write trying the busy store again) for the store: their
    # waits add up.
    first, second = sorted(r.seconds for r in overload.admitted)
    assert BUSY_TIMEOUT_S - 0.1 < first < BUSY_TIMEOUT_S + 0.5
    assert 2 * BUSY_TIMEOUT_S - 0.1 < second < 2 * BUSY_TIMEOUT_S + 1


def test_event_batches_have_a_budget_of_their_own(overload: Overload) -> None:
    # Not refused for the page calls in flight: the batch waited for its group commit as long
    # as the store lets it, then got the store's own 503 (nothing was written, it may be resent).
    reply = overload.events
    assert reply.error != BUSY_MESSAGE
    assert reply.status == 503 and "store is busy" in reply.error and reply.headers["retry-after"]
    assert reply.seconds < 2 * BUSY_TIMEOUT_S + 1


def test_health_the_script_and_preflights_are_never_refused(overload: Overload) -> None:
    health, script, preflight = overload.cheap["health"], overload.cheap["script"], overload.cheap["preflight"]
    assert health.status == 200 and json.loads(health.body)["status"] == "ok"
    assert script.status == 200 and script.headers["content-type"].startswith("text/javascript")
    assert preflight.status == 204 and preflight.headers["access-control-allow-origin"]
    assert preflight.seconds < FAST_S  # answered by CORS, no thread needed
    # Their wait is bounded by the limit too: at most the admitted requests' turns at the threads.
    assert max(r.seconds for r in overload.cheap.values()) < MAX_IN_FLIGHT * BUSY_TIMEOUT_S + 1


def test_health_and_the_script_answer_quickly_while_the_worker_is_full(overload: Overload) -> None:
    assert overload.cheap["health"].seconds < FAST_S and overload.cheap["script"].seconds < FAST_S


def test_once_the_store_is_free_page_calls_get_200_again(overload: Overload) -> None:
    assert [r.status for r in overload.after] == [200] * (MAX_IN_FLIGHT + 1)
    assert all(r.seconds < 1 for r in overload.after)
