"""The `vitrine` command: demo, serve, worker, import, shops, audiences, coupons, train, evaluate, models, privacy,
get, migrate, settings."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import signal
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from server.settings import Settings, SettingsError, setting_fields

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_SHOP = "demo"
DEMO_CONSENT_SHOP = "demo-consent"


def fail(message: str) -> NoReturn:
    """A problem the user can fix: one line on stderr, exit code 2."""
    click.echo(f"Error: {message}", err=True)
    sys.exit(2)


def _settings(ctx: click.Context, **overrides: Any) -> Settings:
    try:
        return Settings.load(ctx.obj.get("config"), **{**ctx.obj.get("overrides", {}), **overrides})
    except SettingsError as exc:
        fail(str(exc))


@click.group()
@click.option("--config", type=click.Path(dir_okay=False), help="TOML settings file (or VITRINE_CONFIG).")
@click.option("--data-dir", type=click.Path(file_okay=False), help="Where state lives (or VITRINE_DATA_DIR).")
@click.version_option(package_name="vitrine")
@click.pass_context
def main(ctx: click.Context, config: str | None, data_dir: str | None) -> None:
    """Vitrine: personalization server for online shops."""
    ctx.ensure_object(dict)
    ctx.obj["config"] = config
    ctx.obj["overrides"] = {"data_dir": data_dir} if data_dir else {}


# -- running ---------------------------------------------------------------------------
@main.command()
@click.option("--host", help="Address to listen on (default 127.0.0.1).")
@click.option("--port", type=int, help="Port to listen on (default 8000).")
@click.option("--train/--no-train", default=True, show_default=True,
              help="Train the recommendation model before serving when the demo shop has none yet "
              "(else the background jobs train it once enough interactions are in).")
@click.option("--simulate/--no-simulate", default=True, show_default=True,
              help="On the first start, fill the dashboard with a simulated month of traffic (visitor ids sim-...).")
@click.pass_context
def demo(ctx: click.Context, host: str | None, port: int | None, train: bool, simulate: bool) -> None:
    """Set up the demo shop (once) and serve it on http://HOST:PORT/demo/, with the background jobs."""
    settings = _settings(ctx, host=host, port=port)
    services = _services(settings)
    _install_demo_shop(settings)
    if services.store.count_items(DEMO_SHOP) == 0:
        _import_catalog(services, DEMO_SHOP, DEMO_DIR / "data" / "catalog.csv", None)
        _import_interactions(services, DEMO_SHOP, DEMO_DIR / "data" / "interactions.csv", shift=True)
        if simulate:
            from server.demo.simulate import World

            _simulate(services, DEMO_SHOP, World())
        else:  # the imported history counted now, before any visitor's events wait on it
            from server.measure.rollups import run_rollups

            click.echo(f"Rollups: {run_rollups(services, lag_s=0, budget_s=600)}")
    else:
        click.echo(f"Demo shop already imported in {settings.resolved_data_dir} (reusing it).")
    _import_demo_customers(services)
    _import_prices(services, DEMO_SHOP, DEMO_DIR / "data" / "prices.csv", unless_same=True)
    _fill_demo_coupons(services)
    if not services.search.in_step(DEMO_SHOP):
        count = services.search.rebuild(DEMO_SHOP)
        click.echo(f"Built the demo shop's search index ({count} items).")
    if train and services.recommender.models.get(DEMO_SHOP) is None:
        from server.recommend.train import train_shop

        click.echo("Training the demo shop's recommendation model (once)...")
        report = train_shop(services.store, settings, DEMO_SHOP, log=click.echo)
        if report.artifact is not None:
            click.echo(f"Model {report.artifact.version} trained in {report.seconds:.0f} s.")
    click.echo(f"Demo shop: http://{settings.host}:{settings.port}/demo/")
    click.echo(f"Consent demo (consent = \"required\"): http://{settings.host}:{settings.port}/demo/consent")
    from server.worker import Worker

    jobs = Worker(services, log=click.echo)  # `vitrine worker`'s jobs, in this process
    # uvicorn stops on SIGTERM, then raises it again to the handler it found: the default one
    # would end the process before `finally`, keeping the jobs' lease until it runs out (the next
    # demo started would wait for it). This one lets `finally` give the lease up.
    previous = signal.signal(signal.SIGTERM, _exit_on_sigterm)
    jobs.start()
    try:
        _run_server(settings, services)
    finally:
        jobs.stop()
        signal.signal(signal.SIGTERM, previous)
        if jobs.running:
            # Stopping must not wait for a training to end: every job is idempotent, and one
            # cut short runs again when the demo is next started (server/worker.py).
            click.echo(f"Stopped with {', '.join(sorted(jobs.running))} cut short: it runs again next time.")
            sys.stdout.flush()
            sys.stderr.flush()
            stopping = sys.exc_info()[1]
            os._exit(stopping.code if isinstance(stopping, SystemExit) and isinstance(stopping.code, int)
                     else 130 if isinstance(stopping, KeyboardInterrupt) else 0)


def _exit_on_sigterm(signum: int, frame: Any) -> NoReturn:
    raise SystemExit(128 + signum)


