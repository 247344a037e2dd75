"""The baseline: a bare Starlette endpoint answering a small JSON body, served like Vitrine."""

from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route


async def page(request):
    await request.body()
    return JSONResponse({"fragments": {}, "popups": []})


app = Starlette(routes=[Route("/v1/page", page, methods=["POST"])])
