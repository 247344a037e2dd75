"""CORS per shop: each shop lists the origins allowed to call the API with credentials.

The shop is named in the query string (`?shop=demo`) so that preflight requests, which
carry no body, can be decided too. A browser request from an origin the shop did not list
is refused with 403 before it reaches an endpoint, so it records nothing.
"""

from __future__ import annotations

import json
from typing import Callable
from urllib.parse import parse_qs

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

ALLOW_HEADERS = "Content-Type, X-Visitor-Token"
EXPOSE_HEADERS = "X-Visitor-Token, X-Vitrine-Strategy"


class ShopCORSMiddleware:
    def __init__(self, app: ASGIApp, origins_for: Callable[[str], list[str] | None], prefix: str = "/v1/") -> None:
        self.app = app
        self.origins_for = origins_for  # None for an unknown shop
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if not origin or scope["path"].endswith("/vitrine.js"):
            await self.app(scope, receive, send)
            return
        shop = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("shop", [""])[0]
        allowed, reason = self._allowed(origin, shop, headers)
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if not allowed:
            await _json(send, 403 if shop else 400, {"error": reason})
            return
        cors = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
        if preflight:
            cors += [
                (b"access-control-allow-methods", b"GET, POST, OPTIONS"),
                (b"access-control-allow-headers", ALLOW_HEADERS.encode()),
                (b"access-control-max-age", b"600"),
            ]
            await send({"type": "http.response.start", "status": 204, "headers": cors})
            await send({"type": "http.response.body", "body": b""})
            return
        cors.append((b"access-control-expose-headers", EXPOSE_HEADERS.encode()))

        async def send_with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": list(message.get("headers", [])) + cors}
            await send(message)

        await self.app(scope, receive, send_with_cors)

    def _allowed(self, origin: str, shop: str, headers: Headers) -> tuple[bool, str]:
        if not shop:
            return False, "cross-origin requests must name the shop: ?shop=SHOP"
        origins = self.origins_for(shop)
        if origins is None:
            return False, f"unknown shop {shop!r}"
        # The server's own pages (the demo shop, QA opening fragments) are always allowed.
        own = {f"{scheme}://{headers.get('host', '')}" for scheme in ("http", "https")}
        if origin in own or origin.rstrip("/") in (o.rstrip("/") for o in origins):
            return True, ""
        return False, f"origin {origin} is not allowed for shop {shop!r}; add it to the shop's origins"


async def _json(send: Send, status: int, payload: dict) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"vary", b"Origin")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