@main.command()
@click.option("--host", help="Address to listen on.")
@click.option("--port", type=int, help="Port to listen on.")
@click.option("--workers", type=int, help="Number of worker processes.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the API (and the demo pages) with uvicorn."""
    settings = _settings(ctx, host=host, port=port, workers=workers)
    _run_server(settings, _services(settings))


@main.command()
@click.option("--once", is_flag=True, help="Run every job once and exit (for cron and tests).")
@click.pass_context
def worker(ctx: click.Context, once: bool) -> None:
    """Run the background jobs (popular searches, retraining, the purge of old events); one per deployment."""
    from server.worker import Worker

    settings = _settings(ctx)
    services = _services(settings)
    try:
        jobs = Worker(services, log=click.echo)
        if not once:
            jobs.run_forever()
        elif not jobs.run_once():
            click.echo("Another `vitrine worker` holds the lease and runs the jobs: nothing was run.")
    finally:
        services.close()


def _run_server(settings: Settings, services: Any) -> None:
    import uvicorn

    from server.app import create_app

    # Vitrine reads X-Forwarded-* itself, only from trusted proxies (settings.trusted_proxies).
    # uvicorn's access log writes the client address and the whole query string (every
    # keystroke of a search box): it is off, and Vitrine's own access log (server/app.py)
    # writes method, path, status and duration only.
    common = dict(
        host=settings.host, port=settings.port, proxy_headers=False, server_header=False, log_level="info",
        access_log=False, log_config=_log_config(),
    )
    if settings.workers > 1:
        services.close()
        os.environ.update(_settings_env(settings))
        uvicorn.run("server.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_app(settings, services), **common)


def _log_config() -> dict[str, Any]:
    """uvicorn's logging, plus Vitrine's own loggers (the access log among them) at INFO."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    config["loggers"]["vitrine"] = {"handlers": ["default"], "level": "INFO", "propagate": False}
    return config


def _settings_env(settings: Settings) -> dict[str, str]:
    """The resolved settings as VITRINE_* variables, for worker processes."""
    env = {}
    for f in setting_fields():
        value = getattr(settings, f.name)
        if value is None or value == ():
            continue
        text = ",".join(value) if isinstance(value, tuple) else str(value)
        env[f"VITRINE_{f.name.upper()}"] = text
    env["VITRINE_DATA_DIR"] = str(settings.resolved_data_dir)
    env["VITRINE_SECRET_KEYS"] = ",".join(settings.signing_keys())
    return env


def _services(settings: Settings) -> Any:
    from server.app import build_services

    try:
        return build_services(settings)
    except (FileNotFoundError, ValueError) as exc:
        fail(str(exc))


def _import_demo_customers(services: Any) -> None:
    """The demo's customers (names and consents made up, server/demo/data/NOTICE.md), for its
    log-in page; imported again at each start, which changes nothing once they are in."""
    from server.imports import read_customers, read_orders

    new, _, _ = services.store.import_customers(DEMO_SHOP, read_customers(DEMO_DIR / "data" / "customers.csv"))
    if new:
        click.echo(f"Imported the demo shop's {new} customers (log in as one at /demo/account).")
    # The trade customer's orders (docs/b2b.md): an order imported before is not counted again.
    if services.store.import_orders(DEMO_SHOP, read_orders(DEMO_DIR / "data" / "orders.csv"))[0]:
        click.echo("Imported the demo trade customer's orders (log in as Bea at /demo/account).")


def _fill_demo_coupons(services: Any) -> None:
    from server.demo import fill_coupon_pools

    for pool, added in fill_coupon_pools(services.store, DEMO_SHOP).items():
        click.echo(f"Added {added} codes to the demo's coupon pool {pool!r} (docs/promotions.md).")


def _install_demo_shop(settings: Settings) -> None:
    """The demo shop's config and, beside it, the consent demo's (/demo/consent): a shop
    with campaigns only, whose rule is consent = "required"."""
    for name, what in ((DEMO_SHOP, "demo shop"), (DEMO_CONSENT_SHOP, "consent demo shop")):
        target = settings.resolved_shops_dir / f"{name}.toml"
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(DEMO_DIR / f"{name}.toml", target)
            click.echo(f"Wrote the {what}'s config to {target}")


# -- data ------------------------------------------------------------------------------
@main.group("import")
def import_() -> None:
    """Import a catalog, past interactions, customers, orders or price lists into a shop."""


@import_.command("catalog")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shop", required=True, help="Shop id.")
@click.option("--format", "fmt", type=click.Choice(["csv", "gmc-tsv", "gmc-xml"]), help="Default: from the file.")
@click.pass_context
def import_catalog(ctx: click.Context, file: Path, shop: str, fmt: str | None) -> None:
    """Import catalog items (CSV, or a Google Merchant Center feed as TSV or XML)."""
    services = _services(_settings(ctx))
    _require_shop(services, shop)
    _import_catalog(services, shop, file, fmt)


@import_.command("interactions")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def import_interactions(ctx: click.Context, file: Path, shop: str) -> None:
    """Import past interactions: CSV user_id,item_id,event,timestamp[,value,country]."""
    services = _services(_settings(ctx))
    _require_shop(services, shop)
    _import_interactions(services, shop, file)


@import_.command("customers")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def import_customers(ctx: click.Context, file: Path, shop: str) -> None:
    """Import customers: CSV id[,email|email_sha256,first_name,signed_up_at,birthday,group,marketing_consent]."""
    from server.imports import ImportFailed, read_customers

    services = _services(_settings(ctx))
    _require_shop(services, shop)
    started = time.perf_counter()
    try:
        found = read_customers(file)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    new, updated, forgotten = services.store.import_customers(shop, found)
    click.echo(f"Imported {new} new customers into shop {shop!r} ({updated} updated) in {time.perf_counter() - started:.1f} s.")
    if forgotten:
        click.echo(f"Left out {forgotten} customers deleted at their request (vitrine privacy delete --customer).")


@import_.command("orders")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def import_orders(ctx: click.Context, file: Path, shop: str) -> None:
    """Import orders: CSV order_id,customer_id,timestamp[,value,currency,lines] (lines: ITEM:QTY|ITEM)."""
    from server.imports import ImportFailed, read_orders

    services = _services(_settings(ctx))
    _require_shop(services, shop)
    started = time.perf_counter()
    try:
        found = read_orders(file)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    added, forgotten = services.store.import_orders(shop, found)
    click.echo(
        f"Imported {added} new orders into shop {shop!r} ({len(found) - added - forgotten} already there) "
        f"in {time.perf_counter() - started:.1f} s."
    )
    if forgotten:
        click.echo(f"Left out {forgotten} orders of customers deleted at their request (vitrine privacy delete --customer).")


@import_.command("prices")
@click.argument("file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def import_prices(ctx: click.Context, file: Path, shop: str) -> None:
    """Import the price list per customer group: CSV group,item_id[,min_quantity,price,allowed] (docs/b2b.md)."""
    services = _services(_settings(ctx))
    _require_shop(services, shop)
    _import_prices(services, shop, file)


def _import_prices(services: Any, shop: str, file: Path, unless_same: bool = False) -> None:
    """`unless_same`: leave the stored list (and its version) as it is when the file holds the same."""
    from server.imports import ImportFailed, read_price_list

    try:
        found = read_price_list(file)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    if unless_same:
        tiers, restricted = services.store.price_list(shop)
        if (sorted(tiers), sorted(restricted)) == (sorted(found.tiers), sorted(found.restricted)):
            return
    services.store.import_price_list(shop, found.tiers, found.restricted)
    services.catalog.refresh(shop)
    groups = len({t[0] for t in found.tiers} | {r[0] for r in found.restricted})
    click.echo(f"Imported the price list of shop {shop!r}: {len(found.tiers)} price tiers and "
               f"{len(found.restricted)} items not allowed, for {groups} customer groups (it replaces the one before).")


def _require_shop(services: Any, shop: str) -> None:
    from server.shops import ShopConfigError

    try:
        if services.shops.get(shop) is None:
            fail(f"unknown shop {shop!r}: create it first with `vitrine shops create {shop} --origin URL`")
    except ShopConfigError as exc:
        fail(str(exc))


def _import_catalog(services: Any, shop: str, file: Path, fmt: str | None) -> None:
    from server.imports import ImportFailed, read_catalog
    from server.search_index import SearchIndexLocked

    started = time.perf_counter()
    try:
        items = read_catalog(file, fmt)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    count = services.store.upsert_items(shop, items)
    try:
        services.search.sync(shop, items)
    except SearchIndexLocked as exc:
        fail(f"{count} catalog items are in the store, but the search index was not updated: {exc}")
    click.echo(f"Imported {count} catalog items into shop {shop!r} in {time.perf_counter() - started:.1f} s.")


def _import_interactions(services: Any, shop: str, file: Path, shift: bool = False) -> None:
    from server.imports import ImportFailed, read_interactions

    started = time.perf_counter()
    try:
        rows = read_interactions(file)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    if shift:  # the demo's: its history ends yesterday (server/demo/__init__.py)
        from server.demo import shifted_history
        from server.models import utcnow

        rows, days = shifted_history(rows, utcnow().date())
        if rows:
            click.echo(f"The demo's history moved {days} days forward: it ends on "
                       f"{max(r.timestamp for r in rows).date().isoformat()}, the day before today.")
    added = services.store.import_interactions(shop, rows)
    click.echo(
        f"Imported {added} new interactions into shop {shop!r} ({len(rows) - added} already there) "
        f"in {time.perf_counter() - started:.1f} s."
    )


@main.group()
def shops() -> None:
    """List, create and check shops; print a shop's QA key."""


@shops.command("list")
@click.pass_context
def shops_list(ctx: click.Context) -> None:
    """List the shops configured in the shops directory."""
    from server.shops import ShopRegistry

    settings = _settings(ctx)
    for shop in ShopRegistry(settings.resolved_shops_dir).ids():
        click.echo(shop)


@shops.command("create")
@click.argument("shop")
@click.option("--origin", "origins", multiple=True, help="An origin allowed to call the API (repeatable).")
@click.option("--currency", default="USD", show_default=True)
@click.pass_context
def shops_create(ctx: click.Context, shop: str, origins: tuple[str, ...], currency: str) -> None:
    """Create a shop config file with the given origins and no campaigns."""
    from server.shops import SHOP_ID, ShopRegistry

    if not SHOP_ID.match(shop):
        fail(f"bad shop id {shop!r}: use lowercase letters, digits, - and _ (at most 63)")
    settings = _settings(ctx)
    path = ShopRegistry(settings.resolved_shops_dir).path(shop)
    if path.exists():
        fail(f"shop {shop!r} already exists: {path}")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        f"# Shop config: see docs/campaigns.md (and the demo shop's config) for every option.\n"
        f"# `vitrine shops check {shop}` checks this file as the server reads it.\n"
        f"#\n"
        f"# QA powers on fragment URLs (visitor=, country=, device=, source=, _context=1, _debug=1)\n"
        f"# need the shop's QA key: `vitrine shops qa-key {shop}` prints it. A [qa] table can set\n"
        f"# your own key (key = \"...\"); open = true lets anyone use them (never on a live shop).\n"
        f"name = {json.dumps(shop)}\norigins = {json.dumps(list(origins))}\ncurrency = {json.dumps(currency)}\n"
    )
    click.echo(f"Created {path}")
    services = _services(settings)
    try:
        click.echo(f"Secret key: {services.shop_keys.key(shop)}")
    finally:
        services.close()
    click.echo(_KEY_HELP.format(shop=shop))


_KEY_HELP = (
    "Keep it on the shop's backend, never in a page: it signs the customer ids of vitrine('identify') "
    "(docs/embedding.md#identify) and authenticates the backend's calls to the server-to-server API "
    "(docs/promotions.md). `vitrine shops key {shop}` shows it again, `--rotate` replaces it."
)


def _shop_file(ctx: click.Context, shop: str) -> Path:
    """The config file of an existing shop, or exit 2."""
    from server.shops import SHOP_ID, ShopRegistry

    if not SHOP_ID.match(shop):
        fail(f"bad shop id {shop!r}: use lowercase letters, digits, - and _ (at most 63)")
    path = ShopRegistry(_settings(ctx).resolved_shops_dir).path(shop)
    if not path.is_file():
        fail(f"unknown shop {shop!r}: no config file {path} (create it with `vitrine shops create {shop} --origin URL`)")
    return path


def _parsed_or_exit(shop: str, path: Path) -> Any:
    """The shop's config parsed as the server parses it; its problems, one a line, and exit 2."""
    from server.shops import ShopConfigError, parse_shop_config

    try:
        return parse_shop_config(shop, path)
    except ShopConfigError as exc:
        for problem in exc.problems:
            click.echo(problem)
        sys.exit(2)


@shops.command("check")
@click.argument("shop")
@click.pass_context
def shops_check(ctx: click.Context, shop: str) -> None:
    """Check the shop's config as the server reads it: OK, or every problem as FILE:LINE: field: message."""
    path = _shop_file(ctx, shop)
    config = _parsed_or_exit(shop, path)
    count = len(config.campaigns)
    click.echo(f"OK {path}: {count} campaign{'' if count == 1 else 's'}")


@shops.command("qa-key")
@click.argument("shop")
@click.pass_context
def shops_qa_key(ctx: click.Context, shop: str) -> None:
    """Print the shop's QA key, for rendering fragment URLs as any visitor with their reasons."""
    from server.qa import QA_HEADER, QA_PARAM, qa_key

    config = _parsed_or_exit(shop, _shop_file(ctx, shop))
    click.echo(qa_key(_settings(ctx).signing_keys(), config))
    how = (
        f"Send it as the {QA_HEADER} header or the {QA_PARAM}= parameter of fragment URLs to use visitor=, "
        "country=, device=, source=, _context=1 and _debug=1."
    )
    if config.qa.open:
        how += " This shop is open for QA ([qa] open = true): no key is needed."
    click.echo(how)


# -- audiences -------------------------------------------------------------------------
@main.group(invoke_without_command=True)
@click.option("--shop", help="Shop id.")
@click.option("--json", "as_json", is_flag=True, help='Print {"<audience>": <visitors>, ...} (null: not sized).')
@click.pass_context
def audiences(ctx: click.Context, shop: str | None, as_json: bool) -> None:
    """Print how many visitors each of the shop's audiences holds now, counted by the store;
    `export` prints the known customers in one of them."""
    from server.models import utcnow

    if ctx.invoked_subcommand is not None:
        return
    if not shop:
        fail("name the shop: vitrine audiences --shop S [--json]")
    config = _parsed_or_exit(shop, _shop_file(ctx, shop))
    settings = _settings(ctx)
    services = _services(settings)
    try:
        now = utcnow()
        sizes = services.store.audience_sizes(shop, config.audience_book, now, settings.visit_timeout_minutes * 60)
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps(sizes.sizes))
        for audience, why in sizes.not_sized.items():
            click.echo(f"{audience}: not sized: {why}", err=True)
        return
    click.echo(f"Audiences of shop {shop!r} at {now:%Y-%m-%d %H:%M} UTC, of {sizes.visitors:,} visitors "
               f"(counted in {sizes.seconds:.2f} s):")
    width = max(len(a) for a in sizes.sizes)
    for audience, size in sizes.sizes.items():
        shown = "-" if size is None else f"{size:,}"
        why = f"   not sized: {sizes.not_sized[audience]}" if size is None else ""
        click.echo(f"  {audience:<{width}}  {shown:>9}{why}")


