"""Shared fixtures: a real app on a temporary data directory, with the demo shop's config."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from server.app import Services, build_services, create_app
from server.events import EventBatch, to_events
from server.demo import fill_coupon_pools
from server.models import CatalogItem
from server.settings import Settings
from servers import write_demo_config

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "server" / "demo" / "demo.toml"
UK_IP = "81.2.69.160"  # GB in the bundled GeoLite2 City database
US_IP = "8.8.8.8"  # US

SMALL_CATALOG = [
    CatalogItem("85123A", "White Hanging Heart T-Light Holder", category="Candles and lights", price=2.55, currency="GBP"),
    CatalogItem("71053", "White Metal Lantern", category="Candles and lights", price=3.39, currency="GBP"),
    CatalogItem("22632", "Hand Warmer Red Polka Dot", category="Gifts", price=1.85, currency="GBP", tags=("red",)),
    CatalogItem("22112", "Chocolate Hot Water Bottle", category="Home decor", price=4.95, currency="GBP"),
]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    shops = tmp_path / "shops"
    shops.mkdir()
    write_demo_config(shops / "demo.toml")
    # Changes to configs, templates and the catalog are seen at once here; the one-second
    # checks themselves are tested on their own (tests/test_catalog.py, tests/test_reload.py).
    return Settings.load(environ={}, data_dir=tmp_path, secret_keys="test-key-1", change_check_interval_s=0)


@pytest.fixture
def services(settings: Settings) -> Services:
    svc = build_services(settings)
    svc.store.upsert_items("demo", SMALL_CATALOG)
    yield svc
    svc.close()


@pytest.fixture
def demo_pools(services: Services) -> None:
    """The demo's coupon pools, as `vitrine demo` makes them: the welcome popup's and the
    newsletter sign-up's codes (40 each)."""
    fill_coupon_pools(services.store, "demo", size=40, low=40)


@pytest.fixture
def app(settings: Settings, services: Services):
    return create_app(settings, services)


@pytest.fixture
def client(app) -> TestClient:
    # The peer is 127.0.0.1, a trusted proxy by default, so tests can set X-Forwarded-For.
    return TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))

# The newest schema migration: the version a migrated store reports.
HEAD = sorted(p.name.split("_")[0] for p in (ROOT / "server" / "store" / "migrations" / "versions").glob("0*.py"))[-1]


def record_history(services: Services, shop: str, visitor_token: str, *events: dict) -> None:
    """Events from before the API's time window (weeks-old views, last month's orders): the
    history a shop imports, validated and converted exactly as an event batch is."""
    batch = EventBatch.model_validate({"shop": shop, "events": list(events)}, context={"history": True})
    visitor_id = services.signer.visitor_id(shop, visitor_token)
    assert visitor_id, "not a token of this shop"
    services.store.record_events(shop, visitor_id, to_events(batch))


def stored(services: Services):
    """The store once this process's page views are written (they are written behind the
    answer, server/visitors/page_views.py): what a page call recorded can be read."""
    assert services.contexts.page_views.flush(), "the page views were not written"
    return services.store


def qa_headers(client: TestClient, shop: str) -> dict[str, str]:
    """The header that grants QA powers on a shop that is not open for QA."""
    from server.qa import QA_HEADER, qa_key

    services = client.app.state.services
    return {QA_HEADER: qa_key(services.signer.keys, services.shops.get(shop))}


# PostgreSQL for the tests that need it (127.0.0.1, trust auth); VITRINE_TEST_POSTGRES_URL points elsewhere.
POSTGRES_URL = os.environ.get("VITRINE_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A URL whose connections see only a new, empty schema; the schema goes at teardown."""
    import secrets
    from urllib.parse import quote

    import sqlalchemy as sa

    schema = "vitrine_test_" + secrets.token_hex(6)
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    base = sa.engine.make_url(POSTGRES_URL)
    yield base.render_as_string(hide_password=False) + ("&" if base.query else "?") + "options=" + quote(
        f"-csearch_path={schema}"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    admin.dispose()


@contextmanager
def new_postgres_database(prefix: str) -> Iterator[str]:
    """The URL of a new, empty PostgreSQL database, dropped (connections and all) afterwards."""
    import secrets

    import sqlalchemy as sa

    name = f"{prefix}_{secrets.token_hex(4)}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    try:
        yield sa.engine.make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
