"""create_app(settings) -> Starlette: the services a request needs, routes, middleware, errors."""

from __future__ import annotations

import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio.to_thread
from starlette.applications import Starlette
from threadpoolctl import threadpool_limits
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route

from server import api
from server.admin.views import AdminGate, admin_routes
from server.audiences import Audiences
from server.catalog import Catalog
from server.context import ContextBuilder
from server.customers.keys import ShopKeys
from server.errors import ApiError
from server.geo import GeoLocator, bundled_database_path
from server.identity import TokenSigner
from server.navigation import Navigator
from server.privacy import views as privacy_views
from server.promotions import views as coupon_views
from server.recommend.artifact import ModelRegistry
from server.recommend.serving import Recommender
from server.search import SearchService
from server.settings import Settings
from server.shops import ShopConfig, ShopConfigError, ShopRegistry
from server.store import Store, StoreBusy, StoreConflict, open_store
from server.visitors.page_views import PageViewWriter
from server.web.front import FrontDoor
from server.web.overload import InFlightLimit
from widgets.base import Templates

log = logging.getLogger("vitrine")


@dataclass
class Services:
    """Everything built once per process and shared by all requests."""

    settings: Settings
    store: Store
    catalog: Catalog
    shops: ShopRegistry
    templates: Templates
    geo: GeoLocator
    signer: TokenSigner
    contexts: ContextBuilder
    recommender: "Recommender"
    search: SearchService
    navigator: Navigator
    audiences: Audiences
    admin: AdminGate
    shop_keys: ShopKeys

    def shop(self, shop_id: str | None) -> ShopConfig:
        if not shop_id:
            raise ApiError(400, "missing shop: pass ?shop=SHOP")
        try:
            config = self.shops.get(shop_id)
        except ShopConfigError:
            # The registry logged the problems once for this version of the file.
            raise ApiError(
                503, f"shop {shop_id!r} is not available: its config file is broken "
                f"(`vitrine shops check {shop_id}` and the server log say why)",
            ) from None
        if config is None:
            raise ApiError(404, f"unknown shop {shop_id!r}")
        return config

    def close(self) -> None:
        self.contexts.page_views.close()  # the page views not written yet, before the store goes
        self.search.close()
        self.geo.close()
        self.store.close()


def build_services(settings: Settings, migrate: bool = True) -> Services:
    # One BLAS thread per web process: a request's matrix-vector product over 100k items
    # takes 0.2 ms on one core, but a second BLAS thread waiting for a core that another
    # request (or process) holds made it 4-8 ms. Requests run side by side instead.
    threadpool_limits(limits=1, user_api="blas")
    store = open_store(settings.resolved_database_url, settings.trending_half_life_hours, settings.store_busy_timeout_ms)
    if migrate:
        store.migrate()
    geo = GeoLocator(settings.geoip_database or bundled_database_path())
    shops_dir = settings.resolved_shops_dir
    interval = settings.change_check_interval_s
    models = ModelRegistry(settings.resolved_data_dir / "models", check_interval_s=interval)
    catalog = Catalog(store, check_interval_s=interval)
    recommender = Recommender(catalog, models)
    navigator = Navigator(catalog, recommender, settings.affinity_half_life_hours)
    page_views = PageViewWriter(store, settings.page_view_flush_ms / 1000, wait_s=settings.store_busy_timeout_ms / 1000)
    return Services(
        settings=settings,
        store=store,
        catalog=catalog,
        shops=ShopRegistry(shops_dir, check_interval_s=interval),
        templates=Templates([settings.resolved_data_dir / "templates"], check_interval_s=interval),
        geo=geo,
        signer=TokenSigner(settings.signing_keys(), settings.token_max_age_days * 86400),
        contexts=ContextBuilder(
            store, geo, settings.trusted_proxies, settings.visit_timeout_minutes * 60, page_views, catalog,
        ),
        recommender=recommender,
        search=SearchService(
            store, models, settings.resolved_data_dir / "search", settings.search_personal_weight,
            settings.affinity_half_life_hours, settings.popular_search_min_visitors, catalog,
            counter=page_views.count_search,
        ),
        navigator=navigator,
        audiences=Audiences(catalog, navigator, settings.visit_timeout_minutes * 60),
        admin=AdminGate(settings.signing_keys(), settings.admin_session_hours, store),
        shop_keys=ShopKeys(store, settings.signing_keys()),
    )


