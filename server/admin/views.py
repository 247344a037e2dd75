"""The dashboard's pages under /admin/: sign-in, then per shop the overview, campaigns and
panels, experiments, audiences, search and models (docs/dashboard.md). Each page has a JSON
twin (`.json`); nothing answers before the session is checked."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Awaitable, Callable
from urllib.parse import parse_qs, quote

import jinja2
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from server.admin import charts
from server.admin.auth import LOGIN_CSRF_COOKIE, SESSION_COOKIE, FailedSignIns, Session, Sessions, normal_email
from server.admin.auth import password_matches, same
from server.admin.reports import (
    DIMENSIONS, PRESETS, SIMULATED, DateRange, RangeError, audience_numbers, breakdown, date_range, funnel, overview,
)
from server.client_ip import client_ip
from server.models import utcnow
from server.shops import ShopConfigError

ADMIN_DIR = Path(__file__).parent
MAX_FORM_BYTES = 8192
SIGN_IN_FAILED = "That email and password do not match an account."
# Pages of a shop: path under /admin/<shop>/, nav label.
PAGES = (("", "Overview"), ("campaigns", "Campaigns and panels"), ("experiments", "Experiments"),
         ("audiences", "Audiences"), ("search", "Search"), ("coupons", "Coupons"), ("models", "Models"))
HEADERS = {
    "Cache-Control": "no-store",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
                               "frame-ancestors 'none'; base-uri 'none'",
}


class AdminGate:
    """The dashboard's sessions and its limit on failed sign-ins (counted in the store, the
    same for every process)."""

    def __init__(self, keys: list[str], session_hours: float, store: Any) -> None:
        self.sessions = Sessions(keys, int(session_hours * 3600))
        self.failures = FailedSignIns(store, keys[-1])


def _money(value: float | None) -> str:
    return "" if value is None else f"{value:,.2f}"


def _pct(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{value:.{digits}%}"


_env = jinja2.Environment(
    loader=jinja2.FileSystemLoader(str(ADMIN_DIR / "templates")), autoescape=True, trim_blocks=True, lstrip_blocks=True,
)
_env.filters.update(num=lambda v: f"{v:,.0f}", money=_money, pct=_pct,
                    signed_pct=lambda v: "–" if v is None else f"{v:+.1%}",
                    when=lambda v: (v or "")[:16].replace("T", " "))


def admin_routes() -> list[BaseRoute]:
    pages: list[BaseRoute] = []
    for path, _ in PAGES:
        handler = _shop_page(VIEWS[path])
        pages.append(Route(f"/{{shop}}/{path}", handler, methods=["GET", "POST"] if path == "models" else ["GET"]))
        pages.append(Route(f"/{{shop}}/{path or 'overview'}.json", handler))
    return [
        Route("/", shops_page),
        Route("/login", login, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Mount("/static", StaticFiles(directory=str(ADMIN_DIR / "static")), name="admin-static"),
        *pages,
    ]


# -- sessions --------------------------------------------------------------------------
class SignedIn:
    def __init__(self, session: Session, shops: list[str]) -> None:
        self.email, self.csrf, self.shops = session.email, session.csrf, shops


def _gate(request: Request) -> AdminGate:
    return request.app.state.services.admin


async def _signed_in(request: Request) -> SignedIn | None:
    """The user of a valid session whose account still exists with the same password."""
    session = _gate(request).sessions.read(request.cookies.get(SESSION_COOKIE))
    if session is None:
        return None
    from server.admin.auth import password_digest

    user = await run_in_threadpool(request.app.state.services.store.admin_user, session.email)
    if user is None or not same(password_digest(user["password_hash"]), session.password):
        return None
    return SignedIn(session, user["shops"])


def _is_json(request: Request) -> bool:
    return request.url.path.endswith(".json")


def _not_signed_in(request: Request) -> Response:
    if _is_json(request):
        return JSONResponse({"error": "sign in first: /admin/login"}, status_code=401, headers=HEADERS)
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/admin/login?next={quote(target, safe='')}", status_code=303, headers=HEADERS)


def _render(template: str, status: int = 200, **context: Any) -> HTMLResponse:
    return HTMLResponse(_env.get_template(template).render(**context), status_code=status, headers=HEADERS)


def _is_https(request: Request) -> bool:
    return request.app.state.services.contexts.is_https(request)


def _address(request: Request) -> str:
    contexts = request.app.state.services.contexts
    peer = request.client.host if request.client else None
    return client_ip(peer, request.headers.get("x-forwarded-for"), contexts.trusted) or ""


async def _form(request: Request) -> dict[str, str] | None:
    """The url-encoded form, each field once; None when it is not one or is too big."""
    if request.headers.get("content-type", "").split(";")[0].strip() != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        fields = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except (UnicodeDecodeError, ValueError):
        return None
    return {k: v[0] for k, v in fields.items() if len(v) == 1}


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path of the dashboard only, never another site."""
    if target and target.startswith("/admin/") and not target.startswith("//") and "\\" not in target:
        return target
    return "/admin/"


