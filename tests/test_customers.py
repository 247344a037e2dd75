"""Known customers: the shop's secret key, customer and order imports, identify, export."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from server.cli import main
from server.customers.keys import ShopKeys, derive_key, sign
from server.store import open_store
from server.visitors.page_views import PageView


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def vitrine(data_dir: Path, *args: str) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args])


def created(data_dir: Path, shop: str = "myshop") -> str:
    """Create the shop; the secret key `vitrine shops create` printed."""
    result = vitrine(data_dir, "shops", "create", shop, "--origin", "https://www.myshop.example")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.stdout.splitlines() if line.startswith("Secret key: ")]
    assert len(lines) == 1, result.stdout
    return lines[0].removeprefix("Secret key: ")


# -- the shop's secret key ------------------------------------------------------------


def test_shops_create_prints_the_key_and_shops_key_shows_and_rotates_it(data_dir: Path) -> None:
    key = created(data_dir)
    assert key.startswith("vsk_") and len(key) > 30
    shown = vitrine(data_dir, "shops", "key", "myshop")
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.strip() == key
    assert created(data_dir, "othershop") != key  # each shop has its own

    rotated = vitrine(data_dir, "shops", "key", "myshop", "--rotate")
    assert rotated.exit_code == 0, rotated.output
    new_key = rotated.stdout.strip()
    assert new_key.startswith("vsk_") and new_key != key
    assert "old key no longer works" in rotated.stderr
    assert vitrine(data_dir, "shops", "key", "myshop").stdout.strip() == new_key

    unknown = vitrine(data_dir, "shops", "key", "nope")
    assert unknown.exit_code == 2 and "unknown shop 'nope'" in unknown.stderr


def test_a_signature_is_checked_against_the_current_key_of_its_own_shop(tmp_path: Path) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'v.db'}")
    store.migrate()
    clock = [0.0]
    keys = ShopKeys(store, ["old-server-secret", "server-secret"], clock=lambda: clock[0])
    key = keys.key("a")
    assert key == derive_key("server-secret", "a", 0)
    good = sign(key, "c-42")
    assert keys.verify("a", "c-42", good)
    assert keys.verify("a", "c-42", good.upper())  # hex in either case
    assert not keys.verify("a", "c-43", good)  # another customer's id
    assert not keys.verify("b", "c-42", good)  # another shop's signature
    assert keys.verify("a", "c-42", sign(derive_key("old-server-secret", "a", 0), "c-42"))  # server key rotation
    # Rotated on another worker: this one takes the new version within VERSION_TTL_S.
    other = ShopKeys(store, ["server-secret"])
    new_key = other.rotate("a")
    assert keys.verify("a", "c-42", good)
    clock[0] += 1.5
    assert not keys.verify("a", "c-42", good)
    assert keys.verify("a", "c-42", sign(new_key, "c-42"))
    store.close()


# -- imports --------------------------------------------------------------------------

CUSTOMERS = """\
id,email,first_name,signed_up_at,birthday,group,marketing_consent
c1,Ada@Example.com,Ada,2024-01-10T09:00:00Z,1990-04-23,vip,yes
c2,,Bob,,,,
"""
ORDERS = """\
order_id,customer_id,timestamp,value,currency,lines
o1,c1,2024-02-01T10:00:00Z,40.50,GBP,71053:2|22632
o2,c1,2024-03-01T10:00:00Z,10,GBP,22632
o3,c3,2024-03-02T10:00:00Z,5,GBP,
"""


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_customers_and_orders_are_imported_once_each(data_dir: Path, tmp_path: Path) -> None:
    import hashlib

    created(data_dir)
    customers = write(tmp_path / "customers.csv", CUSTOMERS)
    orders = write(tmp_path / "orders.csv", ORDERS)
    result = vitrine(data_dir, "import", "customers", str(customers), "--shop", "myshop")
    assert result.exit_code == 0, result.output
    assert "Imported 2 new customers" in result.stdout and "(0 updated)" in result.stdout
    result = vitrine(data_dir, "import", "orders", str(orders), "--shop", "myshop")
    assert result.exit_code == 0, result.output
    assert "Imported 3 new orders" in result.stdout
    again = vitrine(data_dir, "import", "orders", str(orders), "--shop", "myshop")
    assert "Imported 0 new orders" in again.stdout and "(3 already there)" in again.stdout
    # The same order id under another customer is still the one order.
    moved = write(tmp_path / "moved.csv", "order_id,customer_id,timestamp,value\no2,c2,2024-03-05T00:00:00Z,99\n")
    assert "Imported 0 new orders" in vitrine(data_dir, "import", "orders", str(moved), "--shop", "myshop").stdout
    assert "2 updated" in vitrine(data_dir, "import", "customers", str(customers), "--shop", "myshop").stdout

    store = open_store(f"sqlite:///{data_dir.resolve() / 'vitrine.db'}")
    try:
        ada = store.get_visitor("myshop", "u:c1")
        assert (ada.orders, ada.revenue) == (2, 50.5)
        assert ada.last_order_at.isoformat() == "2024-03-01T10:00:00"
        assert store.get_visitor("myshop", "u:c2").orders == 0
        assert store.get_visitor("myshop", "u:c3").orders == 1  # an order's customer not imported (yet)
        record = store.visitor_records("myshop", "u:c1")["customers"][0]
        assert record["email"] == "ada@example.com"
        assert record["email_sha256"] == hashlib.sha256(b"ada@example.com").hexdigest()
        assert (record["first_name"], record["customer_group"], record["marketing_consent"]) == ("Ada", "vip", True)
        assert record["birthday"].isoformat() == "1990-04-23"
        assert store.visitor_records("myshop", "u:c2")["customers"][0]["marketing_consent"] is False
        bought = [e for e in store.visitor_events("myshop", "u:c1") if e.order_id == "o1"][0]
        assert bought.item_ids() == ["71053", "22632"] and bought.props["items"][0]["quantity"] == 2
    finally:
        store.close()


def test_a_broken_customers_or_orders_file_names_each_line_and_imports_nothing(data_dir: Path, tmp_path: Path) -> None:
    created(data_dir)
    customers = write(tmp_path / "customers.csv", (
        "id,email,email_sha256,birthday,marketing_consent,signed_up_at\n"
        "c1,not-an-email,,,,\n"
        ",a@b.example,,,,\n"
        "c3,,abc,,,\n"
        "c4,,,23/04/1990,,\n"
        "c5,,,,maybe,\n"
        "c8,,,,,\n"
        "c7,,,,,yesterday\n"
        "c8,a@b.example,,,,\n"
    ))
    result = vitrine(data_dir, "import", "customers", str(customers), "--shop", "myshop")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: {customers}:2: bad email 'not-an-email' (expected name@example.com)"
    assert f"{customers}:3: empty id" in lines
    assert any(line.startswith(f"{customers}:4: bad email_sha256 'abc'") for line in lines)
    assert any(line.startswith(f"{customers}:5: bad birthday '23/04/1990'") for line in lines)
    assert any(line.startswith(f"{customers}:6: bad marketing_consent 'maybe'") for line in lines)
    assert f"{customers}:9: duplicate id 'c8' (first on line 7)" in lines
    assert any(line.startswith(f"{customers}:8: bad timestamp 'yesterday'") for line in lines)
    assert lines[-1] == "Nothing was imported."

    orders = write(tmp_path / "orders.csv", (
        "order_id,customer_id,timestamp,value,currency,lines\n"
        "o1,c1,2024-01-01,10,GBP,a:2\n"
        "o2,,2024-01-01,10,GBP,a\n"
        "o3,c1,2024-01-01,-1,GBP,a\n"
        "o4,c1,2024-01-01,1,POUNDS,a\n"
        "o5,c1,2024-01-01,1,GBP,a:0|b\n"
        "o1,c1,2024-01-02,1,GBP,a\n"
    ))
    result = vitrine(data_dir, "import", "orders", str(orders), "--shop", "myshop")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert lines[0] == f"Error: {orders}:3: empty customer_id"
    assert any(line.startswith(f"{orders}:4: bad value '-1'") for line in lines)
    assert any(line.startswith(f"{orders}:5: bad currency 'POUNDS'") for line in lines)
    assert any(line.startswith(f"{orders}:6: bad line 'a:0' in lines") for line in lines)
    assert f"{orders}:7: duplicate order_id 'o1' (first on line 2)" in lines
    missing = write(tmp_path / "missing.csv", "order_id,timestamp\no1,2024-01-01\n")
    result = vitrine(data_dir, "import", "orders", str(missing), "--shop", "myshop")
    assert result.exit_code == 2 and "missing required column customer_id" in result.stderr

    store = open_store(f"sqlite:///{data_dir.resolve() / 'vitrine.db'}")
    try:
        assert store.get_visitor("myshop", "u:c1") is None
        assert store.count_events("myshop") == 0
    finally:
        store.close()


# -- identify ---------------------------------------------------------------------------

from datetime import timedelta  # noqa: E402

from starlette.testclient import TestClient  # noqa: E402

from conftest import stored  # noqa: E402
from server.models import Customer, Order, utcnow  # noqa: E402


def ago(days: float):
    from datetime import timezone

    return (utcnow() - timedelta(days=days)).replace(tzinfo=timezone.utc)


@pytest.fixture
def known(services) -> None:
    """Two customers of the demo shop: Ada, who ordered twice, last more than a year ago;
    Bob, who signed up and never ordered."""
    services.store.import_customers("demo", [
        Customer("c1", email="ada@example.com", first_name="Ada", marketing_consent=True),
        Customer("c2", first_name="Bob", signed_up_at=utcnow() - timedelta(days=3)),
    ])
    services.store.import_orders("demo", [
        Order("o1", "c1", ago(500), 30.0, "GBP", (("71053", 2.0),)),
        Order("o2", "c1", ago(400), 12.5, "GBP", (("22632", 1.0),)),
    ])


def device(app) -> TestClient:
    """A browser of its own (its own cookies)."""
    return TestClient(app, base_url="http://127.0.0.1:8000", client=("127.0.0.1", 40000))


def page_call(browser: TestClient, identify=None, **extra):
    body = {"shop": "demo", "slots": [], **extra}
    if identify is not None:
        body["identify"] = identify
    return browser.post("/v1/page?shop=demo", json=body)


def seen(browser: TestClient) -> dict:
    """The visitor as QA sees them (`_context=1`: the demo shop is open for QA)."""
    r = browser.get("/v1/fragments/banner?shop=demo&placement=top&_context=1")
    assert r.status_code == 200, r.text
    return r.json()["visitor"]


def signed(services, customer_id: str, shop: str = "demo") -> dict:
    return {"id": customer_id, "signature": sign(services.shop_keys.key(shop), customer_id)}


def test_an_identified_visitor_is_the_customer_with_their_imported_orders(app, services, known) -> None:
    ada = device(app)
    r = page_call(ada, signed(services, "c1"))
    assert r.status_code == 200, r.text
    assert r.json()["identify"] == {"identified": True, "customer_id": "c1", "reason": "identified as customer c1"}
    assert r.json()["visitor"]["kind"] == "customer"  # on the very page call that identified
    visitor = seen(ada)
    assert visitor["customer"] == {"id": "c1", "first_name": "Ada", "group": ""}
    assert visitor["orders"] == 2
    assert {"repeat_customer", "lapsed"} <= set(visitor["audiences"])
    assert "new" not in visitor["audiences"]
    # The next page calls need not identify again: the browser stays linked.
    page_call(ada)
    assert seen(ada)["customer"]["id"] == "c1"


def test_the_same_customer_on_two_devices_and_a_prospect(app, services, known) -> None:
    phone, laptop = device(app), device(app)
    page_call(phone)
    assert "new" in seen(phone)["audiences"]
    page_call(phone, signed(services, "c1"))
    page_call(laptop, signed(services, "c1"))
    for browser in (phone, laptop):
        assert {"repeat_customer", "lapsed"} <= set(seen(browser)["audiences"])
    # Two visitors (each browser its own), one customer.
    assert seen(phone)["customer"] == seen(laptop)["customer"] == {"id": "c1", "first_name": "Ada", "group": ""}
    bob = device(app)
    page_call(bob, signed(services, "c2"))
    visitor = seen(bob)
    assert "prospect" in visitor["audiences"] and visitor["orders"] == 0


def test_a_bad_or_another_shops_or_rotated_signature_leaves_the_visitor_anonymous(app, services, settings, known) -> None:
    (settings.resolved_shops_dir / "other.toml").write_text('name = "other"\norigins = []\n')
    browser = device(app)
    for wrong in (
        {"id": "c1", "signature": "0" * 64},  # made up
        {"id": "c1", "signature": sign(services.shop_keys.key("demo"), "c2")},  # another customer's
        signed(services, "c1", shop="other"),  # another shop's key
    ):
        r = page_call(browser, wrong)
        assert r.status_code == 200, r.text
        said = r.json()["identify"]
        assert said["identified"] is False and "signature" in said["reason"], said
        assert seen(browser)["customer"] is None
        assert "repeat_customer" not in seen(browser)["audiences"]
    old = signed(services, "c1")
    assert page_call(browser, old).json()["identify"]["identified"] is True
    services.shop_keys.rotate("demo")
    # The old key's signature no longer counts: the browser is unlinked.
    assert page_call(browser, old).json()["identify"]["identified"] is False
    assert seen(browser)["customer"] is None
    assert page_call(browser, signed(services, "c1")).json()["identify"]["identified"] is True


@pytest.mark.parametrize("identify", [
    {"id": "c1", "signature": "not hex"},
    {"id": "c1", "signature": "ab" * 31},
    {"id": "", "signature": "ab" * 32},
    {"id": "x" * 129, "signature": "ab" * 32},
    {"id": "c1"},
    {"id": "c1", "signature": "ab" * 32, "name": "Ada"},
    True,
    "c1",
])
def test_a_malformed_identify_is_a_422(app, identify) -> None:
    r = page_call(device(app), identify)
    assert r.status_code == 422, r.text
    assert "identify" in r.json()["error"]


def test_logging_out_unlinks_this_browser_only_and_keeps_its_history(app, services, known) -> None:
    phone, laptop = device(app), device(app)
    r = page_call(phone, page={"type": "product", "item_id": "22112"})  # browsing before logging in
    token = r.json()["token"]
    page_call(phone, signed(services, "c1"))
    page_call(laptop, signed(services, "c1"))
    visitor_id = services.signer.visitor_id("demo", token)
    state = stored(services).get_visitor("demo", visitor_id).state
    assert "22112" in [e.item_id for e in state.events()]  # the pre-login history is kept
    r = page_call(phone, False)
    assert r.json()["identify"] == {"identified": False, "customer_id": None,
                                    "reason": "logged out: this browser is no longer linked to a customer"}
    assert seen(phone)["customer"] is None and seen(phone)["orders"] == 0
    assert seen(laptop)["customer"]["id"] == "c1"
    assert "22112" in [e.item_id for e in stored(services).get_visitor("demo", visitor_id).state.events()]


def test_without_consent_to_personalization_no_link_is_stored(app, services, known) -> None:
    browser = device(app)
    r = page_call(browser, signed(services, "c1"), consent={"personalization": False, "analytics": False})
    assert r.status_code == 200, r.text
    said = r.json()["identify"]
    assert said["identified"] is False and "consent" in said["reason"]
    with stored(services).engine.connect() as conn:
        import sqlalchemy as sa

        linked = conn.execute(sa.text("SELECT count(*) FROM visitors WHERE identified_as IS NOT NULL")).scalar()
    assert linked == 0


def test_campaign_copy_greets_an_identified_customer_by_their_first_name(app, services) -> None:
    services.store.import_customers("demo", [Customer("c3", first_name="Cleo")])
    services.store.import_orders("demo", [Order("o9", "c3", ago(10), 20.0, "GBP", (("22112", 1.0),))])
    cleo = device(app)
    page_call(cleo, signed(services, "c3"))
    html = cleo.get("/v1/fragments/banner?shop=demo&placement=home-hero").text
    assert "Thanks for shopping with us, Cleo" in html
    page_call(cleo, False)
    assert "Thanks for shopping with us" not in cleo.get("/v1/fragments/banner?shop=demo&placement=home-hero").text


def test_privacy_export_and_delete_of_a_customer_take_every_device_and_stay_forgotten(app, services, settings, known) -> None:
    import json

    phone, laptop, other = device(app), device(app), device(app)
    page_call(phone, signed(services, "c1"), page={"type": "product", "item_id": "22112"})
    page_call(laptop, signed(services, "c1"))
    page_call(other, signed(services, "c2"))
    stored(services)
    env = {"VITRINE_SECRET_KEYS": "test-key-1", "VITRINE_DATABASE_URL": settings.database_url}

    def privacy(*args: str) -> Result:
        return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), "privacy", *args], env=env)

    exported = privacy("export", "--shop", "demo", "--customer", "c1")
    assert exported.exit_code == 0, exported.output
    data = json.loads(exported.stdout)
    assert data["customer_id"] == "c1" and data["customers"][0]["email"] == "ada@example.com"
    assert sorted(e["order_id"] for e in data["events"]) == ["o1", "o2"]
    assert len(data["devices"]) == 2
    assert all(d["profile"]["identified_as"] == "u:c1" for d in data["devices"])

    deleted = privacy("delete", "--shop", "demo", "--customer", "c1")
    assert deleted.exit_code == 0, deleted.output
    assert "Deleted customer 'c1'" in deleted.stdout and "customers: 1 row\n" in deleted.stdout
    assert "visitors: 3 rows\n" in deleted.stdout  # the customer's row and both browsers'
    assert services.store.identified_visitors("demo", "c1") == []
    assert services.store.get_visitor("demo", "u:c1") is None
    assert services.store.identified_visitors("demo", "c2") != []  # nobody else's
    assert privacy("export", "--shop", "demo", "--customer", "c1").exit_code == 1
    # Importing the shop's files again does not bring them back.
    assert services.store.import_customers("demo", [Customer("c1", email="ada@example.com")]) == (0, 0, 1)
    assert services.store.import_orders("demo", [Order("o7", "c1", ago(3), 5.0)]) == (0, 1)
    assert services.store.get_visitor("demo", "u:c1") is None


# -- audience export ------------------------------------------------------------------


def cli(settings, *args: str) -> Result:
    env = {"VITRINE_SECRET_KEYS": "test-key-1", "VITRINE_DATABASE_URL": settings.database_url}
    return CliRunner().invoke(main, ["--data-dir", str(settings.data_dir), *args], env=env)


def test_export_lists_the_customers_in_an_audience_with_consent_and_without_gpc(app, services, settings, known) -> None:
    import csv
    import io
    import json

    services.store.import_customers("demo", [
        Customer("c4", email="dana@example.com", marketing_consent=True, signed_up_at=utcnow() - timedelta(days=1)),
        Customer("c5", email_sha256="ab" * 32, marketing_consent=True),
        Customer("c6", email="gone@example.com", marketing_consent=True, signed_up_at=utcnow() - timedelta(days=1)),
    ])
    services.store.import_orders("demo", [
        Order("o5", "c5", ago(5), 9.0), Order("o6", "c2", ago(500), 9.0), Order("o7", "c2", ago(450), 9.0),
    ])
    before = json.loads(cli(settings, "audiences", "export", "prospect", "--shop", "demo", "--format", "json").stdout)
    assert [r["customer_id"] for r in before] == ["c4", "c6"]  # not Bob: no marketing consent
    # Dana's browser sends Global Privacy Control: from then on she is never exported.
    dana = device(app)
    dana.post("/v1/page?shop=demo", json={"shop": "demo", "slots": [], "identify": signed(services, "c4")},
              headers={"Sec-GPC": "1"})
    # Eve's laptop left a cart two hours ago: she is a cart abandoner through it.
    eve = device(app)
    token = page_call(eve, signed(services, "c5")).json()["token"]
    from conftest import record_history

    record_history(services, "demo", token, {
        "event_id": "eve-cart", "type": "add_to_cart", "item_id": "22632", "value": 1.85,
        "ts": int((utcnow() - timedelta(hours=2)).timestamp() * 1000) + 0})
    # An anonymous visitor with an old cart is nobody's e-mail.
    stranger = device(app)
    token = page_call(stranger).json()["token"]
    record_history(services, "demo", token, {
        "event_id": "stranger-cart", "type": "add_to_cart", "item_id": "22632",
        "ts": int((utcnow() - timedelta(hours=2)).timestamp() * 1000)})
    assert cli(settings, "privacy", "delete", "--shop", "demo", "--customer", "c6").exit_code == 0
    stored(services)

    lapsed = cli(settings, "audiences", "export", "lapsed", "--shop", "demo")
    assert lapsed.exit_code == 0, lapsed.output
    rows = list(csv.DictReader(io.StringIO(lapsed.stdout)))
    # Bob is lapsed too, but never agreed to marketing.
    assert [r["customer_id"] for r in rows] == ["c1"]
    assert rows[0]["email"] == "ada@example.com"
    assert rows[0]["reason"].startswith("last order 400 days ago")
    assert "1 customer in lapsed." in lapsed.stderr

    prospects = json.loads(cli(settings, "audiences", "export", "prospect", "--shop", "demo", "--format", "json").stdout)
    assert prospects == []  # Dana's browser sent GPC, c6 was deleted at their request

    abandoners = cli(settings, "audiences", "export", "cart_abandoner", "--shop", "demo", "--format", "json")
    assert abandoners.exit_code == 0, abandoners.output
    found = json.loads(abandoners.stdout)
    assert [(r["customer_id"], r["email"], r["email_sha256"]) for r in found] == [("c5", "", "ab" * 32)]
    assert "1 item in the cart" in found[0]["reason"]

    first = json.loads(cli(settings, "audiences", "export", "first_time_customer", "--shop", "demo", "--format", "json").stdout)
    assert [r["customer_id"] for r in first] == ["c5"]


def test_export_refuses_an_unknown_audience_or_one_read_only_during_a_request(settings, services) -> None:
    (settings.resolved_shops_dir / "other.toml").write_text(
        'name = "other"\norigins = []\n[[audiences.custom]]\nid = "londoners"\ncity = "London"\n')
    unknown = cli(settings, "audiences", "export", "lapsd", "--shop", "demo")
    assert unknown.exit_code == 2 and "unknown audience 'lapsd'" in unknown.stderr
    request_only = cli(settings, "audiences", "export", "londoners", "--shop", "other")
    assert request_only.exit_code == 2
    assert "audience 'londoners' cannot be exported: it reads city" in request_only.stderr
    sizes = cli(settings, "audiences", "--shop", "demo", "--json")
    assert sizes.exit_code == 0 and '"lapsed"' in sizes.stdout  # the sizes as before


@pytest.fixture(params=["sqlite", "postgresql"])
def any_store(request, tmp_path):
    if request.param == "sqlite":
        store = open_store(f"sqlite:///{tmp_path / 'v.db'}")
    else:
        store = open_store(request.getfixturevalue("postgres_url"))
    store.migrate()
    yield store
    store.close()


def test_the_export_query_on_both_stores(any_store) -> None:
    from server.audiences import AudiencesConfig, compile_audiences

    book, _ = compile_audiences(AudiencesConfig())
    any_store.import_customers("s", [Customer("a", email="a@example.com", marketing_consent=True),
                                     Customer("b", email="b@example.com", marketing_consent=True),
                                     Customer("n", email="n@example.com")])
    any_store.import_orders("s", [Order("1", "a", ago(30), 5.0), Order("2", "a", ago(20), 5.0),
                                  Order("3", "b", ago(10), 5.0), Order("4", "n", ago(10), 5.0),
                                  Order("5", "n", ago(9), 5.0)])
    now = utcnow()
    repeat = any_store.audience_customers("s", book, "repeat_customer", now, 1800)
    assert [(c, e) for c, e, _, _ in repeat] == [("a", "a@example.com")]
    assert repeat[0][3].orders == 2
    first = any_store.audience_customers("s", book, "first_time_customer", now, 1800)
    assert [c for c, *_ in first] == ["b"]
    any_store.identify_visitor("s", "browser-b", "b", now)
    any_store.record_page_views([PageView("s", "browser-b", now, 1800, gpc=True)])
    assert any_store.audience_customers("s", book, "first_time_customer", now, 1800) == []


# -- audience webhooks ----------------------------------------------------------------

import hashlib as _hashlib  # noqa: E402
import hmac as _hmac  # noqa: E402
import json as _json  # noqa: E402
import threading  # noqa: E402
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer  # noqa: E402

from server.customers import webhooks  # noqa: E402

SECRET = "a-webhook-secret-of-the-shop"


class Receiver:
    """A real HTTP receiver on 127.0.0.1 that checks each delivery's signature, and answers
    with the statuses it is told to (then 200)."""

    def __init__(self) -> None:
        self.got: list[dict] = []
        self.statuses: list[int] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + _hmac.new(SECRET.encode(), body, _hashlib.sha256).hexdigest()
                status = receiver.statuses.pop(0) if receiver.statuses else 200
                if not _hmac.compare_digest(self.headers.get("X-Vitrine-Signature", ""), expected):
                    status = 401
                if status == 200:
                    receiver.got.append(_json.loads(body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks/vitrine"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def hooked_shop(settings, url: str, audience: str = "repeat_customer", secret: str = SECRET) -> None:
    (settings.resolved_shops_dir / "hooked.toml").write_text(
        f'name = "hooked"\norigins = []\n[[audiences.webhooks]]\naudience = "{audience}"\nurl = "{url}"\n'
        f'secret = "{secret}"\n')


def test_webhooks_get_the_joins_and_leaves_signed_and_retried(services, settings, receiver) -> None:
    hooked_shop(settings, receiver.url)
    services.store.import_customers("hooked", [
        Customer("a", email="a@example.com", marketing_consent=True),
        Customer("b", email="b@example.com", marketing_consent=True),
        Customer("n", email="n@example.com"),  # no marketing consent: never sent
    ])
    services.store.import_orders("hooked", [
        Order("1", "a", ago(30), 5.0), Order("2", "a", ago(20), 5.0), Order("3", "b", ago(10), 5.0),
        Order("4", "n", ago(10), 5.0), Order("5", "n", ago(9), 5.0),
    ])
    now = utcnow()
    assert webhooks.run(services, now).startswith("1 joins and 0 leaves queued, 1 delivered")
    assert [(d["change"], d["customer"], d["audience"]) for d in receiver.got] == [
        ("join", {"id": "a", "email": "a@example.com", "email_sha256": _hashlib.sha256(b"a@example.com").hexdigest()},
         "repeat_customer")]
    assert receiver.got[0]["reason"] == "2 orders"
    assert webhooks.run(services, now).startswith("0 joins and 0 leaves queued, 0 delivered")  # nothing changed

    # b orders again (joins); a's consent is withdrawn in the shop's next import (leaves).
    services.store.import_orders("hooked", [Order("6", "b", ago(1), 5.0)])
    services.store.import_customers("hooked", [Customer("a", email="a@example.com", marketing_consent=False)])
    receiver.statuses = [503, 500]  # the receiver is down for a while
    later = now + timedelta(seconds=1)
    assert "1 joins and 1 leaves queued, 0 delivered, 1 to try again" in webhooks.run(services, later)
    assert len(receiver.got) == 1
    pending = services.store.deliveries("hooked")[:2]  # newest first
    assert [(d["change"], d["status"], d["attempts"], d["last_error"]) for d in pending] == [
        ("leave", "pending", 0, ""), ("join", "pending", 1, "HTTP 503")]
    assert pending[1]["next_attempt_at"] == later + timedelta(seconds=30)
    # Not due yet: nothing is sent, and the later delivery waits behind it.
    assert "0 delivered" in webhooks.run(services, later + timedelta(seconds=10))
    assert "0 delivered, 1 to try again" in webhooks.run(services, later + timedelta(seconds=31))  # the 500
    assert "2 delivered" in webhooks.run(services, later + timedelta(seconds=31 + 121))
    assert [(d["change"], d["customer"]["id"]) for d in receiver.got[1:]] == [("join", "b"), ("leave", "a")]
    assert receiver.got[2]["customer"] == {"id": "a"}  # a leave names the customer by id only

    listed = cli(settings, "audiences", "deliveries", "--shop", "hooked")
    assert listed.exit_code == 0, listed.output
    lines = listed.stdout.splitlines()
    assert len(lines) == 3 and "repeat_customer leave a" in lines[0] and "delivered" in lines[0]
    assert "join  b  delivered, 3 attempts" in lines[1]
    as_json = _json.loads(cli(settings, "audiences", "deliveries", "--shop", "hooked", "--json").stdout)
    assert [d["status"] for d in as_json] == ["delivered"] * 3


def test_a_redirect_is_not_a_delivery(services, settings, receiver) -> None:
    hooked_shop(settings, receiver.url)
    services.store.import_customers("hooked", [Customer("a", email="a@example.com", marketing_consent=True)])
    services.store.import_orders("hooked", [Order("1", "a", ago(30), 5.0), Order("2", "a", ago(20), 5.0)])
    receiver.statuses = [302]
    webhooks.run(services, utcnow())
    [delivery] = services.store.deliveries("hooked")
    assert (delivery["status"], delivery["last_error"]) == ("pending", "HTTP 302")


def test_a_delivery_fails_after_the_last_retry_and_a_wrong_secret_is_refused(services, settings, receiver) -> None:
    hooked_shop(settings, receiver.url, secret="not-the-receivers-secret")
    services.store.import_customers("hooked", [Customer("a", email="a@example.com", marketing_consent=True)])
    services.store.import_orders("hooked", [Order("1", "a", ago(30), 5.0), Order("2", "a", ago(20), 5.0)])
    at = utcnow()
    webhooks.run(services, at)
    for backoff in webhooks.BACKOFF_S:
        at += timedelta(seconds=backoff)
        webhooks.run(services, at)
    [delivery] = services.store.deliveries("hooked")
    assert (delivery["status"], delivery["attempts"], delivery["last_error"]) == ("failed", webhooks.MAX_ATTEMPTS, "HTTP 401")
    assert receiver.got == []


def test_a_webhook_config_names_an_audience_that_can_be_sent(settings, services) -> None:
    from server.shops import ShopConfigError, parse_shop_config

    path = settings.resolved_shops_dir / "bad.toml"
    path.write_text(
        'name = "bad"\norigins = []\n'
        '[[audiences.webhooks]]\naudience = "lapsed"\nurl = "ftp://hooks.example/v"\nsecret = "short"\n')
    with pytest.raises(ShopConfigError) as raised:
        parse_shop_config("bad", path)
    text = "\n".join(raised.value.problems)
    assert "bad.toml:5: audiences.webhooks[0].url: " in text and "http:// or https:// URL" in text
    assert "bad.toml:6: audiences.webhooks[0].secret: " in text
    path.write_text(
        'name = "bad"\norigins = []\n'
        '[[audiences.custom]]\nid = "londoners"\ncity = "London"\n'
        '[[audiences.webhooks]]\naudience = "lapsd"\nurl = "https://hooks.example/v"\nsecret = "0123456789abcdef"\n'
        '[[audiences.webhooks]]\naudience = "londoners"\nurl = "https://hooks.example/v"\nsecret = "0123456789abcdef"\n')
    with pytest.raises(ShopConfigError) as raised:
        parse_shop_config("bad", path)
    text = "\n".join(raised.value.problems)
    assert "bad.toml:7: audiences.webhooks[0].audience: unknown audience 'lapsd'" in text
    assert "bad.toml:11: audiences.webhooks[1].audience: audience 'londoners' cannot have a webhook: it reads city" in text