def create_app(settings: Settings | None = None, services: Services | None = None) -> Starlette:
    from server.cors import ShopCORSMiddleware
    from server.demo.site import demo_routes

    settings = settings or Settings.load()
    services = services or build_services(settings)

    def origins_for(shop_id: str) -> list[str] | None:
        """The shop's origins, None for an unknown shop; ApiError (503) for a broken config."""
        try:
            return services.shop(shop_id).origins
        except ApiError as exc:
            if exc.status == 404:
                return None
            raise

    routes = [
        Route("/", lambda request: RedirectResponse("/demo/")),
        Route("/v1/vitrine.js", api.script),
        Route("/v1/popups.js", api.popups_script),
        Route("/v1/leads", api.leads, methods=["POST"]),
        Route("/v1/reveal", api.reveal, methods=["POST"]),
        Route("/v1/health", api.health),
        Route("/v1/page", api.page, methods=["POST"]),
        Route("/v1/events", api.events, methods=["POST"]),
        Route("/v1/fragments/{kind}", api.fragment, methods=["GET"]),
        Route("/v1/me", privacy_views.me, methods=["GET", "DELETE"]),
        Route("/v1/coupons/redeem", coupon_views.redeem_coupon, methods=["POST"]),
        Route("/v1/coupons/issue", coupon_views.issue_coupon, methods=["POST"]),
        Route("/.well-known/gpc.json", privacy_views.gpc_support, methods=["GET"]),
        Mount("/demo", routes=demo_routes()),
        Mount("/admin", routes=admin_routes()),
    ]

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        # In every worker process: one thread, not anyio's 40 fighting for the GIL (two already
        # cost a new visitor's page call 1.8 times the CPU at 32 connections: docs/benchmarks.md). The in-flight limit (inside CORS, so a 503 carries CORS headers) keeps the
        # queue for them short.
        anyio.to_thread.current_default_thread_limiter().total_tokens = settings.resolved_request_threads
        await anyio.to_thread.run_sync(_warm_and_freeze, services)
        yield
        # A clean stop (SIGTERM) writes the page views still waiting (server/visitors/page_views.py).
        await anyio.to_thread.run_sync(services.contexts.page_views.flush)

    app = Starlette(
        debug=False,
        routes=routes,
        middleware=[
            Middleware(FrontDoor),
            Middleware(ShopCORSMiddleware, origins_for=origins_for),
            Middleware(InFlightLimit, limit=settings.resolved_max_in_flight,
                       events_limit=settings.max_event_batches_in_flight),
        ],
        lifespan=lifespan,
        exception_handlers={
            ApiError: _api_error, StoreBusy: _store_busy, StoreConflict: _store_conflict, HTTPException: _http_error, Exception: _server_error,
        },
    )
    app.state.services = services
    return app


def _warm_and_freeze(services: Services) -> None:
    """Load what requests read (each shop's config, catalog and model), then move every object
    alive into the garbage collector's permanent generation. The collector's full passes then
    skip the catalog and the model: in a warmed worker one took 80 ms (a page call's p99),
    frozen it takes a fraction of a millisecond. What loads later (a new catalog version) is
    collected as usual."""
    for shop in services.shops.ids():
        try:
            services.shop(shop)
            services.catalog.shop(shop)
            services.catalog.prices.shop(shop)
            services.recommender.models.get(shop)
        except Exception as exc:  # noqa: BLE001 - the first request that needs it reports it
            log.warning("could not load shop %s before serving: %s", shop, exc)
    gc.collect()
    gc.freeze()


def services_of(request: Request) -> Services:
    return request.app.state.services


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return JSONResponse({"error": exc.message}, status_code=exc.status)


async def _store_busy(request: Request, exc: Exception) -> Response:
    # Bounded waits: a held write lock or a locked database answers fast, and the client
    # (the embed script keeps the page's default content) may try again in a moment.
    log.warning("store busy on %s %s", request.method, request.url.path)
    return JSONResponse(
        {"error": "the store is busy; try again in a second"}, status_code=503, headers={"Retry-After": "1"}
    )


async def _store_conflict(request: Request, exc: Exception) -> Response:
    # The database gave way to another transaction (a deadlock, a serialization failure) or
    # ended the connection, past the group writer's own tries: the same request in a moment
    # succeeds, so it is answered as a busy store is, not as a server error. The message
    # names the SQLSTATE and statement, never a value.
    log.warning("store conflict on %s %s: %s", request.method, request.url.path, exc)
    return JSONResponse(
        {"error": "the store gave way to another write; try again in a second"}, status_code=503,
        headers={"Retry-After": "1"},
    )


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    if request.url.path.startswith("/v1/"):
        message = "no such endpoint" if exc.status_code == 404 else exc.detail
        if exc.status_code == 405:
            message = f"method {request.method} not allowed here"
        return JSONResponse({"error": message}, status_code=exc.status_code, headers=exc.headers)
    return PlainTextResponse(exc.detail, status_code=exc.status_code, headers=exc.headers)


async def _server_error(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error on %s %s", request.method, request.url.path)
    return JSONResponse({"error": "internal error"}, status_code=500)


def app_from_env() -> Starlette:
    """The app for a uvicorn worker process: settings from VITRINE_* variables."""
    return create_app(Settings.load())