# -- leads -----------------------------------------------------------------------------
LEAD_COLUMNS = ("ts", "campaign", "email", "opt_in", "birthday", "interests", "visitor_id")


@main.command()
@click.option("--shop", required=True, help="Shop id.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of CSV.")
@click.pass_context
def leads(ctx: click.Context, shop: str, as_json: bool) -> None:
    """Print the shop's e-mail sign-ups from popups (POST /v1/leads), oldest first, as CSV."""
    import csv
    import io

    _parsed_or_exit(shop, _shop_file(ctx, shop))
    services = _services(_settings(ctx))
    try:
        rows = services.store.shop_leads(shop)
    finally:
        services.close()
    rows = [{k: (row[k].isoformat(timespec="seconds") + "Z" if k == "ts" else row[k]) for k in LEAD_COLUMNS} for row in rows]
    if as_json:
        click.echo(json.dumps(rows, ensure_ascii=False))
        return
    text = io.StringIO()
    out = csv.DictWriter(text, LEAD_COLUMNS, lineterminator="\n")
    out.writeheader()
    out.writerows(rows)
    click.echo(text.getvalue(), nl=False)


@audiences.command("export")
@click.argument("audience")
@click.option("--shop", required=True, help="Shop id.")
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.pass_context
def audiences_export(ctx: click.Context, audience: str, shop: str, fmt: str) -> None:
    """Print the shop's known customers in AUDIENCE now (id, e-mail, reason), for an e-mail tool:
    only those imported with marketing consent, never one whose browser sent Global Privacy Control."""
    from server.customers.export import as_csv, as_json, audience_customers
    from server.models import utcnow
    from server.store.audience_sql import NotExportable

    config = _parsed_or_exit(shop, _shop_file(ctx, shop))
    book = config.audience_book
    if audience not in book.by_id:
        fail(f"unknown audience {audience!r}; the audiences of shop {shop!r} are {', '.join(book.ids())}")
    settings = _settings(ctx)
    services = _services(settings)
    try:
        rows = audience_customers(services.store, services.audiences, config, audience, utcnow(),
                                  settings.visit_timeout_minutes * 60)
    except NotExportable as exc:
        fail(str(exc))
    finally:
        services.close()
    click.echo(as_csv(rows) if fmt == "csv" else as_json(rows), nl=fmt == "json")
    click.echo(f"{len(rows)} customer{'' if len(rows) == 1 else 's'} in {audience}.", err=True)


