"""The `vitrine` command: demo, serve, import, shops, get, migrate, settings."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any, NoReturn

import click

from server.settings import Settings, SettingsError, setting_fields

DEMO_DIR = Path(__file__).parent / "demo"
DEMO_SHOP = "demo"


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
@click.pass_context
def demo(ctx: click.Context, host: str | None, port: int | None) -> None:
    """Set up the demo shop (once) and serve it on http://HOST:PORT/demo/."""
    settings = _settings(ctx, host=host, port=port)
    services = _services(settings)
    _install_demo_shop(settings)
    if services.store.count_items(DEMO_SHOP) == 0:
        _import_catalog(services, DEMO_SHOP, DEMO_DIR / "data" / "catalog.csv", None)
        _import_interactions(services, DEMO_SHOP, DEMO_DIR / "data" / "interactions.csv")
    else:
        click.echo(f"Demo shop already imported in {settings.resolved_data_dir} (reusing it).")
    click.echo(f"Demo shop: http://{settings.host}:{settings.port}/demo/")
    _run_server(settings, services)


@main.command()
@click.option("--host", help="Address to listen on.")
@click.option("--port", type=int, help="Port to listen on.")
@click.option("--workers", type=int, help="Number of worker processes.")
@click.pass_context
def serve(ctx: click.Context, host: str | None, port: int | None, workers: int | None) -> None:
    """Serve the API (and the demo pages) with uvicorn."""
    settings = _settings(ctx, host=host, port=port, workers=workers)
    _run_server(settings, _services(settings))


def _run_server(settings: Settings, services: Any) -> None:
    import uvicorn

    from server.app import create_app

    # Vitrine reads X-Forwarded-* itself, only from trusted proxies (settings.trusted_proxies).
    common = dict(host=settings.host, port=settings.port, proxy_headers=False, server_header=False, log_level="info")
    if settings.workers > 1:
        services.close()
        os.environ.update(_settings_env(settings))
        uvicorn.run("server.app:app_from_env", factory=True, workers=settings.workers, **common)
    else:
        uvicorn.run(create_app(settings, services), **common)


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


def _install_demo_shop(settings: Settings) -> None:
    target = settings.resolved_shops_dir / f"{DEMO_SHOP}.toml"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(DEMO_DIR / "demo.toml", target)
        click.echo(f"Wrote the demo shop's config to {target}")


# -- data ------------------------------------------------------------------------------
@main.group("import")
def import_() -> None:
    """Import a catalog or past interactions into a shop."""


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


def _require_shop(services: Any, shop: str) -> None:
    from server.shops import ShopConfigError

    try:
        if services.shops.get(shop) is None:
            fail(f"unknown shop {shop!r}: create it first with `vitrine shops create {shop} --origin URL`")
    except ShopConfigError as exc:
        fail(str(exc))


def _import_catalog(services: Any, shop: str, file: Path, fmt: str | None) -> None:
    from server.imports import ImportFailed, read_catalog

    started = time.perf_counter()
    try:
        items = read_catalog(file, fmt)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    count = services.store.upsert_items(shop, items)
    click.echo(f"Imported {count} catalog items into shop {shop!r} in {time.perf_counter() - started:.1f} s.")


def _import_interactions(services: Any, shop: str, file: Path) -> None:
    from server.imports import ImportFailed, read_interactions

    started = time.perf_counter()
    try:
        rows = read_interactions(file)
    except ImportFailed as exc:
        fail(f"{exc}\nNothing was imported.")
    added = services.store.import_interactions(shop, rows)
    click.echo(
        f"Imported {added} new interactions into shop {shop!r} ({len(rows) - added} already there) "
        f"in {time.perf_counter() - started:.1f} s."
    )


@main.group()
def shops() -> None:
    """List and create shops."""


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
        f"name = {json.dumps(shop)}\norigins = {json.dumps(list(origins))}\ncurrency = {json.dumps(currency)}\n"
    )
    click.echo(f"Created {path}")


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


if __name__ == "__main__":
    main()