# -- sign-in ---------------------------------------------------------------------------
async def login(request: Request) -> Response:
    gate = _gate(request)
    if request.method == "GET":
        return _login_form(request, gate, request.query_params.get("next"))
    form = await _form(request)
    if form is None:
        return _render("error.html", status=400, title="Bad request", message="The sign-in form was not sent as a form.")
    if not gate.sessions.login_token_matches(request.cookies.get(LOGIN_CSRF_COOKIE), form.get("csrf", "")):
        return _render("error.html", status=403, title="Form expired",
                       message="The sign-in form was missing its token or had expired. Open the sign-in page again.")
    try:
        email = normal_email(form.get("email", ""))
    except ValueError:
        email = form.get("email", "").strip().lower()[:254]
    address = _address(request)
    if await run_in_threadpool(gate.failures.blocked, email, address):
        return _login_form(request, gate, form.get("next"), status=429, email=email,
                           error="Too many failed sign-ins. Wait 15 minutes and try again.")
    password = form.get("password", "")
    user = await run_in_threadpool(request.app.state.services.store.admin_user, email)
    ok = await run_in_threadpool(password_matches, user["password_hash"] if user else None, password)
    if not ok or not user:
        await run_in_threadpool(gate.failures.failed, email, address)
        return _login_form(request, gate, form.get("next"), status=401, email=email, error=SIGN_IN_FAILED)
    await run_in_threadpool(gate.failures.succeeded, email)
    cookie, _ = gate.sessions.start(user["email"], user["password_hash"])
    response = RedirectResponse(_safe_next(form.get("next")), status_code=303, headers=HEADERS)
    response.set_cookie(SESSION_COOKIE, cookie, max_age=gate.sessions.max_age_s, path="/admin", httponly=True,
                        samesite="strict", secure=_is_https(request))
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/admin/login")
    return response


def _login_form(request: Request, gate: AdminGate, next_path: str | None, status: int = 200, email: str = "",
                error: str = "") -> Response:
    cookie, token = gate.sessions.login_token()
    response = _render("login.html", status=status, csrf=token, next=_safe_next(next_path), email=email, error=error)
    response.set_cookie(LOGIN_CSRF_COOKIE, cookie, max_age=3600, path="/admin/login", httponly=True,
                        samesite="strict", secure=_is_https(request))
    return response


async def logout(request: Request) -> Response:
    user = await _signed_in(request)
    if user is None:
        return RedirectResponse("/admin/login", status_code=303, headers=HEADERS)
    form = await _form(request)
    if form is None or not same(form.get("csrf", ""), user.csrf):
        return _render("error.html", status=403, title="Form expired", message="The form's token was missing or wrong.")
    response = RedirectResponse("/admin/login", status_code=303, headers=HEADERS)
    response.delete_cookie(SESSION_COOKIE, path="/admin")
    return response


async def shops_page(request: Request) -> Response:
    user = await _signed_in(request)
    if user is None:
        return _not_signed_in(request)
    if len(user.shops) == 1:
        return RedirectResponse(f"/admin/{quote(user.shops[0])}/", status_code=303, headers=HEADERS)
    return _render("shops.html", user=user, shop=None, pages=PAGES, page=None)


