"""A bound on the work in flight in one worker process: past it, a fast 503, never a queue.

Page calls, event batches and fragments run their blocking part on a few threads
(`request_threads`). More requests than threads wait for one, and on two cores a long wait
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


def does_real_work(scope: Scope) -> bool:
    """A request for an endpoint that reads the store and renders: what the limit counts.

    The embed script, the health check, the demo's pages and files, and the errors a
    request gets before any work (CORS preflights, unknown paths) never wait for it.
    """
    path, method = scope["path"], scope["method"]
    if path in ("/v1/page", "/v1/events"):
        return method == "POST"
    return path.startswith("/v1/fragments/") and method in ("GET", "HEAD")


class InFlightLimit:
    """Middleware: at most `limit` requests that do real work at once; the next one gets 503."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        if limit < 1:
            raise ValueError(f"the in-flight limit must be at least 1, not {limit}")
        self.app = app
        self.limit = limit
        self.in_flight = 0

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not does_real_work(scope):
            await self.app(scope, receive, send)
            return
        if self.in_flight >= self.limit:
            await send_json(send, 503, {"error": BUSY_MESSAGE}, BUSY_HEADERS)
            return
        self.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.in_flight -= 1
