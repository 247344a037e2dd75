"""The front door of every request: the query string read once, the shop decided once, an
access log without query strings or addresses, and headers every response carries.

The shop of a `/v1/` request is decided here and nowhere else: the `shop` query parameter,
stored in the request's state (`request_shop`). A query string that repeats any parameter
(`?shop=a&shop=b`) is refused with 400, so no later reader can see another value than this
one. CORS (server/cors.py) and the endpoints read the decision; a body that names another
shop is a 400 at the endpoint (`body_shop`).
"""

from __future__ import annotations

import json
import logging
import time
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError

access_log = logging.getLogger("vitrine.access")
STATE_KEY = "shop"
SECURITY_HEADERS = [(b"x-content-type-options", b"nosniff")]


class RepeatedParameter(ValueError):
    pass


def query_once(query_string: bytes) -> dict[str, str]:
    """The query parameters, each at most once; a repeated name raises RepeatedParameter."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True):
        if name in params:
            raise RepeatedParameter(f"parameter {name!r} is given more than once; give it once")
        params[name] = value
    return params


class FrontDoor:
    """Outermost middleware: access log, security headers, and (under /v1/) the shop decision."""

    def __init__(self, app: ASGIApp, prefix: str = "/v1/") -> None:
        self.app = app
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 0

        async def send_logged(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": list(message.get("headers", [])) + SECURITY_HEADERS}
            await send(message)

        try:
            if _has_nul(scope):
                # No store can hold it (PostgreSQL text refuses NUL) and no page needs it.
                await send_json(send_logged, 400, {"error": "the request's path or query string contains a NUL character"})
                return
            if scope["path"].startswith(self.prefix):
                try:
                    params = query_once(scope.get("query_string", b""))
                except RepeatedParameter as exc:
                    await send_json(send_logged, 400, {"error": str(exc)})
                    return
                scope.setdefault("state", {})[STATE_KEY] = params.get("shop") or None
            await self.app(scope, receive, send_logged)
        finally:
            # Method, path and status only: never the query string (search terms, every
            # keystroke of a search box) and never the client's address.
            access_log.info(
                "%s %s %d %.1fms", scope["method"], scope["path"][:200], status, (time.perf_counter() - started) * 1000
            )


def _has_nul(scope: Scope) -> bool:
    query = scope.get("query_string", b"")
    return "\x00" in scope["path"] or b"\x00" in query or b"%00" in query


def request_shop(request: Request | Scope) -> str | None:
    """The shop this request names (decided once by FrontDoor), or None."""
    scope = request.scope if isinstance(request, Request) else request
    return scope.get("state", {}).get(STATE_KEY)


def body_shop(request: Request, named_in_body: str | None) -> str | None:
    """The shop of a request whose body may name it too: both must agree."""
    in_url = request_shop(request)
    if in_url and named_in_body and in_url != named_in_body:
        raise ApiError(400, f"shop in the URL ({in_url!r}) and in the body ({named_in_body!r}) differ")
    return in_url or named_in_body


async def send_json(send: Send, status: int, payload: dict, headers: list[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps(payload).encode()
    head = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": head})
    await send({"type": "http.response.body", "body": body})