@audiences.command("deliveries")
@click.option("--shop", required=True, help="Shop id.")
@click.option("--limit", type=click.IntRange(1, 10_000), default=50, show_default=True, help="The newest N.")
@click.option("--json", "as_json", is_flag=True, help="Print them as a JSON list.")
@click.pass_context
def audiences_deliveries(ctx: click.Context, shop: str, limit: int, as_json: bool) -> None:
    """Print the shop's newest audience webhook deliveries and how each went."""
    _parsed_or_exit(shop, _shop_file(ctx, shop))
    services = _services(_settings(ctx))
    try:
        rows = services.store.deliveries(shop, limit)
    finally:
        services.close()
    shown = [{
        "id": r["id"], "created_at": _iso(r["created_at"]), "audience": r["audience"], "change": r["change"],
        "customer_id": r["customer_id"], "url": r["url"], "status": r["status"], "attempts": r["attempts"],
        "next_attempt_at": _iso(r["next_attempt_at"]) if r["status"] == "pending" else None,
        "delivered_at": _iso(r["delivered_at"]), "last_error": r["last_error"],
    } for r in rows]
    if as_json:
        click.echo(json.dumps(shown, indent=2, ensure_ascii=False))
        return
    if not shown:
        click.echo(f"No webhook deliveries in shop {shop!r} yet.")
        return
    for d in shown:
        when = {"delivered": f"delivered {d['delivered_at']}", "pending": f"next try {d['next_attempt_at']}",
                "failed": "failed"}.get(d["status"], d["status"])
        error = f"  ({d['last_error']})" if d["last_error"] else ""
        click.echo(f"{d['id']:>6}  {d['created_at']}  {d['audience']} {d['change']:<5} {d['customer_id']}  "
                   f"{d['status']}, {d['attempts']} attempt{'' if d['attempts'] == 1 else 's'}, {when}{error}")


