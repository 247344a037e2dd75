"""The server-to-server coupon API: `POST /v1/coupons/redeem`, called by the shop's checkout
with the shop's secret key (`Authorization: Bearer <key>`, what `vitrine shops key S` prints).

Never from a browser: the key would be in the page. These routes get no CORS headers, and a
request carrying an `Origin` (every cross-origin browser request, preflights included) is
refused before it reaches them (server/cors.py, SERVER_TO_SERVER).
"""

from __future__ import annotations

import hmac
from typing import TYPE_CHECKING, Any, Callable

from pydantic import BaseModel, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from server.customers.keys import derive_key
from server.errors import ApiError
from server.events import describe_validation_error
from server.promotions.issue import IssueIn, issue_to_customer
from server.promotions.redeem import RedeemIn, redeem
from server.web.front import body_shop, request_shop
from server.web.responses import JSONResponse

if TYPE_CHECKING:
    from server.customers.keys import ShopKeys

MAX_BODY_BYTES = 64 * 1024


def check_key(request: Request, keys: "ShopKeys", shop: str) -> None:
    """401 unless the request carries the shop's secret key as a bearer token (any of the
    server's secret keys derives it, as for `identify`: a rotation of those keeps checkouts
    working)."""
    header = request.headers.get("authorization", "")
    scheme, _, given = header.partition(" ")
    if not header:
        raise ApiError(401, f"missing key: send the shop's secret key as `Authorization: Bearer <key>` "
                            f"(`vitrine shops key {shop}` prints it)")
    if scheme.lower() != "bearer" or not given.strip():
        raise ApiError(401, "the Authorization header must be `Bearer <key>`, with the shop's secret key")
    version = keys.version(shop)
    given_bytes = given.strip().encode()
    if not any(hmac.compare_digest(given_bytes, derive_key(secret, shop, version).encode()) for secret in keys.signing_keys):
        raise ApiError(401, f"wrong key for shop {shop!r}: not its secret key (another shop's, or one rotated since; "
                            f"`vitrine shops key {shop}` prints the current one)")


async def redeem_coupon(request: Request) -> Response:
    """`POST /v1/coupons/redeem`: the answer of server/promotions/redeem.py, as JSON."""
    return await _server_to_server(request, RedeemIn, redeem)


async def issue_coupon(request: Request) -> Response:
    """`POST /v1/coupons/issue`: a code of a pool for one of the shop's customers (an apology
    coupon), which a campaign with `holds_coupon` then shows them (server/promotions/issue.py)."""
    return await _server_to_server(request, IssueIn, issue_to_customer)


async def _server_to_server(request: Request, model: type[BaseModel], work: Callable[..., dict[str, Any]]) -> Response:
    """The shop's key (before the body is read when the URL names the shop), the body as
    `model`, then `work(store, shop, body)`'s answer as JSON; errors as JSON, a 401 with
    WWW-Authenticate."""
    from server.api import _is_json_error, read_body

    svc = request.app.state.services
    try:
        in_url = request_shop(request)
        if in_url:
            check_key(request, svc.shop_keys, svc.shop(in_url).id)
        raw = await read_body(request, MAX_BODY_BYTES)
        try:
            body = model.model_validate_json(raw)
        except ValidationError as exc:
            raise ApiError(400 if _is_json_error(exc) else 422, describe_validation_error(exc)) from None
        shop = svc.shop(body_shop(request, body.shop))  # type: ignore[attr-defined]
        if not in_url:
            check_key(request, svc.shop_keys, shop.id)
        answer = await run_in_threadpool(work, svc.store, shop.id, body)
    except ApiError as exc:
        headers = {"Cache-Control": "no-store"}
        if exc.status == 401:
            headers["WWW-Authenticate"] = 'Bearer realm="vitrine"'
        return JSONResponse({"error": exc.message}, status_code=exc.status, headers=headers)
    return JSONResponse(answer, headers={"Cache-Control": "no-store"})
