"""A bound on the work in flight in one worker process: past it, a fast 503, never a queue.

Page calls and fragments run their blocking part on the worker's request thread
(`request_threads`, one by default). More requests than threads wait for one, and on two cores a long wait
helps nobody: the answer comes too late for the page, and the embed script has kept the
slot's default content anyway. So at most `max_in_flight` of them are handled at once; the
next one is answered `503` with `Retry-After: 1` straight away.

Everything of a worker runs on one event loop, so a plain counter is exact. A request counts
until its endpoint has returned, also when it raised or its client went away: a thread
that still runs a disconnected request's store call is work in flight all the same.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Receive, Scope, Send

from server.web.front import send_json

BUSY_MESSAGE = "the server is busy; try again in a second"
BUSY_HEADERS = [(b"retry-after", b"1"), (b"cache-control", b"no-store")]


def kind_of_work(scope: Scope) -> str | None:
    """"render" for an endpoint that reads the store and renders on a request thread,
    "events" for an event batch (it waits for a group commit without a thread of its own),
    None for what the limit does not count: the embed script, the health check, the demo's
    pages and files, and the errors a request gets before any work (CORS preflights,
    unknown paths)."""
    path, method = scope["path"], scope["method"]
    if path == "/v1/page":
        return "render" if method == "POST" else None
    if path == "/v1/events":
        return "events" if method == "POST" else None
    # A sign-up, a code revealed or redeemed: each writes the store on a request thread.
    if path in ("/v1/leads", "/v1/reveal", "/v1/coupons/redeem", "/v1/coupons/issue"):
        return "render" if method == "POST" else None
    if path == "/v1/me":  # a visitor's export or erasure reads or writes the store on a request thread
        return "render" if method in ("GET", "HEAD", "DELETE") else None
    return "render" if path.startswith("/v1/fragments/") and method in ("GET", "HEAD") else None


def does_real_work(scope: Scope) -> bool:
    return kind_of_work(scope) is not None


class InFlightLimit:
    """Middleware: at most `limit` rendering requests and `events_limit` event batches at once;
    the next one of either gets 503."""

    def __init__(self, app: ASGIApp, limit: int, events_limit: int = 256) -> None:
        if limit < 1 or events_limit < 1:
            raise ValueError(f"in-flight limits must be at least 1, not {limit} and {events_limit}")
        self.app = app
        self.limits = {"render": limit, "events": events_limit}
        self.counts = {"render": 0, "events": 0}

    @property
    def limit(self) -> int:
        return self.limits["render"]

    @property
    def in_flight(self) -> int:
        return self.counts["render"] + self.counts["events"]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = kind_of_work(scope) if scope["type"] == "http" else None
        if kind is None:
            await self.app(scope, receive, send)
            return
        if self.counts[kind] >= self.limits[kind]:
            await send_json(send, 503, {"error": BUSY_MESSAGE}, BUSY_HEADERS)
            return
        self.counts[kind] += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.counts[kind] -= 1