# -- a shop's pages --------------------------------------------------------------------
View = Callable[[Request, Any, SignedIn], Awaitable["Response | dict[str, Any]"]]


def _shop_page(view: View) -> Callable[[Request], Awaitable[Response]]:
    async def page(request: Request) -> Response:
        user = await _signed_in(request)
        if user is None:
            return _not_signed_in(request)
        shop_id = request.path_params["shop"]
        # Another shop's pages and a shop that does not exist look the same: not found.
        try:
            config = request.app.state.services.shops.get(shop_id) if shop_id in user.shops else None
        except ShopConfigError:
            message = f"The config file of shop {shop_id!r} is broken: `vitrine shops check {shop_id}` says why."
            if _is_json(request):
                return JSONResponse({"error": message}, status_code=503, headers=HEADERS)
            return _render("error.html", status=503, title="Shop config broken", user=user, message=message)
        if config is None:
            if _is_json(request):
                return JSONResponse({"error": f"no shop {shop_id!r} here"}, status_code=404, headers=HEADERS)
            return _render("error.html", status=404, title="Not found", user=user,
                           message="There is no such shop among yours.")
        if request.method == "POST":
            return await view(request, config, user)
        try:
            data = await view(request, config, user)
        except RangeError as exc:
            if _is_json(request):
                return JSONResponse({"error": str(exc)}, status_code=400, headers=HEADERS)
            return _render("error.html", status=400, title="Bad date range", user=user, message=str(exc))
        if isinstance(data, Response):
            return data
        if _is_json(request):
            return Response(json.dumps(data, default=str), media_type="application/json", headers=HEADERS)
        return _render(data.pop("template"), user=user, shop=config, pages=PAGES, page=data.pop("page"), **data)

    return page


def _span(request: Request) -> DateRange:
    return date_range(request.query_params, utcnow().date())


async def overview_page(request: Request, config: Any, user: SignedIn) -> dict[str, Any]:
    from server.measure.report import build_report

    store = request.app.state.services.store
    span = _span(request)
    numbers = await run_in_threadpool(overview, store, config.id, span)
    report = await run_in_threadpool(build_report, store, config, "holdout")
    holdout = report["holdout"]
    if _is_json(request):
        return {**numbers, "holdout": holdout}
    days = [d["day"] for d in numbers["days"]]

    def series(name: str) -> list[float]:
        return [d[name] or 0 for d in numbers["days"]]

    chart_list = [
        ("Visitors", charts.daily_bars("Visitors", days, series("visitors"))),
        ("Orders", charts.daily_bars("Orders", days, series("orders"))),
        ("Revenue", charts.daily_bars("Revenue", days, series("revenue"), _money)),
        ("Credited revenue", charts.daily_bars("Credited revenue", days, series("credited_revenue"), _money)),
        ("Clicks", charts.daily_bars("Clicks", days, series("clicks"))),
        ("Click-through", charts.daily_bars("Click-through", days, [v * 100 for v in series("click_through")],
                                            lambda v: f"{v:.1f}%")),
    ]
    return {"template": "overview.html", "page": "", "span": span, "presets": PRESETS, **numbers,
            "holdout": holdout, "currency": config.currency, "charts": chart_list}


async def campaigns_page(request: Request, config: Any, user: SignedIn) -> dict[str, Any]:
    span = _span(request)
    store = request.app.state.services.store
    found = await run_in_threadpool(breakdown, store, config.id, span)
    steps = await run_in_threadpool(funnel, store, config.id, span)
    if _is_json(request):
        return {"from": span.first.isoformat(), "to": span.last.isoformat(), "funnel": steps, **found}
    return {"template": "campaigns.html", "page": "campaigns", "span": span, "presets": PRESETS,
            "dimensions": DIMENSIONS, "found": found, "funnel": steps, "currency": config.currency}


ENGINES = ("bayesian", "frequentist", "sequential")
METRICS = ("conversion_rate", "revenue_per_visitor")


