"""The `vitrine` command: shops, imports, get, settings, migrate, and a real `vitrine demo`."""

from __future__ import annotations

import json
import re
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from conftest import HEAD
from servers import write_demo_config
from server.cli import main
from server.settings import setting_fields
from server.store import open_store

ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIG = ROOT / "server" / "demo" / "demo.toml"
UK_IP = "81.2.69.160"
US_IP = "8.8.8.8"

CATALOG = """\
item_id,title,category,price,currency,tags,in_stock
71053,White Metal Lantern,Home > Lights,3.75,GBP,white|metal,true
22632,"Hand Warmer, Red Polka Dot",Gifts,2.10,GBP,red,false
22112,Chocolate Hot Water Bottle,Home > Decor,4.95,GBP,,yes
"""

INTERACTIONS = """\
user_id,item_id,event,timestamp,value,country
17850,71053,purchase,2010-12-01T08:26:00Z,20.34,United Kingdom
17850,22632,view,2010-12-01T08:20:00Z,,United Kingdom
13047,22112,cart,1291192440,,France
"""


@pytest.fixture(autouse=True)
def no_vitrine_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests choose every setting; none leaks in from the environment running them."""
    for name in list(os.environ):
        if name.startswith("VITRINE_"):
            monkeypatch.delenv(name)


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "state"


def vitrine(data_dir: Path, *args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(main, ["--data-dir", str(data_dir), *args], env=env)


def create_shop(data_dir: Path, shop: str = "myshop") -> None:
    result = vitrine(data_dir, "shops", "create", shop, "--origin", "https://www.myshop.example")
    assert result.exit_code == 0, result.output


def with_demo_shop(data_dir: Path) -> None:
    write_demo_config(data_dir / "shops" / "demo.toml")


def store_of(data_dir: Path):
    return open_store(f"sqlite:///{data_dir.resolve() / 'vitrine.db'}")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# -- shops ----------------------------------------------------------------------------


def test_shops_create_then_list(data_dir: Path) -> None:
    assert vitrine(data_dir, "shops", "list").output == ""
    result = vitrine(data_dir, "shops", "create", "shop-b", "--origin", "http://x", "--origin", "https://y.example")
    assert result.exit_code == 0, result.output
    config = data_dir / "shops" / "shop-b.toml"
    assert f"Created {config.resolve()}" in result.output
    create_shop(data_dir, "shop-a")

    listed = vitrine(data_dir, "shops", "list")
    assert listed.exit_code == 0
    assert listed.output.splitlines() == ["shop-a", "shop-b"]

    # The file written is a shop config the server accepts, with the origins given.
    from server.shops import parse_shop_config

    parsed = parse_shop_config("shop-b", config)
    assert parsed.origins == ["http://x", "https://y.example"]
    assert parsed.campaigns == []


def test_shops_create_refuses_a_bad_id_or_an_existing_shop(data_dir: Path) -> None:
    bad = vitrine(data_dir, "shops", "create", "My Shop", "--origin", "http://x")
    assert bad.exit_code == 2
    assert "bad shop id 'My Shop'" in bad.stderr
    create_shop(data_dir, "myshop")
    config = data_dir / "shops" / "myshop.toml"
    before = config.read_text()
    again = vitrine(data_dir, "shops", "create", "myshop", "--origin", "http://other")
    assert again.exit_code == 2
    assert "already exists" in again.stderr
    assert config.read_text() == before


def test_shops_create_writes_a_config_that_explains_qa_and_is_not_open(data_dir: Path) -> None:
    from server.shops import parse_shop_config

    create_shop(data_dir, "myshop")
    config = data_dir / "shops" / "myshop.toml"
    text = config.read_text()
    assert "[qa]" in text and "vitrine shops qa-key myshop" in text and "vitrine shops check myshop" in text
    assert parse_shop_config("myshop", config).qa.open is False


def test_shops_check_says_ok_with_the_number_of_campaigns(data_dir: Path) -> None:
    with_demo_shop(data_dir)
    result = vitrine(data_dir, "shops", "check", "demo")
    assert result.exit_code == 0, result.output
    assert result.output == f"OK {(data_dir / 'shops' / 'demo.toml').resolve()}: 23 campaigns\n"


def test_shops_check_prints_every_problem_with_file_line_and_field(data_dir: Path) -> None:
    with_demo_shop(data_dir)
    path = data_dir / "shops" / "demo.toml"
    text = path.read_text().replace('title = "Welcome back!"', 'title = "Welcome back, {city}"')
    text = text.replace('link = "/demo/category/christmas"', 'link = "javascript:alert(1)"', 1)
    write(path, text)
    lines = text.splitlines()
    title_line = lines.index('title = "Welcome back, {city}"') + 1
    link_line = lines.index('link = "javascript:alert(1)"') + 1
    result = vitrine(data_dir, "shops", "check", "demo")
    assert result.exit_code == 2
    shown = path.resolve()
    assert result.output.splitlines() == [
        f'{shown}:{title_line}: campaigns[3] (id "returning-christmas").title: '
        "unknown placeholder {city}; use {country}, {country_name}, {region}, {visits}, {favourite_category}, {cart_value}, "
        "{first_name} or {occasion}",
        f'{shown}:{link_line}: campaigns[3] (id "returning-christmas").link: '
        "'javascript:alert(1)' is not a web link: use an http(s):// URL or a path starting with a single /",
    ]


def test_shops_check_names_a_file_that_is_not_utf8(data_dir: Path) -> None:
    create_shop(data_dir, "myshop")
    path = data_dir / "shops" / "myshop.toml"
    path.write_bytes(path.read_bytes() + b'currency = "\xa3"\n')
    result = vitrine(data_dir, "shops", "check", "myshop")
    assert result.exit_code == 2
    line = len(path.read_bytes().splitlines())
    assert result.output == (
        f"{path.resolve()}:{line}: not valid UTF-8 (byte 0xa3) at line {line}, column 13; save the file as UTF-8\n"
    )


@pytest.mark.parametrize("command", ["check", "qa-key"])
def test_shops_check_and_qa_key_refuse_an_unknown_shop(data_dir: Path, command: str) -> None:
    result = vitrine(data_dir, "shops", command, "nope")
    assert result.exit_code == 2
    assert "unknown shop 'nope'" in result.stderr and "vitrine shops create nope" in result.stderr
    bad = vitrine(data_dir, "shops", command, "../etc")
    assert bad.exit_code == 2 and "bad shop id" in bad.stderr


def test_shops_qa_key_prints_the_derived_or_the_configured_key(data_dir: Path) -> None:
    from server.qa import derived_qa_key

    create_shop(data_dir, "myshop")
    result = vitrine(data_dir, "shops", "qa-key", "myshop", env={"VITRINE_SECRET_KEYS": "old-key,new-key"})
    assert result.exit_code == 0, result.output
    key, how = result.output.splitlines()
    assert key == derived_qa_key("new-key", "myshop")
    assert "X-Vitrine-QA-Key" in how and "_qa_key=" in how and "open" not in how

    config = data_dir / "shops" / "myshop.toml"
    write(config, config.read_text() + '[qa]\nkey = "my-own-qa-key"\n')
    configured = vitrine(data_dir, "shops", "qa-key", "myshop")
    assert configured.output.splitlines()[0] == "my-own-qa-key"


def test_shops_qa_key_says_when_a_shop_is_open_and_refuses_a_broken_config(data_dir: Path) -> None:
    with_demo_shop(data_dir)
    result = vitrine(data_dir, "shops", "qa-key", "demo")
    assert result.exit_code == 0 and "open for QA" in result.output
    path = data_dir / "shops" / "demo.toml"
    write(path, path.read_text().replace("open = true", "open = \"maybe\""))
    broken = vitrine(data_dir, "shops", "qa-key", "demo")
    assert broken.exit_code == 2 and ": qa.open: " in broken.output


# -- imports --------------------------------------------------------------------------


def test_import_catalog(data_dir: Path, tmp_path: Path) -> None:
    create_shop(data_dir)
    result = vitrine(data_dir, "import", "catalog", str(write(tmp_path / "items.csv", CATALOG)), "--shop", "myshop")
    assert result.exit_code == 0, result.output
    assert "Imported 3 catalog items into shop 'myshop'" in result.output
    store = store_of(data_dir)
    try:
        assert store.count_items("myshop") == 3
        warmer = store.get_item("myshop", "22632")
        assert warmer.title == "Hand Warmer, Red Polka Dot"
        assert (warmer.price, warmer.currency, warmer.in_stock) == (2.10, "GBP", False)
        assert store.get_item("myshop", "71053").category == "Home > Lights"
    finally:
        store.close()


def test_import_catalog_with_a_bad_row_imports_nothing(data_dir: Path, tmp_path: Path) -> None:
    create_shop(data_dir)
    lines = CATALOG.splitlines()
    lines[2] = "22632,Hand Warmer,Gifts,two pounds,GBP,red,true"  # line 3 of the file
    bad = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    result = vitrine(data_dir, "import", "catalog", str(bad), "--shop", "myshop")
    assert result.exit_code == 2
    assert f"{bad}:3: bad price 'two pounds'" in result.stderr
    assert "Nothing was imported." in result.stderr
    assert "Imported" not in result.stdout
    store = store_of(data_dir)
    try:
        assert store.count_items("myshop") == 0  # not even the good line 2
    finally:
        store.close()


def test_import_interactions(data_dir: Path, tmp_path: Path) -> None:
    create_shop(data_dir)
    file = write(tmp_path / "orders.csv", INTERACTIONS)
    first = vitrine(data_dir, "import", "interactions", str(file), "--shop", "myshop")
    assert first.exit_code == 0, first.output
    assert "Imported 3 new interactions into shop 'myshop' (0 already there)" in first.output
    again = vitrine(data_dir, "import", "interactions", str(file), "--shop", "myshop")
    assert again.exit_code == 0, again.output
    assert "Imported 0 new interactions into shop 'myshop' (3 already there)" in again.output
    store = store_of(data_dir)
    try:
        assert store.count_events("myshop") == 3
        assert store.count_events("myshop", type="purchase") == 1
    finally:
        store.close()


def test_import_interactions_with_a_bad_timestamp_imports_nothing(data_dir: Path, tmp_path: Path) -> None:
    create_shop(data_dir)
    lines = INTERACTIONS.splitlines()
    lines[2] = "17850,22632,view,yesterday,,United Kingdom"  # line 3 of the file
    bad = write(tmp_path / "bad.csv", "\n".join(lines) + "\n")
    result = vitrine(data_dir, "import", "interactions", str(bad), "--shop", "myshop")
    assert result.exit_code == 2
    assert f"{bad}:3: bad timestamp 'yesterday'" in result.stderr
    assert "Nothing was imported." in result.stderr
    store = store_of(data_dir)
    try:
        assert store.count_events("myshop") == 0
    finally:
        store.close()


@pytest.mark.parametrize("kind, text", [("catalog", CATALOG), ("interactions", INTERACTIONS)])
def test_import_into_an_unknown_shop_says_how_to_create_it(data_dir: Path, tmp_path: Path, kind: str, text: str) -> None:
    file = write(tmp_path / "data.csv", text)
    result = vitrine(data_dir, "import", kind, str(file), "--shop", "nosuchshop")
    assert result.exit_code == 2
    assert "unknown shop 'nosuchshop'" in result.stderr
    assert "vitrine shops create nosuchshop --origin URL" in result.stderr
    store = store_of(data_dir)
    try:
        assert store.count_items("nosuchshop") == 0 and store.count_events("nosuchshop") == 0
    finally:
        store.close()


# -- get ------------------------------------------------------------------------------


def test_get_health(data_dir: Path) -> None:
    result = vitrine(data_dir, "get", "/v1/health")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"status": "ok", "schema": HEAD}


def test_get_a_banner_as_a_visitor_from_the_uk_or_the_us(data_dir: Path) -> None:
    with_demo_shop(data_dir)
    path = "/v1/fragments/banner?shop=demo&placement=top"
    uk = vitrine(data_dir, "get", path, "-H", f"X-Forwarded-For: {UK_IP}")
    assert uk.exit_code == 0, uk.output
    assert "Free UK delivery" in uk.stdout
    assert 'data-vitrine-campaign="uk-delivery"' in uk.stdout
    us = vitrine(data_dir, "get", path, "-H", f"X-Forwarded-For: {US_IP}")
    assert us.exit_code == 0, us.output
    assert "We deliver to United States" in us.stdout
    assert "Free UK delivery" not in us.stdout


def test_get_include_prints_the_status_line_and_headers(data_dir: Path) -> None:
    with_demo_shop(data_dir)
    result = vitrine(data_dir, "get", "-i", "/v1/fragments/banner?shop=demo&placement=top&country=GB")
    assert result.exit_code == 0, result.output
    head, _, body = result.stdout.partition("\n\n")
    lines = head.splitlines()
    assert lines[0] == "HTTP/1.1 200 OK"
    headers = dict(line.split(": ", 1) for line in lines[1:])
    assert headers["content-type"].startswith("text/html")
    assert "Free UK delivery" in body


def test_get_an_unknown_path_exits_1(data_dir: Path) -> None:
    result = vitrine(data_dir, "get", "/v1/nothing")
    assert result.exit_code == 1
    assert json.loads(result.stdout) == {"error": "no such endpoint"}


def test_get_posts_a_body_with_d(data_dir: Path) -> None:
    with_demo_shop(data_dir)
    body = {
        "shop": "demo",
        "page": {"url": "http://127.0.0.1/demo/", "type": "home"},
        "slots": [{"id": "top", "widget": "banner", "attrs": {"placement": "top"}}],
    }
    result = vitrine(data_dir, "get", "/v1/page?shop=demo", "-d", json.dumps(body), "-H", f"X-Forwarded-For: {UK_IP}")
    assert result.exit_code == 0, result.output
    answer = json.loads(result.stdout)
    assert "Free UK delivery" in answer["fragments"]["top"]["html"]
    assert answer["token"]


def test_get_refuses_a_malformed_header(data_dir: Path) -> None:
    result = vitrine(data_dir, "get", "/v1/health", "-H", "X-Forwarded-For 1.2.3.4")
    assert result.exit_code == 2
    assert "bad header" in result.stderr


# -- settings and migrate -------------------------------------------------------------


def test_settings_lists_every_setting(data_dir: Path) -> None:
    result = vitrine(data_dir, "settings", env={"VITRINE_PORT": "9001", "VITRINE_SECRET_KEYS": "very-secret"})
    assert result.exit_code == 0, result.output
    names = [line.split("=", 1)[0] for line in result.stdout.splitlines() if line.startswith("VITRINE_")]
    assert names == [f"VITRINE_{f.name.upper()}" for f in setting_fields()]
    assert "VITRINE_PORT=9001" in result.stdout.splitlines()
    assert f"VITRINE_DATA_DIR={data_dir}" in result.stdout.splitlines()
    assert "VITRINE_SECRET_KEYS=(set)" in result.stdout.splitlines()
    assert "very-secret" not in result.stdout
    for f in setting_fields():
        assert f.metadata["help"] in result.stdout


def test_migrate_prints_the_version(data_dir: Path) -> None:
    result = vitrine(data_dir, "migrate")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith(f"Schema at version {HEAD} ")
    assert (data_dir / "vitrine.db").is_file()
    assert vitrine(data_dir, "migrate").stdout == result.stdout


@pytest.mark.parametrize("command", [["settings"], ["migrate"], ["get", "/v1/health"]])
def test_a_bad_setting_exits_2_with_one_clear_line(data_dir: Path, command: list[str]) -> None:
    result = vitrine(data_dir, *command, env={"VITRINE_PORT": "abc"})
    assert result.exit_code == 2
    assert result.stderr == "Error: setting port (VITRINE_PORT): bad value 'abc'\n"
    assert result.stdout == ""


def test_a_config_file_with_an_unknown_key_exits_2(data_dir: Path, tmp_path: Path) -> None:
    config = write(tmp_path / "vitrine.toml", "port = 8000\nprot = 8001\n")
    result = CliRunner().invoke(main, ["--config", str(config), "--data-dir", str(data_dir), "settings"])
    assert result.exit_code == 2
    assert "unknown setting(s): prot" in result.stderr
    good = write(tmp_path / "good.toml", "[vitrine]\nport = 8123\n")
    shown = CliRunner().invoke(main, ["--config", str(good), "--data-dir", str(data_dir), "settings"])
    assert "VITRINE_PORT=8123" in shown.stdout.splitlines()


# -- a real `vitrine demo` ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def vitrine_command() -> list[str]:
    script = Path(sys.executable).parent / "vitrine"
    return [str(script)] if script.exists() else [sys.executable, "-m", "server.cli"]


def run_demo(data_dir: Path, log: Path) -> str:
    """Starts `vitrine demo`, waits until /demo/ answers 200, stops it; returns its output."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITRINE_")}
    env["VITRINE_TRAIN_TIME_BUDGET_S"] = "5"  # the demo trains once; keep its tuning short here
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*vitrine_command(), "--data-dir", str(data_dir), "demo", "--port", str(port)],
            stdout=out, stderr=subprocess.STDOUT, cwd=data_dir.parent, env=env,
        )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"vitrine demo exited early:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"/demo/ did not answer in time:\n{log.read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/demo/", timeout=2) as response:
                    assert response.status == 200
                    assert "<html" in response.read().decode().lower()
                    break
            except (urllib.error.URLError, ConnectionError):
                time.sleep(0.1)
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/v1/health", timeout=5) as response:
            assert json.loads(response.read())["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return log.read_text()


def test_demo_imports_once_then_reuses_the_data(tmp_path: Path) -> None:
    data_dir = tmp_path / "demo-state"
    first = run_demo(data_dir, tmp_path / "first.log")
    assert f"Wrote the demo shop's config to {data_dir.resolve() / 'shops' / 'demo.toml'}" in first
    assert "Imported 3168 catalog items into shop 'demo'" in first
    assert "Imported 29177 new interactions into shop 'demo'" in first
    store = store_of(data_dir)
    try:
        items, events = store.count_items("demo"), store.count_events("demo")
    finally:
        store.close()
    assert items == 3168
    simulated = re.search(r"Simulated 30 days of traffic for the dashboard: 4,500 visitors, ([\d,]+) events", first)
    assert simulated, first
    assert "Imported the demo trade customer's orders" in first
    assert "Imported the price list of shop 'demo': 14 price tiers and 2 items not allowed" in first
    # The simulated month, labelled as such, and the trade customer's 3 orders (docs/b2b.md).
    assert events == 29177 + 3 + int(simulated.group(1).replace(",", ""))
    assert "Training the demo shop's recommendation model (once)..." in first
    versions = [p.name for p in (data_dir / "models" / "demo").iterdir() if not p.name.startswith((".", "C", "P"))]
    assert len(versions) == 1

    second = run_demo(data_dir, tmp_path / "second.log")
    assert f"Demo shop already imported in {data_dir.resolve()} (reusing it)." in second
    assert "Imported" not in second and "Wrote the demo shop's config" not in second
    assert "Training" not in second  # the model trained on the first start is reused
    store = store_of(data_dir)
    try:
        assert (store.count_items("demo"), store.count_events("demo")) == (items, events)
    finally:
        store.close()