def _iso(moment: Any) -> str | None:
    return moment.isoformat(timespec="seconds") + "Z" if moment is not None else None


# -- measurement -----------------------------------------------------------------------
@main.command()
@click.option("--shop", required=True, help="Shop id.")
@click.option("--experiment", help="Only this experiment (\"holdout\": only the hold-out).")
@click.option("--engine", type=click.Choice(["bayesian", "frequentist", "sequential"]), default="bayesian",
              show_default=True, help="Bayesian chance to win, or a t-test (sequential: safe to look at any time).")
@click.option("--metric", type=click.Choice(["conversion_rate", "revenue_per_visitor"]), default="conversion_rate",
              show_default=True, help="What the uplift is of.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON (docs/measurement.md#the-report).")
@click.option("--roll-up/--no-roll-up", default=True, show_default=True,
              help="Read the events stored since the worker's last rollup first.")
@click.pass_context
def report(ctx: click.Context, shop: str, experiment: str | None, engine: str, metric: str, as_json: bool,
           roll_up: bool) -> None:
    """Print each experiment's variants against their control, and the hold-out's uplift."""
    from server.measure.report import build_report, format_report
    from server.measure.rollups import run_rollups

    config = _parsed_or_exit(shop, _shop_file(ctx, shop))
    if experiment not in (None, "holdout") and not any(e.id == experiment for e in config.experiments):
        known = ", ".join([e.id for e in config.experiments] + ["holdout"])
        fail(f"shop {shop!r} has no experiment {experiment!r} in its config (it has: {known})")
    services = _services(_settings(ctx))
    try:
        if roll_up:
            line = run_rollups(services)
            if not as_json:
                click.echo(f"Rollups: {line}", err=True)
        data = build_report(services.store, config, experiment, engine, metric)
    finally:
        services.close()
    click.echo(json.dumps(data, indent=2) if as_json else format_report(data), nl=not as_json)
    if as_json:
        click.echo()


@main.command("simulate")
@click.option("--shop", required=True, help="Shop id.")
@click.option("--days", type=click.IntRange(1, 400), default=30, show_default=True, help="Days of traffic, ending now.")
@click.option("--visitors-per-day", type=click.IntRange(1, 1_000_000), default=150, show_default=True)
@click.option("--seed", type=int, default=7, show_default=True, help="The same seed makes the same visitors.")
@click.pass_context
def simulate_cmd(ctx: click.Context, shop: str, days: int, visitors_per_day: int, seed: int) -> None:
    """Write simulated traffic (visitor ids sim-...) for the dashboard and benchmarks, then roll it up."""
    from server.demo.simulate import World

    _parsed_or_exit(shop, _shop_file(ctx, shop))
    services = _services(_settings(ctx))
    try:
        _require_shop(services, shop)
        _simulate(services, shop, World(visitors_per_day=visitors_per_day, days=days, seed=seed))
    finally:
        services.close()


def _simulate(services: Any, shop: str, world: Any) -> None:
    from server.demo.simulate import simulate
    from server.measure.rollups import run_rollups

    started = time.perf_counter()
    items = services.store.list_items(shop, limit=1000)
    done = simulate(services.store, services.shops.get(shop), items, world)
    click.echo(f"Simulated {world.days} days of traffic for the dashboard: {done.visitors:,} visitors, {done.events:,} "
               f"events, {done.orders:,} orders (visitor ids sim-..., labelled as simulated) in "
               f"{time.perf_counter() - started:.1f} s.")
    # At once, not after the rollups' usual wait: nothing else is writing now.
    click.echo(f"Rollups: {run_rollups(services, lag_s=0, budget_s=600)}")


