"""HTTP: the visitor's own data (`GET|DELETE /v1/me`) and the GPC support resource."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from server.errors import ApiError
from server.identity import clear_token, identify
from server.privacy.data import audiences_of, delete_visitor, export_visitor
from server.web.front import request_shop
from server.web.responses import JSONResponse

# https://www.w3.org/TR/gpc/#the-gpc-support-resource: lastUpdate is the date this statement
# was made (an RFC 3339 full-date); change it whenever what it states changes.
GPC_SUPPORT = {"gpc": True, "lastUpdate": "2026-12-01"}


async def me(request: Request) -> Response:
    """`GET /v1/me?shop=S`: everything held about the visitor of the token, as JSON (404 when
    nothing is: no valid token, or nothing stored). `DELETE`: all of it goes, and the cookie
    with it (204, with or without a token: deleting twice is deleting once). Never cached."""
    try:
        response = await _me(request)
    except ApiError as exc:  # an unknown shop: the usual error, not cached either
        response = JSONResponse({"error": exc.message}, status_code=exc.status)
    response.headers["Cache-Control"] = "no-store"
    return response


async def _me(request: Request) -> Response:
    svc = request.app.state.services
    shop = svc.shop(request_shop(request))
    identity = identify(svc.signer, request, shop.id, svc.settings.cookie_name)
    if request.method == "DELETE":
        if not identity.is_new:
            def delete() -> None:
                # This worker's page views of theirs not written yet go first, or they would
                # bring the visitor's row back after the deletion.
                svc.contexts.page_views.forget(shop.id, identity.visitor_id)
                delete_visitor(svc.store, shop.id, identity.visitor_id)

            await run_in_threadpool(delete)
        response = Response(status_code=204)
        clear_token(response, shop.id, svc.settings.cookie_name, https=svc.contexts.is_https(request))
        return response
    if identity.is_new:
        return _nothing_stored(
            "this request carries no valid visitor token (X-Visitor-Token header or the "
            f"{svc.settings.cookie_name}_{shop.id} cookie), and nothing is stored about a visitor without one"
        )
    def export() -> dict | None:
        svc.contexts.page_views.flush()  # their page views written behind the answers, too
        data = export_visitor(svc.store, shop.id, identity.visitor_id)
        if data is not None:  # what is inferred about them, as well as what is stored
            data["audiences"] = audiences_of(svc.store, shop.id, identity.visitor_id, svc.audiences.for_shop(shop.audience_book))
        return data

    data = await run_in_threadpool(export)
    if data is None:
        return _nothing_stored("nothing is stored about this visitor")
    return JSONResponse(data)


def _nothing_stored(message: str) -> Response:
    return JSONResponse({"error": message}, status_code=404)


async def gpc_support(request: Request) -> Response:
    """`/.well-known/gpc.json` on Vitrine's origin: any page may read it."""
    return JSONResponse(
        GPC_SUPPORT, headers={"Access-Control-Allow-Origin": "*", "Cache-Control": "public, max-age=86400"},
    )