async def experiments_page(request: Request, config: Any, user: SignedIn) -> dict[str, Any]:
    from server.measure.report import build_report

    engine = request.query_params.get("engine", "bayesian")
    metric = request.query_params.get("metric", "conversion_rate")
    if engine not in ENGINES or metric not in METRICS:
        raise RangeError(f"engine is one of {', '.join(ENGINES)}; metric one of {', '.join(METRICS)}")
    report = await run_in_threadpool(build_report, request.app.state.services.store, config, None, engine, metric)
    if _is_json(request):
        return report
    bounds = [abs(b) for exp in report["experiments"] + ([report["holdout"]] if report["holdout"] else [])
              for v in exp.get("variants", [exp]) if v.get("uplift") for b in (v["uplift"]["ci_low"], v["uplift"]["ci_high"])]
    scale = max(bounds, default=1.0)
    return {"template": "experiments.html", "page": "experiments", "report": report, "scale": scale,
            "interval": charts.interval_bar, "engines": ENGINES, "metrics": METRICS, "engine": engine, "metric": metric,
            "currency": config.currency}


async def audiences_page(request: Request, config: Any, user: SignedIn) -> dict[str, Any]:
    services = request.app.state.services
    now = utcnow()
    span = _span(request)
    sizes = await run_in_threadpool(services.store.audience_sizes, config.id, config.audience_book, now,
                                    services.settings.visit_timeout_minutes * 60)
    history = await run_in_threadpool(services.store.audience_history, config.id, now.date() - timedelta(days=89))
    counted = await run_in_threadpool(audience_numbers, services.store, config.id, span)
    over_time: dict[str, dict[str, int]] = {}
    for row in history:
        over_time.setdefault(row["audience"], {})[row["day"].isoformat()] = row["visitors"]
    data = {"at": now.isoformat(timespec="seconds"), "visitors": sizes.visitors, "sizes": sizes.sizes,
            "not_sized": sizes.not_sized, "over_time": over_time,
            "from": span.first.isoformat(), "to": span.last.isoformat(),
            "counted": {name: counted.get(name, dict.fromkeys(("page_views", "visitors", "orders", "revenue"), 0))
                        for name in sizes.sizes if sizes.sizes[name] is not None}}
    if _is_json(request):
        return data
    days = sorted({day for counts in over_time.values() for day in counts})
    trends = [(name, charts.daily_bars(f"Visitors in {name}", days, [over_time[name].get(d, 0) for d in days]))
              for name in sizes.sizes if name in over_time] if len(days) > 1 else []
    return {"template": "audiences.html", "page": "audiences", **data, "trends": trends, "days": days, "span": span,
            "presets": PRESETS, "currency": config.currency}


async def search_page(request: Request, config: Any, user: SignedIn) -> dict[str, Any]:
    store = request.app.state.services.store
    span = _span(request)
    counted = await run_in_threadpool(store.search_stats, config.id, span.first, span.last, 20)
    # The worker's popular-searches job keeps the top terms of the last days (server/search.py).
    terms = await run_in_threadpool(store.saved_popular_searches, config.id, 50, utcnow() - timedelta(days=2))
    # Simulated searches (the demo's first start) are counted with the real ones: the page says
    # so while the range holds simulated traffic, as the overview does.
    sums = await run_in_threadpool(store.rollup_sums, config.id, "day", span.since, span.until, ["total"])
    simulated = sum(r["page_views"] or 0 for r in sums if r["key"] == SIMULATED)
    data = {"from": span.first.isoformat(), "to": span.last.isoformat(), **search_numbers(counted),
            "top_queries": [{"query": t, "visitors": v} for t, v in terms], "simulated_page_views": simulated}
    if _is_json(request):
        return data
    return {"template": "search.html", "page": "search", "span": span, "presets": PRESETS, **data}