# -- recommendation model --------------------------------------------------------------
@main.command()
@click.option("--shop", required=True, help="Shop id.")
@click.option(
    "--min-value", type=float,
    help="Ratings at or above this count as positives, lower ones are left out (default: every rating counts).",
)
@click.pass_context
def train(ctx: click.Context, shop: str, min_value: float | None) -> None:
    """Train the shop's recommendation model and publish it to running servers."""
    from server.recommend.artifact import ArtifactError
    from server.recommend.train import train_shop

    settings = _settings(ctx)
    services = _services(settings)
    try:
        _require_shop(services, shop)
        report = train_shop(services.store, settings, shop, min_value=min_value, log=click.echo)
    except (ArtifactError, ValueError) as exc:
        fail(str(exc))
    finally:
        services.close()
    artifact = report.artifact
    if artifact is None:
        click.echo(
            f"Shop {shop!r} has no interactions to learn from: no model written "
            "(recommendations fall back to popularity)."
        )
        return
    assert report.params is not None
    click.echo(
        f"Model {artifact.version} for shop {shop!r}: {len(artifact.item_ids)} items, "
        f"{len(artifact.user_ids)} users, {artifact.components} components."
    )
    click.echo(f"Chosen: {report.params.describe()}, {report.params.epochs} epochs.")
    validation = report.tuning.get("validation")
    if validation:
        model, popular = validation["model"]["recall_at_k"], validation["popularity"]["recall_at_k"]
        ratio = f" ({model / popular:.2f}x)" if popular else ""
        click.echo(
            f"Validation recall@{validation['k']} over {validation['users']} users: "
            f"model {model:.4f}, popularity {popular:.4f}{ratio}."
        )
    click.echo(f"Trained in {report.seconds:.1f} s; servers switch to it within seconds ({artifact.path}).")


@main.command()
@click.option("--shop", required=True, help="Shop id.")
@click.option(
    "--test", "test_file", type=click.Path(dir_okay=False, path_type=Path),
    help="Held-out interactions (CSV in the import format); then all the shop's interactions are training data. "
    "Default: the newest 20% of the shop's interactions are held out.",
)
@click.option("--min-value", type=float, help="Ratings at or above this count as positives (as for train).")
@click.option("--k", type=click.IntRange(min=1), default=10, show_default=True, help="Length of the ranked list.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (progress goes to stderr).")
@click.pass_context
def evaluate(
    ctx: click.Context, shop: str, test_file: Path | None, min_value: float | None, k: int, as_json: bool
) -> None:
    """Measure the model against popularity on held-out interactions (nothing is published)."""
    from server.imports import ImportFailed
    from server.recommend.evaluate import EvaluationError, evaluate_shop, format_report

    settings = _settings(ctx)
    services = _services(settings)
    log = (lambda line: click.echo(line, err=True)) if as_json else click.echo
    try:
        _require_shop(services, shop)
        report = evaluate_shop(
            services.store, settings, shop, test_file=test_file, min_value=min_value, k=k, log=log
        )
    except (ImportFailed, EvaluationError, ValueError) as exc:
        fail(str(exc))
    finally:
        services.close()
    click.echo(json.dumps(report.as_json()) if as_json else format_report(report))


@main.group()
def models() -> None:
    """List a shop's model versions; pin, unpin or roll back the one servers use."""


def _registry(ctx: click.Context) -> Any:
    from server.recommend.artifact import ModelRegistry, models_dir

    return ModelRegistry(models_dir(_settings(ctx)))


@models.command("list")
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def models_list(ctx: click.Context, shop: str) -> None:
    """List the versions, oldest first, with their validation recall and which one is served."""
    from server.recommend.artifact import META_FILE, ArtifactError

    registry = _registry(ctx)
    try:
        versions = registry.versions(shop)
        current, pinned, active = (registry.current_version(shop), registry.pinned_version(shop),
                                   registry.active_version(shop))
    except ArtifactError as exc:
        fail(str(exc))
    if not versions:
        click.echo(f"Shop {shop!r} has no model versions (train one with `vitrine train --shop {shop}`).")
        return
    click.echo(f"{'VERSION':<23}{'CREATED':<22}{'ITEMS':>7}{'USERS':>8}{'RECALL@10':>11}{'POPULAR':>9}  STATE")
    for version in versions:
        try:
            meta = json.loads((registry.models_dir / shop / version / META_FILE).read_text())
            counts = meta.get("counts", {})
            validation = (meta.get("tuning") or {}).get("validation") or {}
            recall = validation.get("model", {}).get("recall_at_k")
            popular = validation.get("popularity", {}).get("recall_at_k")
            row = (f"{str(meta.get('created_at', '')):<22}{counts.get('items', ''):>7}{counts.get('users', ''):>8}"
                   f"{'' if recall is None else f'{recall:.4f}':>11}{'' if popular is None else f'{popular:.4f}':>9}")
        except (OSError, ValueError, AttributeError):
            row = f"{'(meta.json unreadable)':<22}{'':>35}"
        state = [name for name, is_it in (("current", version == current), ("pinned", version == pinned),
                                          ("serving", version == active)) if is_it]
        click.echo(f"{version:<23}{row}  {', '.join(state)}".rstrip())


@models.command("pin")
@click.argument("version")
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def models_pin(ctx: click.Context, version: str, shop: str) -> None:
    """Serve VERSION from now on, whatever training publishes, until `models unpin`."""
    from server.recommend.artifact import ArtifactError

    try:
        _registry(ctx).pin(shop, version)
    except ArtifactError as exc:
        fail(str(exc))
    click.echo(f"Pinned model {version} for shop {shop!r}: servers switch to it within seconds.")


