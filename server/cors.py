"""CORS per shop: each shop lists the origins allowed to call the API with credentials.

The shop is named in the query string (`?shop=demo`) so that preflight requests, which
carry no body, can be decided too; it is decided once, by the front door (server/web/front.py),
and read here from the request's state. A browser request from an origin the shop did not list
is refused with 403 before it reaches an endpoint, so it records nothing.
"""

from __future__ import annotations

from typing import Callable

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from server.errors import ApiError
from server.web.front import request_shop, send_json

ALLOW_HEADERS = "Content-Type, X-Visitor-Token"
# The server-to-server API (the shop's backend, with its secret key): never from a browser.
SERVER_TO_SERVER = ("/v1/coupons/",)
EXPOSE_HEADERS = "X-Visitor-Token, X-Vitrine-Strategy"


class ShopCORSMiddleware:
    def __init__(self, app: ASGIApp, origins_for: Callable[[str], list[str] | None], prefix: str = "/v1/") -> None:
        self.app = app
        self.origins_for = origins_for  # None for an unknown shop; raises ApiError when it cannot answer
        self.prefix = prefix

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not scope["path"].startswith(self.prefix):
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        if scope["path"].startswith(SERVER_TO_SERVER):
            if origin:  # a browser's request (or preflight): refused, with no CORS header
                await send_json(send, 403, {"error": (
                    "this is the server-to-server API: call it from the shop's backend with the shop's secret key, "
                    "never from a browser")})
                return
            await self.app(scope, receive, send)
            return
        if not origin or scope["path"].endswith(("/vitrine.js", "/popups.js")):
            await self.app(scope, receive, send)
            return
        shop = request_shop(scope) or ""
        try:
            allowed, reason = self._allowed(origin, shop, headers)
        except ApiError as exc:  # the shop cannot answer now (a broken config): the app's own answer
            await JSONResponse({"error": exc.message}, exc.status, headers={"vary": "Origin"})(scope, receive, send)
            return
        preflight = scope["method"] == "OPTIONS" and "access-control-request-method" in headers
        if not allowed:
            await send_json(send, 403 if shop else 400, {"error": reason}, [(b"vary", b"Origin")])
            return
        cors = [
            (b"access-control-allow-origin", origin.encode("latin-1")),
            (b"access-control-allow-credentials", b"true"),
            (b"vary", b"Origin"),
        ]
        if preflight:
            cors += [
                (b"access-control-allow-methods", b"GET, POST, DELETE, OPTIONS"),
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
