"""The baseline: bare Starlette endpoints shaped like Vitrine's, served the same way."""

from starlette.applications import Starlette
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route


async def page(request):
    await request.body()
    return JSONResponse({"fragments": {}, "popups": []})


async def fragment(request):
    return HTMLResponse('<section><ul><li data-item-id="1">One</li></ul></section>')


app = Starlette(routes=[
    Route("/v1/page", page, methods=["POST"]),
    Route("/v1/fragments/{kind}", fragment),
])