@models.command("unpin")
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def models_unpin(ctx: click.Context, shop: str) -> None:
    """Serve the newest trained version again."""
    from server.recommend.artifact import ArtifactError

    registry = _registry(ctx)
    try:
        registry.unpin(shop)
        current = registry.current_version(shop)
    except ArtifactError as exc:
        fail(str(exc))
    click.echo(f"Unpinned shop {shop!r}: serving {current or 'no model (popularity)'}.")


@models.command("rollback")
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def models_rollback(ctx: click.Context, shop: str) -> None:
    """Pin the version before the one served now (run again to go further back)."""
    from server.recommend.artifact import ArtifactError

    try:
        version = _registry(ctx).rollback(shop)
    except ArtifactError as exc:
        fail(str(exc))
    click.echo(f"Rolled back shop {shop!r} to model {version} (pinned; `vitrine models unpin` undoes it).")

@shops.command("key")
@click.argument("shop")
@click.option("--rotate", is_flag=True, help="Make a new key: the old one stops working at once.")
@click.pass_context
def shops_key(ctx: click.Context, shop: str, rotate: bool) -> None:
    """Print the shop's secret key (what its backend signs identified customers with), or rotate it."""
    _parsed_or_exit(shop, _shop_file(ctx, shop))
    services = _services(_settings(ctx))
    try:
        if rotate:
            click.echo(services.shop_keys.rotate(shop))
            click.echo("The old key no longer works: signatures made with it leave visitors anonymous.", err=True)
        else:
            click.echo(services.shop_keys.key(shop))
            click.echo(_KEY_HELP.format(shop=shop), err=True)
    finally:
        services.close()


# -- the dashboard's users -------------------------------------------------------------
@main.group()
def admin() -> None:
    """Who may sign in to the dashboard at /admin/, and to which shops."""


def _email_or_exit(email: str) -> str:
    from server.admin.auth import normal_email

    try:
        return normal_email(email)
    except ValueError as exc:
        fail(str(exc))


@admin.command("add-user")
@click.option("--shop", required=True, help="Shop id the user may see (run again to add another).")
@click.option("--email", required=True, help="What the user signs in with.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin instead of a prompt.")
@click.option("--reset-password", is_flag=True, help="For an existing user: set a new password (ends their sessions).")
@click.pass_context
def admin_add_user(ctx: click.Context, shop: str, email: str, password_stdin: bool, reset_password: bool) -> None:
    """Let EMAIL sign in to the dashboard and see SHOP. A new user is asked for a password."""
    from server.admin.auth import MIN_PASSWORD_LENGTH, hash_password
    from server.models import utcnow

    _shop_file(ctx, shop)
    email = _email_or_exit(email)
    services = _services(_settings(ctx))
    try:
        exists = services.store.admin_user(email) is not None
        password_hash = None
        if not exists or reset_password:
            if password_stdin:
                password = sys.stdin.readline().rstrip("\r\n")
            else:
                password = click.prompt(f"Password for {email} (at least {MIN_PASSWORD_LENGTH} characters)",
                                        hide_input=True, confirmation_prompt=True, err=True)
            try:
                password_hash = hash_password(password)
            except ValueError as exc:
                fail(str(exc))
        services.store.save_admin_user(email, password_hash, shop, utcnow())
    finally:
        services.close()
    if not exists:
        click.echo(f"Added user {email}: they can sign in at /admin/ and see shop {shop!r}.")
    else:
        said = " with a new password" if password_hash else ""
        click.echo(f"User {email} can see shop {shop!r}{said}.")


@admin.command("users")
@click.option("--shop", required=True, help="Shop id.")
@click.pass_context
def admin_users(ctx: click.Context, shop: str) -> None:
    """List the users who may see SHOP in the dashboard."""
    services = _services(_settings(ctx))
    try:
        users = services.store.admin_users(shop)
    finally:
        services.close()
    if not users:
        click.echo(f"Shop {shop!r} has no dashboard users (`vitrine admin add-user --shop {shop} --email EMAIL`).")
        return
    click.echo(f"{'EMAIL':<40}  SINCE (UTC)")
    for user in users:
        click.echo(f"{user['email']:<40}  {user['added_at']:%Y-%m-%d %H:%M}")


@admin.command("remove-user")
@click.option("--email", required=True, help="The user.")
@click.option("--shop", help="Only take this shop from them (without it: remove the user).")
@click.pass_context
def admin_remove_user(ctx: click.Context, email: str, shop: str | None) -> None:
    """Take a shop from a dashboard user, or remove the user; their sessions end at once."""
    email = _email_or_exit(email)
    services = _services(_settings(ctx))
    try:
        removed = services.store.remove_admin_user(email, shop)
    finally:
        services.close()
    if not removed:
        fail(f"no dashboard user {email!r}" + (f" sees shop {shop!r}" if shop else ""))
    click.echo(f"Removed {email}" + (f" from shop {shop!r}." if shop else " and all their shops."))


# -- privacy ---------------------------------------------------------------------------
@main.group()
def privacy() -> None:
    """A visitor's own data: print all of it as JSON, or delete it (what GET|DELETE /v1/me do)."""


def _visitor_option(command: Any) -> Any:
    command = click.option("--customer", help="An imported customer's user_id (as in the import files).")(command)
    return click.option("--visitor", help="The visitor id (`visitor_id` of the visitor's export).")(command)


def _for_customer(ctx: click.Context, shop: str, customer: str, work: Any) -> Any:
    services = _services(_settings(ctx))
    try:
        _require_shop(services, shop)
        return work(services.store, shop, customer)
    finally:
        services.close()


def _visitor_of(visitor: str | None, customer: str | None) -> str:
    from server.models import ANONYMOUS_VISITOR
    from server.store.sql import imported_visitor_id

    if bool(visitor) == bool(customer):
        fail("name the visitor: --visitor ID, or --customer USER_ID for an imported customer")
    if visitor == ANONYMOUS_VISITOR:
        fail(f"{ANONYMOUS_VISITOR} is not a visitor: it holds the measurement of every visitor who allowed "
             "analytics only, with nothing that names one (its events go by age: event_retention_days)")
    return visitor or imported_visitor_id(customer or "")