def search_numbers(counted: dict[str, Any]) -> dict[str, Any]:
    """The range's searches as the page shows them: the share of all searches that found
    nothing, each zero-result query's share of all searches, and each query's result rate
    (the share of its searches that found something)."""
    total = counted["searches"]

    def share(n: int, of: int) -> float | None:
        return n / of if of else None

    return {
        "searches": total, "zero_results": counted["zero_results"],
        "zero_result_share": share(counted["zero_results"], total),
        "zero_result_queries": [{"query": r["term"], "zero_results": r["zero_results"], "searches": r["searches"],
                                 "share_of_searches": share(r["zero_results"], total)}
                                for r in counted["zero_result_terms"]],
        "most_searched": [{"query": r["term"], "searches": r["searches"], "zero_results": r["zero_results"],
                           "result_rate": share(r["searches"] - r["zero_results"], r["searches"])}
                          for r in counted["top_terms"]],
    }


async def coupons_page(request: Request, config: Any, user: SignedIn) -> dict[str, Any]:
    store = request.app.state.services.store
    # Per pool: codes, issued, redeemed, rate, revenue, failures by reason (docs/promotions.md).
    data = {"pools": await run_in_threadpool(store.coupon_stats, config.id)}
    if _is_json(request):
        return data
    return {"template": "coupons.html", "page": "coupons", **data}


async def models_page(request: Request, config: Any, user: SignedIn) -> "Response | dict[str, Any]":
    from server.recommend.artifact import ArtifactError

    registry = request.app.state.services.recommender.models
    message = ""
    if request.method == "POST":
        form = await _form(request)
        if form is None or not same(form.get("csrf", ""), user.csrf):
            return _render("error.html", status=403, title="Form expired", user=user,
                           message="The form's token was missing or wrong. Open the page again.")
        action = form.get("action", "")
        try:
            if action == "pin":
                await run_in_threadpool(registry.pin, config.id, form.get("version", ""))
                message = f"Pinned version {form.get('version', '')}: servers switch to it within seconds."
            elif action == "unpin":
                await run_in_threadpool(registry.unpin, config.id)
                message = "Unpinned: the newest trained version serves."
            elif action == "rollback":
                version = await run_in_threadpool(registry.rollback, config.id)
                message = f"Rolled back to version {version} (pinned)."
            else:
                return _render("error.html", status=400, title="Bad request", user=user, message="Unknown action.")
        except ArtifactError as exc:
            message = f"Not done: {exc}"
        return RedirectResponse(f"/admin/{quote(config.id)}/models?done={quote(message)}", status_code=303,
                                headers=HEADERS)
    data = await run_in_threadpool(_models, registry, config.id)
    if _is_json(request):
        return data
    return {"template": "models.html", "page": "models", **data, "done": request.query_params.get("done", "")[:300]}


def _models(registry: Any, shop: str) -> dict[str, Any]:
    from server.recommend.artifact import META_FILE, ArtifactError

    try:
        names = registry.versions(shop)
        current, pinned, active = registry.current_version(shop), registry.pinned_version(shop), registry.active_version(shop)
    except ArtifactError as exc:
        return {"versions": [], "problem": str(exc), "current": None, "pinned": None, "serving": None}
    versions = []
    for name in reversed(names):  # newest first
        entry: dict[str, Any] = {"version": name, "current": name == current, "pinned": name == pinned,
                                 "serving": name == active}
        try:
            meta = json.loads((registry.models_dir / shop / name / META_FILE).read_text())
            validation = (meta.get("tuning") or {}).get("validation") or {}
            entry.update(created_at=str(meta.get("created_at", "")), counts=meta.get("counts", {}),
                         recall=validation.get("model", {}).get("recall_at_k"),
                         popular_recall=validation.get("popularity", {}).get("recall_at_k"))
        except (OSError, ValueError, AttributeError):
            entry.update(created_at="", counts={}, recall=None, popular_recall=None, problem="meta.json unreadable")
        versions.append(entry)
    return {"versions": versions, "problem": None, "current": current, "pinned": pinned, "serving": active}


VIEWS: dict[str, View] = {"": overview_page, "campaigns": campaigns_page, "experiments": experiments_page,
                          "audiences": audiences_page, "search": search_page, "coupons": coupons_page,
                          "models": models_page}