def _for_visitor(ctx: click.Context, shop: str, visitor: str | None, customer: str | None, work: Any) -> tuple[str, Any]:
    """`work(services, shop, visitor_id)` for the visitor named by --visitor or --customer, in a
    shop that exists; the visitor's id and what `work` returned."""
    visitor_id = _visitor_of(visitor, customer)
    services = _services(_settings(ctx))
    try:
        _require_shop(services, shop)
        return visitor_id, work(services, shop, visitor_id)
    finally:
        services.close()


@privacy.command("export")
@click.option("--shop", required=True, help="Shop id.")
@_visitor_option
@click.pass_context
def privacy_export(ctx: click.Context, shop: str, visitor: str | None, customer: str | None) -> None:
    """Print everything held about one visitor as JSON (the answer of GET /v1/me); for a
    customer, with every browser identified as them."""
    from server.privacy.data import audiences_of, export_customer, export_visitor

    if customer and not visitor:
        data = _for_customer(ctx, shop, customer, export_customer)
        if data is None:
            click.echo(f"Nothing is stored about customer {customer!r} in shop {shop!r}.", err=True)
            sys.exit(1)
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    def export(services: Any, shop: str, visitor_id: str) -> dict | None:
        data = export_visitor(services.store, shop, visitor_id)
        if data is not None:  # as GET /v1/me answers: with the audiences inferred
            book = services.shops.get(shop).audience_book
            data["audiences"] = audiences_of(services.store, shop, visitor_id, services.audiences.for_shop(book))
        return data

    visitor_id, data = _for_visitor(ctx, shop, visitor, customer, export)
    if data is None:
        click.echo(f"Nothing is stored about visitor {visitor_id!r} in shop {shop!r}.", err=True)
        sys.exit(1)
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@privacy.command("delete")
@click.option("--shop", required=True, help="Shop id.")
@_visitor_option
@click.pass_context
def privacy_delete(ctx: click.Context, shop: str, visitor: str | None, customer: str | None) -> None:
    """Delete every row about one visitor, in one transaction (what DELETE /v1/me does); for a
    customer, with every browser identified as them."""
    from server.privacy.data import delete_customer, delete_visitor

    if customer and not visitor:
        counts = _for_customer(ctx, shop, customer, delete_customer)
        if not any(counts.values()):
            click.echo(f"Nothing was stored about customer {customer!r} in shop {shop!r}: nothing deleted.")
            return
        click.echo(f"Deleted customer {customer!r} of shop {shop!r}:")
        for table, count in counts.items():
            click.echo(f"  {table}: {count} row{'' if count == 1 else 's'}")
        return
    visitor_id, counts = _for_visitor(ctx, shop, visitor, customer, lambda svc, s, v: delete_visitor(svc.store, s, v))
    if not any(counts.values()):
        click.echo(f"Nothing was stored about visitor {visitor_id!r} in shop {shop!r}: nothing deleted.")
        return
    click.echo(f"Deleted visitor {visitor_id!r} of shop {shop!r}:")
    for table, count in counts.items():
        click.echo(f"  {table}: {count} row{'' if count == 1 else 's'}")


# -- tools -----------------------------------------------------------------------------
@main.command()
@click.argument("path")
@click.option("-H", "--header", "headers", multiple=True, help="Request header, 'Name: value' (repeatable).")
@click.option("-d", "--data", help="Send this body with POST (JSON).")
@click.option("-i", "--include", is_flag=True, help="Print the status line and response headers too.")
@click.pass_context
def get(ctx: click.Context, path: str, headers: tuple[str, ...], data: str | None, include: bool) -> None:
    """Run one request through the app without a server and print the response."""
    from starlette.testclient import TestClient

    from server.app import create_app

    settings = _settings(ctx)
    app = create_app(settings, _services(settings))
    parsed = {}
    for header in headers:
        name, sep, value = header.partition(":")
        if not sep:
            fail(f"bad header {header!r}: use 'Name: value'")
        parsed[name.strip()] = value.strip()
    client = TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.1", 50000), raise_server_exceptions=False)
    if data is None:
        response = client.get(path, headers=parsed)
    else:
        parsed.setdefault("Content-Type", "application/json")
        response = client.post(path, content=data.encode(), headers=parsed)
    if include:
        click.echo(f"HTTP/1.1 {response.status_code} {response.reason_phrase}")
        for name, value in response.headers.items():
            click.echo(f"{name}: {value}")
        click.echo()
    click.echo(response.text, nl=not response.text.endswith("\n"))
    sys.exit(0 if response.status_code < 400 else 1)


@main.command()
@click.pass_context
def migrate(ctx: click.Context) -> None:
    """Bring the database schema up to date (the server does this at start too)."""
    from server.store import open_store

    settings = _settings(ctx)
    store = open_store(settings.resolved_database_url)
    click.echo(f"Schema at version {store.migrate()} ({settings.resolved_database_url})")


@main.command("settings")
@click.pass_context
def show_settings(ctx: click.Context) -> None:
    """Show every setting with its current value and help."""
    settings = _settings(ctx)
    for f in setting_fields():
        value = getattr(settings, f.name)
        if f.metadata.get("secret") and value:
            value = "(set)"
        shown = ",".join(value) if isinstance(value, tuple) else ("" if value is None else value)
        click.echo(f"VITRINE_{f.name.upper()}={shown}")
        click.echo(f"    {f.metadata['help']}")


from server.promotions.cli import coupons  # noqa: E402 - its commands use the helpers above

main.add_command(coupons)


if __name__ == "__main__":
    main()

